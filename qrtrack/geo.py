"""Find a scan's client address, anonymise it, and place it in a country and city.

Pure: no Flask, no database. Works on a WSGI environ and plain strings.

IPv4 text is read here, by the rules of the standard library's ipaddress; anything else goes to
ipaddress itself, imported on first use. Importing it costs a CGI scan about 3 ms (a tenth of the
scan) and parsing it a server's scan several microseconds, for the most common kind of address.
"""

from __future__ import annotations

import _thread  # its lock without threading, which would make a CGI scan 1.30× as long (bench devices)
import os

from .records import record

TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from maxminddb.reader import Reader

MAX_CITY_LENGTH = 100

_IPV6_NETWORK_48 = ((1 << 48) - 1) << 80

IPV4_NOT_ROUTABLE = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                     "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
                     "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4")
"""IPv4 networks that are not globally reachable in IANA's special-purpose address registry, and multicast: what
ipaddress's `not is_global or is_multicast` says in Python releases with the fix of gh-113171 (CVE-2024-4032; older
ones call most of 192.0.0.0/24 global). tests/test_geo.py holds the two equal."""
IPV4_ROUTABLE_EXCEPTIONS = ("192.0.0.9", "192.0.0.10")
"""Inside those networks, the addresses IANA lists as globally reachable (anycast for PCP and TURN)."""

# Per CDN: (country header, city header, is the city percent-encoded).
# CloudFront and Vercel percent-encode non-ASCII; Cloudflare sends raw UTF-8.
_CDN_HEADERS = {
    "cloudflare": ("HTTP_CF_IPCOUNTRY", "HTTP_CF_IPCITY", False),
    "cloudfront": ("HTTP_CLOUDFRONT_VIEWER_COUNTRY", "HTTP_CLOUDFRONT_VIEWER_CITY", True),
    "vercel": ("HTTP_X_VERCEL_IP_COUNTRY", "HTTP_X_VERCEL_IP_CITY", True),
}
# Cloudflare: XX = unknown, T1 = Tor exit node. Neither is a country.
_NOT_COUNTRIES = frozenset({"XX", "T1"})


class Location(record("Location", "country city")):
    """A client's ISO-3166 alpha-2 country (upper-case) and city, each str or None for unknown."""

    __slots__ = ()


class ClientAddress(record("ClientAddress", "text is_routable anonymised")):
    """A valid client address, parsed once for all a scan needs of it.

    text is canonical (an IPv4-mapped IPv6 address is the IPv4 address it carries); is_routable is True
    for globally reachable unicast, the only addresses worth looking up; anonymised is what anonymise_ip gives.
    """

    __slots__ = ()


_NOWHERE = Location(None, None)


def client_ip(environ: Mapping[str, str], *, trust_proxy: int) -> ClientAddress | None:
    """Return the client's IP address, or None if it is not valid.

    trust_proxy is the number of proxies in front of the app that append to
    X-Forwarded-For. With 0 the header is ignored and REMOTE_ADDR is used; with
    N the Nth entry from the right is used, as werkzeug's ProxyFix does, so
    entries a client adds on the left cannot spoof its address. If the header
    has fewer than N entries, REMOTE_ADDR is used.
    """
    if trust_proxy < 0:
        raise ValueError(f"trust_proxy must be 0 or more, not {trust_proxy}")
    candidate = environ.get("REMOTE_ADDR")
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
    if trust_proxy and forwarded:
        hops = forwarded.split(",")
        if len(hops) >= trust_proxy:
            candidate = hops[-trust_proxy]
    return parse_address(candidate)


def anonymise_ip(address: str | ClientAddress | None) -> str | None:
    """Return the address with its host part zeroed: IPv4 keeps /24, IPv6 keeps /48.

    An IPv4-mapped IPv6 address is treated as the IPv4 address it carries.
    Anything that is not a valid address gives None.
    """
    parsed = parse_address(address)
    return parsed.anonymised if parsed is not None else None


