"""What a QR code's readers reach: /p/<slug> records and redirects, /img/<slug> serves decodable images."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import text

from qrtrack import codes
from qrtrack.store import scans as scan_store
from qrtrack.web.fastpath import FastPath

from ..conftest import gen_code, gen_user, make_app

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")


def scans_of(db, code_id):
    with db.read() as conn:
        return scan_store.list_scans(conn, code_id, limit=100)


def decode_png(data: bytes) -> str:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    results = zxingcpp.read_barcodes(image)
    assert len(results) == 1
    return results[0].text


def test_scan_records_and_redirects_with_302_no_store(client, db, alice):
    code = gen_code(db, alice, destination="https://example.com/promo")
    response = client.get(f"/p/{code.slug}", headers={"User-Agent": IPHONE, "Referer": "https://t.co/x"},
                          environ_base={"REMOTE_ADDR": "8.8.8.8"})
    assert response.status_code == 302
    assert response.headers["Location"] == "https://example.com/promo"
    assert response.headers["Cache-Control"] == "no-store"
    [scan] = scans_of(db, code.id)
    assert (scan.device, scan.country, scan.is_bot, scan.referrer_host) == ("iPhone", "US", False, "t.co")
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 1


def test_scan_follows_a_new_destination_at_once(client, services, db, alice):
    code = gen_code(db, alice, destination="https://example.com/old")
    codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(destination="https://new.example/"),
                      logo_dir=services.logo_dir, images=services.images)
    assert client.get(f"/p/{code.slug}").headers["Location"] == "https://new.example/"


def test_unknown_slug_gets_a_friendly_404_page(client):
    response = client.get("/p/nosuch1")
    assert response.status_code == 404
    assert "does not lead anywhere" in response.text and response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"  # the slug may lead somewhere tomorrow


def test_paused_code_gets_a_friendly_410_and_is_not_counted(client, services, db, alice):
    code = gen_code(db, alice)
    codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(status="paused"),
                      logo_dir=services.logo_dir, images=services.images)
    response = client.get(f"/p/{code.slug}")
    assert response.status_code == 410 and "paused" in response.text
    assert response.headers["Cache-Control"] == "no-store"  # a browser must see the code once it is resumed
    assert scans_of(db, code.id) == []
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 0


def test_a_code_resumed_while_its_scan_falls_through_to_flask_is_recorded_and_redirected(app, client, services, db,
                                                                                         alice):
    """FastPath leaves a paused code's scan to the Flask view, which looks the code up again: if it was resumed
    in between, that view records the scan and redirects as FastPath would have."""
    code = gen_code(db, alice, destination="https://example.com/back")
    codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(status="paused"),
                      logo_dir=services.logo_dir, images=services.images)
    fast_path = app.wsgi_app
    assert isinstance(fast_path, FastPath)
    flask_app = fast_path.app

    def resume_then_flask(environ, start_response):
        codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(status="active"),
                          logo_dir=services.logo_dir, images=services.images)
        return flask_app(environ, start_response)

    fast_path.app = resume_then_flask
    response = client.get(f"/p/{code.slug}", headers={"User-Agent": IPHONE}, environ_base={"REMOTE_ADDR": "8.8.8.8"})

    assert response.status_code == 302 and response.headers["Location"] == "https://example.com/back"
    assert response.headers["Cache-Control"] == "no-store"
    [scan] = scans_of(db, code.id)
    assert (scan.device, scan.country, scan.is_bot) == ("iPhone", "US", False)
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 1


def test_bots_are_redirected_but_flagged(client, db, alice):
    code = gen_code(db, alice)
    for agent in ("facebookexternalhit/1.1", "curl/8.5.0", ""):
        assert client.get(f"/p/{code.slug}", headers={"User-Agent": agent}).status_code == 302
    assert [scan.is_bot for scan in scans_of(db, code.id)] == [True, True, True]


def test_private_address_gives_empty_location_not_an_error(client, db, alice):
    code = gen_code(db, alice)
    client.get(f"/p/{code.slug}", environ_base={"REMOTE_ADDR": "192.168.1.20"})
    [scan] = scans_of(db, code.id)
    assert (scan.country, scan.city) == (None, None)


def test_forwarded_address_is_used_only_within_trusted_hops(tmp_path):
    for trust, expected in ((0, None), (1, "US")):
        app = make_app(tmp_path / f"i{trust}", TRUST_PROXY=trust)
        db = app.extensions["qrtrack"].db
        code = gen_code(db, gen_user(db, "user"))
        app.test_client().get(f"/p/{code.slug}", headers={"X-Forwarded-For": "8.8.8.8"},
                              environ_base={"REMOTE_ADDR": "10.0.0.1"})
        assert scans_of(db, code.id)[0].country == expected
        db.dispose()


def test_trusted_cdn_headers_give_country_and_city(tmp_path):
    app = make_app(tmp_path / "i", TRUST_CDN="cloudflare")
    db = app.extensions["qrtrack"].db
    from ..conftest import gen_user

    code = gen_code(db, gen_user(db, "user"))
    app.test_client().get(f"/p/{code.slug}", headers={"CF-IPCountry": "US", "cf-ipcity": "Tampa"})
    scan = scans_of(db, code.id)[0]
    assert (scan.country, scan.city) == ("US", "Tampa")
    db.dispose()


def test_scan_stores_no_client_address(client, db, alice):
    code = gen_code(db, alice)
    client.get(f"/p/{code.slug}", environ_base={"REMOTE_ADDR": "203.0.113.77"})
    with db.read() as conn:
        row = conn.execute(text("SELECT * FROM scans")).mappings().one()
    assert not any("203.0.113" in str(value) for value in row.values())


def test_same_visitor_on_the_same_day_has_the_same_visitor_id(client, db, alice):
    code = gen_code(db, alice)
    for address in ("8.8.8.8", "8.8.8.9", "9.9.9.9"):
        client.get(f"/p/{code.slug}", headers={"User-Agent": IPHONE}, environ_base={"REMOTE_ADDR": address})
    with db.read() as conn:
        visitors = [row[0] for row in conn.execute(text("SELECT visitor FROM scans ORDER BY id"))]
    assert visitors[0] == visitors[1] != visitors[2]


def test_failed_scan_write_still_redirects(client, db, alice, monkeypatch):
    from sqlalchemy.exc import OperationalError

    code = gen_code(db, alice)

    def broken(*_args, **_kwargs):
        raise OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(scan_store, "insert_scans", broken)
    response = client.get(f"/p/{code.slug}")
    assert response.status_code == 302 and response.headers["Location"] == "https://example.com/"


@pytest.mark.parametrize("size", [None, 128, 512, 2048])
def test_png_decodes_to_the_short_url(client, db, alice, size):
    code = gen_code(db, alice)
    response = client.get(f"/img/{code.slug}.png" + (f"?size={size}" if size else ""))
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert decode_png(response.data) == f"http://localhost/p/{code.slug}"
    assert Image.open(io.BytesIO(response.data)).size == ((size or 400),) * 2


def test_png_size_is_clamped(client, db, alice):
    code = gen_code(db, alice)
    small = Image.open(io.BytesIO(client.get(f"/img/{code.slug}.png?size=1").data))
    huge = Image.open(io.BytesIO(client.get(f"/img/{code.slug}.png?size=99999").data))
    assert small.size == (64, 64) and huge.size == (2048, 2048)


def test_an_image_the_cache_cannot_keep_is_served_all_the_same_and_logged(app, client, db, alice, caplog):
    code = gen_code(db, alice)
    cache_folder = Path(app.extensions["qrtrack"].images.directory)
    cache_folder.parent.mkdir(parents=True, exist_ok=True)
    cache_folder.write_text("a file where the folder should be")  # what a folder the app cannot write does to put()
    with caplog.at_level(logging.WARNING):
        response = client.get(f"/img/{code.slug}.png")
    assert response.status_code == 200 and decode_png(response.data) == f"http://localhost/p/{code.slug}"
    assert [record.getMessage().split(" (")[0] for record in caplog.records] == [
        f"could not keep a QR image in the cache folder {cache_folder}"]


def test_png_uses_base_url_and_logo(tmp_path):
    from qrtrack.images import qr

    app = make_app(tmp_path / "i", BASE_URL="https://qr.example.com/sub")
    services = app.extensions["qrtrack"]
    logo = io.BytesIO()
    Image.new("RGB", (200, 200), (220, 30, 90)).save(logo, "PNG")
    digest = codes.save_logo(services.logo_dir, qr.sanitize_logo(logo.getvalue()))
    code = codes.create_code(services.db, owner_id=gen_user(services.db, "user"), destination="https://e.com",
                             logo=digest, logo_dir=services.logo_dir)
    client = app.test_client()
    assert decode_png(client.get(f"/img/{code.slug}.png").data) == f"https://qr.example.com/sub/p/{code.slug}"
    with client.get(f"/logo/{digest}.png") as logo_response:
        assert logo_response.status_code == 200 and logo_response.mimetype == "image/png"
    services.db.dispose()


def test_svg_is_served(client, db, alice):
    code = gen_code(db, alice)
    response = client.get(f"/img/{code.slug}.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.data.lstrip().startswith((b"<?xml", b"<svg"))


def test_image_is_cached_with_etag_and_answers_304(client, db, alice, services):
    code = gen_code(db, alice)
    first = client.get(f"/img/{code.slug}.png")
    assert first.headers["ETag"] and "max-age" in first.headers["Cache-Control"]
    assert list((Path(services.settings.INSTANCE_PATH) / "cache" / "images").iterdir())
    again = client.get(f"/img/{code.slug}.png", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_unknown_image_is_404(client):
    assert client.get("/img/nosuch1.png").status_code == 404
    assert client.get("/img/nosuch1.svg").status_code == 404
    assert client.get("/logo/" + "0" * 64 + ".png").status_code == 404
    assert client.get("/logo/../../etc.png").status_code == 404


def test_head_of_a_scan_address_is_redirected_but_not_counted(client, db, alice):
    """Link checkers and mail scanners send HEAD to see where a link goes; people's browsers never do."""
    code = gen_code(db, alice, destination="https://example.com/landing")
    response = client.head(f"/p/{code.slug}", headers={"User-Agent": "Mozilla/5.0 Chrome/125.0"})
    assert (response.status_code, response.headers["Location"]) == (302, "https://example.com/landing")
    assert scans_of(db, code.id) == []
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 0
    assert client.get(f"/p/{code.slug}").status_code == 302
    assert len(scans_of(db, code.id)) == 1
