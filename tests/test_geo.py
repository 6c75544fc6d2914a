"""Tests for qrtrack.geo: client address, anonymisation, and country/city lookup."""

import ipaddress
import random
import subprocess
import sys
from pathlib import Path

import pytest
from mmdb_writer import MmdbU32, MMDBWriter
from netaddr import IPSet

from qrtrack.geo import IPV4_NOT_ROUTABLE, ClientAddress, GeoLocator, Location, anonymise_ip, client_ip, parse_address

REPO_ROOT = Path(__file__).resolve().parent.parent

LONDON = {
    "country": {
        "iso_code": "GB",
        "geoname_id": MmdbU32(2635167),
        "names": {"en": "United Kingdom"},
    },
    "city": {"geoname_id": MmdbU32(2643743), "names": {"en": "London"}},
}
BERLIN_FLAT = {"country_code": "DE", "city": "Berlin"}
PARIS_FLAT = {"country_code": "FR", "city": "Paris"}
MANCHESTER_FLAT = {"country_code": "GB", "city": "Manchester"}


@pytest.fixture
def gen_mmdb(tmp_path):
    """Build a small .mmdb file from {network: record} and return its path."""

    def build(
        name,
        networks,
        *,
        ip_version=6,
        database_type="GeoLite2-City",
        description="test data",
    ):
        writer = MMDBWriter(
            ip_version=ip_version,
            ipv4_compatible=ip_version == 6,
            database_type=database_type,
            languages=["en"],
            description={"en": description},
        )
        for network, record in networks.items():
            writer.insert_network(IPSet([network]), record)
        path = tmp_path / name
        writer.to_db_file(str(path))
        return str(path)

    return build


# client_ip


def client_address(environ, *, trust_proxy):
    """The client's address as canonical text, or None: what these tests read of client_ip."""
    address = client_ip(environ, trust_proxy=trust_proxy)
    return None if address is None else address.text


def test_client_ip_without_trusted_proxy_ignores_forwarded_for():
    environ = {"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "8.8.8.8"}

    assert client_address(environ, trust_proxy=0) == "198.51.100.7"


def test_client_ip_with_one_trusted_proxy_is_the_last_forwarded_entry():
    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}

    assert client_address(environ, trust_proxy=1) == "203.0.113.9"


def test_client_ip_with_two_trusted_proxies_is_the_second_entry_from_the_right():
    environ = {
        "REMOTE_ADDR": "10.0.0.2",
        "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.1",
    }

    assert client_address(environ, trust_proxy=2) == "203.0.113.9"


@pytest.mark.parametrize(("trust_proxy", "expected"), [(1, "203.0.113.9"), (2, "198.51.100.3")])
def test_client_ip_ignores_entries_a_client_spoofed_on_the_left(trust_proxy, expected):
    forwarded = "1.2.3.4, 5.6.7.8, 198.51.100.3, 203.0.113.9"
    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": forwarded}

    assert client_address(environ, trust_proxy=trust_proxy) == expected


def test_client_ip_falls_back_to_remote_addr_when_forwarded_for_is_too_short():
    environ = {"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}

    assert client_address(environ, trust_proxy=2) == "198.51.100.7"


def test_client_ip_falls_back_to_remote_addr_without_forwarded_for():
    assert client_address({"REMOTE_ADDR": "198.51.100.7"}, trust_proxy=1) == "198.51.100.7"


def test_client_ip_strips_spaces_and_canonicalises():
    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "  2001:DB8:0:0::1 "}

    assert client_address(environ, trust_proxy=1) == "2001:db8::1"


@pytest.mark.parametrize("entry", ["unknown", "", "203.0.113.9:443", "300.1.1.1", "_hidden"])
def test_client_ip_is_none_for_an_invalid_entry(entry):
    environ = {
        "REMOTE_ADDR": "10.0.0.1",
        "HTTP_X_FORWARDED_FOR": f"198.51.100.3, {entry}",
    }

    assert client_address(environ, trust_proxy=1) is None