def parse_address(address: str | ClientAddress | None) -> ClientAddress | None:
    """Parse address text (surrounding spaces ignored); None when missing or not a valid IPv4 or IPv6 address.

    A scan parses its client's address once (client_ip) and hands the result on: parsing is a good part of a scan.
    """
    if isinstance(address, ClientAddress):
        return address
    if not address:
        return None
    text = address.strip()
    value = _ipv4_value(text)
    if value is not None:
        return _ipv4_address(text, value)
    return _parse_ipv6(text) if ":" in text else None


class GeoLocator:
    """Place addresses by trusted CDN headers, then the site's .mmdb files, then iptocc.

    Sources are asked in that order. The first country found wins; a later
    source only fills the city, and only when it agrees on the country (or no
    country was found yet), so a city never lands in the wrong country.
    Addresses that are not globally routable unicast (private, loopback,
    link-local, reserved, CGNAT, documentation, multicast) are never looked up;
    CDN headers still apply to them.
    """

    def __init__(self, *, mmdb_paths: Sequence[str] = (), trust_cdn: str | None = None):
        if trust_cdn is not None and trust_cdn not in _CDN_HEADERS:
            choices = ", ".join(sorted(_CDN_HEADERS))
            raise ValueError(f"unknown CDN {trust_cdn!r}: expected one of {choices}, or none")
        for path in mmdb_paths:
            if not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ValueError(f"GeoIP database {path!r} is not a readable file")
        self._mmdb_paths = tuple(mmdb_paths)
        self._trust_cdn = trust_cdn
        self._readers: tuple[Reader, ...] | None = None
        self._open_lock = _thread.allocate_lock()

    @property
    def is_dbip(self) -> bool:
        """True if a loaded .mmdb holds DB-IP data; its licence needs a credit link."""
        return any(_is_dbip(path, reader) for path, reader in zip(self._mmdb_paths, self._open_readers(), strict=True))

    def warm_up(self) -> None:
        """Open the .mmdb files and import iptocc and ipaddress now rather than on the first scans."""
        self._open_readers()
        _from_iptocc("192.0.2.1")
        parse_address("2001:db8::1")

    def locate(self, address: str | ClientAddress | None, environ: Mapping[str, str]) -> Location:
        """Return the best Location for a client address (text or parsed) and its WSGI environ."""
        found = self._from_cdn(environ)
        parsed = parse_address(address)
        if parsed is None or not parsed.is_routable:
            return found
        for reader in self._open_readers():
            if found.country and found.city:
                break
            found = _merge(found, _from_mmdb(reader, parsed.text))
        if found.country is None:
            found = _merge(found, _from_iptocc(parsed.text))
        return found

    def _from_cdn(self, environ: Mapping[str, str]) -> Location:
        if self._trust_cdn is None:
            return _NOWHERE
        country_key, city_key, is_percent_encoded = _CDN_HEADERS[self._trust_cdn]
        city = _from_wsgi_text(environ.get(city_key, ""))
        if is_percent_encoded:
            from urllib.parse import unquote  # here: only CDN headers need it

            city = unquote(city)
        return Location(_clean_country(environ.get(country_key)), _clean_city(city))

    def _open_readers(self) -> tuple[Reader, ...]:
        if self._readers is None:
            with self._open_lock:
                if self._readers is None:
                    self._readers = tuple(_open_mmdb(path) for path in self._mmdb_paths)
        return self._readers


def _ipv4_value(text: str) -> int | None:
    """The 32-bit value of dotted-quad text, or None; ipaddress's rules: four decimal octets, no leading zeros."""
    octets = text.split(".")
    if len(octets) != 4 or not text.isascii():
        return None
    value = 0
    for octet in octets:
        if not octet.isdigit() or len(octet) > 3 or (octet[0] == "0" and len(octet) > 1):
            return None
        number = int(octet)
        if number > 255:
            return None
        value = value << 8 | number
    return value


