"""The DB-IP Lite licence: pages link back to DB-IP whenever its data is loaded, and only then."""
from __future__ import annotations

from mmdb_writer import MMDBWriter
from netaddr import IPSet

from ...conftest import make_app


def write_mmdb(path, database_type: str) -> str:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"],
                        description={"en": "test"})
    writer.insert_network(IPSet(["81.2.69.0/24"]), {"country": {"iso_code": "GB"}, "city": {"names": {"en": "London"}}})
    writer.to_db_file(str(path))
    return str(path)


def test_dashboard_links_to_db_ip_when_its_data_is_loaded(tmp_path):
    mmdb = write_mmdb(tmp_path / "dbip-city-lite-2026-11.mmdb", "DBIP-City-Lite")
    app = make_app(tmp_path / "instance", GEOIP_DB=mmdb)
    page = app.test_client().get("/login").text
    assert '<a href="https://db-ip.com">IP Geolocation by DB-IP</a>' in page
    app.extensions["qrtrack"].db.dispose()


def test_no_db_ip_link_without_db_ip_data(tmp_path):
    mmdb = write_mmdb(tmp_path / "GeoLite2-City.mmdb", "GeoLite2-City")
    for settings in ({}, {"GEOIP_DB": mmdb}):
        app = make_app(tmp_path / f"instance{len(settings)}", **settings)
        assert "db-ip.com" not in app.test_client().get("/login").text
        app.extensions["qrtrack"].db.dispose()