def test_client_ip_is_none_without_remote_addr():
    assert client_address({}, trust_proxy=0) is None


def test_client_ip_rejects_negative_trust_proxy():
    with pytest.raises(ValueError, match="trust_proxy"):
        client_address({"REMOTE_ADDR": "198.51.100.7"}, trust_proxy=-1)


# anonymise_ip


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("8.8.8.8", "8.8.8.0"),
        ("2001:db8:abcd:1234:5678::1", "2001:db8:abcd::"),
        ("2001:4860:4860::8888", "2001:4860:4860::"),
        ("::ffff:203.0.113.77", "203.0.113.0"),
        ("fe80::1%eth0", "fe80::"),
    ],
)
def test_anonymise_ip_zeroes_the_host_part(address, expected):
    assert anonymise_ip(address) == expected
    assert anonymise_ip(parse_address(address)) == expected


def test_client_ip_is_the_parsed_client_address_with_mapped_ipv4_unwrapped():
    environ = {"REMOTE_ADDR": "::ffff:8.8.4.4"}
    assert client_ip(environ, trust_proxy=0) == ClientAddress("8.8.4.4", is_routable=True, anonymised="8.8.4.0")
    assert client_address(environ, trust_proxy=0) == "8.8.4.4"
    assert client_ip({"REMOTE_ADDR": "nonsense"}, trust_proxy=0) is None


def test_locate_takes_a_parsed_address_as_well_as_text():
    assert GeoLocator().locate(parse_address("8.8.8.8"), {}) == Location("US", None)


# parse_address: IPv4 by hand, held to the standard library's ipaddress


IANA_192_0_0 = ipaddress.IPv4Network("192.0.0.0/24")


def _expected_by_ipaddress(text):
    """What parse_address should give for text, worked out with ipaddress."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    network = ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 48}", strict=False)
    is_routable = ip.is_global and not ip.is_multicast
    if ip in IANA_192_0_0:  # see test_ipv4_routability_in_192_0_0_0_follows_iana_where_python_versions_differ
        is_routable = str(ip) in ("192.0.0.9", "192.0.0.10")
    return ClientAddress(str(ip), is_routable, str(network.network_address))


def _ipv4_lookalikes(count):
    """Dotted quads, most with one octet or edge swapped for something close: leading zeros, signs, spaces,
    non-ASCII digits, too many or too few octets."""
    generator = random.Random(20261129)
    odd_octets = ["00", "01", "010", "256", "299", "999", "1000", "0x1", "+1", "-1", " 1", "1 ", "", "\u0661", "\u00b2",
                  "1_0", "a", "1.1"]
    odd_edges = [" ", "\t", ".", "/24", ":80", "%eth0"]
    texts = []
    for _ in range(count):
        octets = [str(generator.choice([0, 1, 9, 10, 99, 100, 127, 192, 255, generator.randrange(256)]))
                  for _ in range(4)]
        change = generator.randrange(4)
        if change == 1:
            octets[generator.randrange(4)] = generator.choice(odd_octets)
        elif change == 2:
            del octets[generator.randrange(4)]
        text = ".".join(octets)
        if change == 3:
            text = generator.choice(["", *odd_edges]) + text + generator.choice(["", *odd_edges])
        texts.append(text)
    return texts


def test_parse_address_agrees_with_ipaddress():
    texts = ["0.0.0.0", "255.255.255.255", " 8.8.8.8 ", "1.2.3.04", "1.2.3", "1.2.3.4.5", "1..2.3", "256.1.1.1",
             "8.8.8.8/32", "", "::", "::1", "2001:DB8::1", "fe80::1%eth0", "::ffff:10.1.2.3", "::ffff:0a01:0203",
             "1:2:3:4:5:6:7:8:9", "2001:db8::g", *_ipv4_lookalikes(4000)]
    assert 1000 < sum(_expected_by_ipaddress(text) is not None for text in texts) < 3000  # both kinds tried
    assert [(text, parse_address(text)) for text in texts if parse_address(text) != _expected_by_ipaddress(text)] == []


def _ipv4_near_every_special_network():
    """The first and last address of each listed network and their neighbours, and a sample of all others."""
    addresses = set()
    for cidr in IPV4_NOT_ROUTABLE:
        network = ipaddress.IPv4Network(cidr)
        first, last = int(network.network_address), int(network.broadcast_address)
        addresses.update(value for value in (first - 1, first, last, last + 1) if 0 <= value < 2**32)
    generator = random.Random(29)
    addresses.update(generator.randrange(2**32) for _ in range(3000))
    return [str(ipaddress.IPv4Address(value)) for value in sorted(addresses)]


def test_ipv4_routability_agrees_with_ipaddress():
    texts = _ipv4_near_every_special_network()
    disagreeing = [text for text in texts if parse_address(text).is_routable
                   is not _expected_by_ipaddress(text).is_routable]
    assert disagreeing == []


@pytest.mark.parametrize(("text", "is_routable"), [
    ("192.0.0.0", False), ("192.0.0.8", False), ("192.0.0.9", True), ("192.0.0.10", True), ("192.0.0.11", False),
    ("192.0.0.170", False), ("192.0.0.171", False), ("192.0.0.255", False)])
def test_ipv4_routability_in_192_0_0_0_follows_iana_where_python_versions_differ(text, is_routable):
    """Python releases before the fix of gh-113171 call most of 192.0.0.0/24 global; IANA's registry does not."""
    assert parse_address(text).is_routable is is_routable