def _ipv4_networks_by_first_octet(cidrs: Sequence[str]) -> dict[int, list[tuple[int, int]]]:
    """{first octet: [(network value, mask)]} for a.b.c.d/n, so an address is checked against few networks."""
    by_first_octet: dict[int, list[tuple[int, int]]] = {}
    for cidr in cidrs:
        address, _, prefix_length = cidr.partition("/")
        network, mask = _ipv4_value(address), (0xFFFFFFFF << (32 - int(prefix_length))) & 0xFFFFFFFF
        for first_octet in range(network >> 24, ((network | ~mask & 0xFFFFFFFF) >> 24) + 1):
            by_first_octet.setdefault(first_octet, []).append((network, mask))
    return by_first_octet


_IPV4_NOT_ROUTABLE_BY_FIRST_OCTET = _ipv4_networks_by_first_octet(IPV4_NOT_ROUTABLE)
_IPV4_ROUTABLE_EXCEPTION_VALUES = frozenset(_ipv4_value(address) for address in IPV4_ROUTABLE_EXCEPTIONS)


def _ipv4_address(text: str, value: int) -> ClientAddress:
    networks = _IPV4_NOT_ROUTABLE_BY_FIRST_OCTET.get(value >> 24, ())
    is_routable = not any(value & mask == network for network, mask in networks) or (
        value in _IPV4_ROUTABLE_EXCEPTION_VALUES)
    return ClientAddress(text, is_routable, text[:text.rindex(".")] + ".0")


def _parse_ipv6(text: str) -> ClientAddress | None:
    import ipaddress  # here: see the module's docstring

    try:
        ip = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    if ip.ipv4_mapped is not None:
        mapped = str(ip.ipv4_mapped)
        return _ipv4_address(mapped, _ipv4_value(mapped))
    anonymised = str(ipaddress.IPv6Address(int(ip) & _IPV6_NETWORK_48))
    return ClientAddress(str(ip), ip.is_global and not ip.is_multicast, anonymised)


def _open_mmdb(path: str) -> Reader:
    import maxminddb  # lazy: only sites that configure .mmdb files need it

    try:
        return maxminddb.open_database(path, maxminddb.MODE_AUTO)
    except (OSError, maxminddb.InvalidDatabaseError) as error:
        message = f"GeoIP database {path!r} cannot be opened: {error}"
        raise ValueError(message) from error


def _from_mmdb(reader: Reader, address: str) -> Location:
    """Read one record: nested GeoLite2/DB-IP layout, or flat ip-location-db layout."""
    try:
        record = reader.get(address)
    except ValueError:  # an IPv4-only file asked about an IPv6 address
        return _NOWHERE
    if not isinstance(record, dict):
        return _NOWHERE
    if "country_code" in record:
        country, city = record["country_code"], record.get("city")
    else:
        country = _get_nested(record, "country", "iso_code")
        country = country or _get_nested(record, "registered_country", "iso_code")
        city = _get_nested(record, "city", "names", "en")
    return Location(_clean_country(country), _clean_city(city))


def _from_iptocc(address: str) -> Location:
    import iptocc  # lazy: keeps CGI start-up cheap when the scan path does not need it

    return Location(_clean_country(iptocc.country_code(address)), None)


def _merge(found: Location, extra: Location) -> Location:
    """Fill what is missing from a later source; see GeoLocator for the rule."""
    if found.country is None:
        return Location(extra.country, found.city or extra.city)
    if found.city is None and extra.country == found.country:
        return Location(found.country, extra.city)
    return found


def _get_nested(record: dict, *keys: str) -> object:
    value: object = record
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _clean_country(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    is_two_letters = len(code) == 2 and code.isascii() and code.isalpha()
    return code if is_two_letters and code not in _NOT_COUNTRIES else None


def _clean_city(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip()[:MAX_CITY_LENGTH] or None


def _from_wsgi_text(value: str) -> str:
    """Undo WSGI's latin-1 decoding of header bytes (PEP 3333) if they were UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _is_dbip(path: str, reader: Reader) -> bool:
    metadata = reader.metadata()
    names = [os.path.basename(path), metadata.database_type or ""]
    names += (metadata.description or {}).values()
    return any("dbip" in name.lower() or "db-ip" in name.lower() for name in names)