@pytest.mark.parametrize("address", [None, "", "not-an-ip", "203.0.113.256", "203.0.113.0/24"])
def test_anonymise_ip_of_an_invalid_address_is_none(address):
    assert anonymise_ip(address) is None


# GeoLocator construction


def test_unknown_cdn_is_rejected_by_name():
    with pytest.raises(ValueError, match="'akamai'"):
        GeoLocator(trust_cdn="akamai")


def test_missing_mmdb_file_is_rejected_at_construction(tmp_path):
    missing = str(tmp_path / "nope.mmdb")

    with pytest.raises(ValueError, match="nope.mmdb"):
        GeoLocator(mmdb_paths=[missing])


def test_directory_instead_of_mmdb_file_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path.name)):
        GeoLocator(mmdb_paths=[str(tmp_path)])


def test_corrupt_mmdb_file_is_reported_by_path_when_first_used(tmp_path):
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"this is not a MaxMind database")
    locator = GeoLocator(mmdb_paths=[str(corrupt)])

    with pytest.raises(ValueError, match="corrupt.mmdb"):
        locator.locate("8.8.8.8", {})


# CDN headers


def test_trusted_cloudflare_headers_give_country_and_city():
    environ = {"HTTP_CF_IPCOUNTRY": "nz", "HTTP_CF_IPCITY": "Auckland"}

    locate = GeoLocator(trust_cdn="cloudflare").locate

    assert locate("8.8.8.8", environ) == Location("NZ", "Auckland")


def test_cloudflare_utf8_city_is_decoded_from_the_wsgi_latin1_string():
    environ = {
        "HTTP_CF_IPCOUNTRY": "CH",
        "HTTP_CF_IPCITY": "Zürich".encode().decode("latin-1"),
    }

    locate = GeoLocator(trust_cdn="cloudflare").locate

    assert locate(None, environ) == Location("CH", "Zürich")


@pytest.mark.parametrize("country", ["XX", "T1"])
def test_cloudflare_unknown_and_tor_countries_are_ignored(country):
    environ = {"HTTP_CF_IPCOUNTRY": country}

    locate = GeoLocator(trust_cdn="cloudflare").locate

    assert locate("10.0.0.1", environ) == Location(None, None)


def test_ignored_cloudflare_country_falls_through_to_iptocc():
    environ = {"HTTP_CF_IPCOUNTRY": "T1"}

    assert GeoLocator(trust_cdn="cloudflare").locate("8.8.8.8", environ).country == "US"


def test_cdn_headers_are_ignored_when_no_cdn_is_trusted():
    environ = {
        "HTTP_CF_IPCOUNTRY": "NZ",
        "HTTP_CF_IPCITY": "Auckland",
        "HTTP_X_VERCEL_IP_COUNTRY": "NZ",
    }

    assert GeoLocator().locate("8.8.8.8", environ) == Location("US", None)


def test_headers_of_another_cdn_than_the_trusted_one_are_ignored():
    environ = {"HTTP_X_VERCEL_IP_COUNTRY": "NZ", "HTTP_X_VERCEL_IP_CITY": "Auckland"}

    locate = GeoLocator(trust_cdn="cloudflare").locate

    assert locate("10.0.0.1", environ) == Location(None, None)


def test_vercel_city_is_url_decoded():
    environ = {
        "HTTP_X_VERCEL_IP_COUNTRY": "BR",
        "HTTP_X_VERCEL_IP_CITY": "S%C3%A3o%20Paulo",
    }

    locate = GeoLocator(trust_cdn="vercel").locate

    assert locate("8.8.8.8", environ) == Location("BR", "São Paulo")


def test_cloudfront_city_is_url_decoded():
    environ = {
        "HTTP_CLOUDFRONT_VIEWER_COUNTRY": "DE",
        "HTTP_CLOUDFRONT_VIEWER_CITY": "M%C3%BCnchen",
    }

    locate = GeoLocator(trust_cdn="cloudfront").locate

    assert locate("8.8.8.8", environ) == Location("DE", "München")


def test_cdn_headers_apply_to_a_private_address():
    environ = {"HTTP_CF_IPCOUNTRY": "NZ", "HTTP_CF_IPCITY": "Auckland"}

    locate = GeoLocator(trust_cdn="cloudflare").locate

    assert locate("10.1.2.3", environ) == Location("NZ", "Auckland")


@pytest.mark.parametrize("country", ["GBR", "G", "1A", "ÜK", ""])
def test_cdn_country_that_is_not_two_letters_is_ignored(country):
    environ = {"HTTP_CF_IPCOUNTRY": country, "HTTP_CF_IPCITY": "Somewhere"}

    locate = GeoLocator(trust_cdn="cloudflare").locate

    assert locate(None, environ) == Location(None, "Somewhere")


def test_long_city_is_truncated_to_100_characters():
    environ = {"HTTP_CF_IPCOUNTRY": "GB", "HTTP_CF_IPCITY": "Llanfair" * 20}

    city = GeoLocator(trust_cdn="cloudflare").locate(None, environ).city

    assert city == ("Llanfair" * 20)[:100]


def test_cdn_city_is_kept_when_a_later_source_gives_the_country():
    environ = {"HTTP_CF_IPCOUNTRY": "XX", "HTTP_CF_IPCITY": "Mountain View"}

    locate = GeoLocator(trust_cdn="cloudflare").locate

    assert locate("8.8.8.8", environ) == Location("US", "Mountain View")


# .mmdb files


def test_nested_geolite2_layout_gives_country_and_city(gen_mmdb):
    path = gen_mmdb("city.mmdb", {"81.2.69.0/24": LONDON})

    locate = GeoLocator(mmdb_paths=[path]).locate

    assert locate("81.2.69.142", {}) == Location("GB", "London")


def test_nested_layout_falls_back_to_registered_country(gen_mmdb):
    record = {"registered_country": {"iso_code": "SE", "names": {"en": "Sweden"}}}
    path = gen_mmdb("country.mmdb", {"81.2.69.0/24": record}, database_type="GeoLite2-Country")

    locate = GeoLocator(mmdb_paths=[path]).locate

    assert locate("81.2.69.142", {}) == Location("SE", None)


def test_flat_ip_location_db_layout_gives_country_and_city(gen_mmdb):
    path = gen_mmdb("dbip-city.mmdb", {"2a00:1450::/32": BERLIN_FLAT}, database_type="city")

    locate = GeoLocator(mmdb_paths=[path]).locate

    assert locate("2a00:1450::1", {}) == Location("DE", "Berlin")


def test_ipv4_only_file_is_skipped_for_ipv6_lookups(gen_mmdb):
    ipv4_only = gen_mmdb(
        "dbip-city-ipv4.mmdb",
        {"81.2.69.0/24": BERLIN_FLAT},
        ip_version=4,
        database_type="city ipv4",
    )
    ipv6 = gen_mmdb("dbip-city-ipv6.mmdb", {"2a00:1450::/32": PARIS_FLAT}, database_type="city ipv6")
    locator = GeoLocator(mmdb_paths=[ipv4_only, ipv6])

    assert locator.locate("2a00:1450::1", {}) == Location("FR", "Paris")
    assert locator.locate("81.2.69.1", {}) == Location("DE", "Berlin")


def test_ipv4_only_file_alone_leaves_ipv6_to_iptocc(gen_mmdb):
    ipv4_only = gen_mmdb(
        "v4.mmdb",
        {"81.2.69.0/24": BERLIN_FLAT},
        ip_version=4,
        database_type="city ipv4",
    )

    locate = GeoLocator(mmdb_paths=[ipv4_only]).locate

    assert locate("2001:4860:4860::8888", {}) == Location("US", None)


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(gen_mmdb):
    ipv4_only = gen_mmdb(
        "v4.mmdb",
        {"81.2.69.0/24": BERLIN_FLAT},
        ip_version=4,
        database_type="city ipv4",
    )

    locate = GeoLocator(mmdb_paths=[ipv4_only]).locate

    assert locate("::ffff:81.2.69.1", {}) == Location("DE", "Berlin")


def test_later_file_fills_the_city_when_its_country_agrees(gen_mmdb):
    country_only = gen_mmdb(
        "country.mmdb",
        {"81.2.69.0/24": {"country_code": "GB"}},
        database_type="country",
    )
    cities = gen_mmdb("city.mmdb", {"81.2.69.0/24": MANCHESTER_FLAT}, database_type="city")

    locate = GeoLocator(mmdb_paths=[country_only, cities]).locate

    assert locate("81.2.69.1", {}) == Location("GB", "Manchester")


def test_later_file_city_is_ignored_when_its_country_disagrees(gen_mmdb):
    country_only = gen_mmdb(
        "country.mmdb",
        {"81.2.69.0/24": {"country_code": "GB"}},
        database_type="country",
    )
    cities = gen_mmdb("city.mmdb", {"81.2.69.0/24": PARIS_FLAT}, database_type="city")

    locate = GeoLocator(mmdb_paths=[country_only, cities]).locate

    assert locate("81.2.69.1", {}) == Location("GB", None)


def test_first_file_wins_over_later_files(gen_mmdb):
    first = gen_mmdb("first.mmdb", {"81.2.69.0/24": LONDON})
    second = gen_mmdb("second.mmdb", {"81.2.69.0/24": PARIS_FLAT}, database_type="city")

    locate = GeoLocator(mmdb_paths=[first, second]).locate

    assert locate("81.2.69.1", {}) == Location("GB", "London")


def test_trusted_cdn_country_wins_and_mmdb_fills_the_city_only_if_it_agrees(gen_mmdb):
    path = gen_mmdb("city.mmdb", {"81.2.69.0/24": LONDON})
    locator = GeoLocator(mmdb_paths=[path], trust_cdn="cloudflare")

    in_gb, in_ie = {"HTTP_CF_IPCOUNTRY": "GB"}, {"HTTP_CF_IPCOUNTRY": "IE"}

    assert locator.locate("81.2.69.1", in_gb) == Location("GB", "London")
    assert locator.locate("81.2.69.1", in_ie) == Location("IE", None)


def test_address_missing_from_the_mmdb_falls_back_to_iptocc(gen_mmdb):
    path = gen_mmdb("city.mmdb", {"81.2.69.0/24": LONDON})

    assert GeoLocator(mmdb_paths=[path]).locate("8.8.8.8", {}) == Location("US", None)


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "192.168.0.10",
        "127.0.0.1",
        "::1",
        "169.254.1.1",
        "fe80::1",
        "100.64.0.1",
        "240.0.0.1",
        "0.0.0.0",
        "fd00::1",
        "224.0.0.1",
        "::ffff:10.1.2.3",
        "not-an-ip",
        "",
        None,
    ],
)
def test_non_public_or_invalid_address_is_not_looked_up(gen_mmdb, address):
    # The file claims these ranges, so a lookup would show up as a country.
    non_public = [
        "10.0.0.0/8",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "240.0.0.0/4",
        "0.0.0.0/8",
        "224.0.0.0/4",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
    ]
    path = gen_mmdb("non-public.mmdb", dict.fromkeys(non_public, PARIS_FLAT), database_type="city")

    assert GeoLocator(mmdb_paths=[path]).locate(address, {}) == Location(None, None)


# iptocc fallback


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_iptocc_gives_the_country_of_a_well_known_public_address(address):
    assert GeoLocator().locate(address, {}) == Location("US", None)


# DB-IP attribution


@pytest.mark.parametrize(
    ("name", "database_type", "description"),
    [
        ("city.mmdb", "DBIP-City-Lite", "test"),
        ("city.mmdb", "city ipv4", "IP to City Lite by DB-IP.com"),
        ("dbip-city-ipv4.mmdb", "city ipv4", "test"),
    ],
    ids=["type", "description", "file-name"],
)
def test_dbip_data_is_detected(gen_mmdb, name, database_type, description):
    path = gen_mmdb(
        name,
        {"81.2.69.0/24": BERLIN_FLAT},
        database_type=database_type,
        description=description,
    )

    assert GeoLocator(mmdb_paths=[path]).is_dbip is True


def test_geolite2_data_is_not_dbip(gen_mmdb):
    path = gen_mmdb(
        "GeoLite2-City.mmdb",
        {"81.2.69.0/24": LONDON},
        description="GeoLite2 City database",
    )

    assert GeoLocator(mmdb_paths=[path]).is_dbip is False


def test_without_mmdb_files_there_is_no_dbip_data():
    assert GeoLocator().is_dbip is False


def test_one_dbip_file_among_others_is_detected(gen_mmdb):
    geolite = gen_mmdb("GeoLite2-City.mmdb", {"81.2.69.0/24": LONDON})
    dbip = gen_mmdb("extra.mmdb", {"81.2.69.0/24": BERLIN_FLAT}, database_type="DBIP-City-Lite")

    assert GeoLocator(mmdb_paths=[geolite, dbip]).is_dbip is True


# Laziness


def test_importing_and_constructing_do_not_load_readers_and_warm_up_does(gen_mmdb):
    path = gen_mmdb("city.mmdb", {"81.2.69.0/24": LONDON})
    code = (
        "import sys\n"
        "from qrtrack.geo import GeoLocator\n"
        f"locator = GeoLocator(mmdb_paths=[{path!r}])\n"
        "assert 'iptocc' not in sys.modules and 'maxminddb' not in sys.modules\n"
        "locator.warm_up()\n"
        "assert 'iptocc' in sys.modules and 'maxminddb' in sys.modules\n"
        "assert locator.locate('81.2.69.1', {}).city == 'London'\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=REPO_ROOT, check=True)
