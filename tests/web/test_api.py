"""The REST API at /api.php through the test client: the seed contract, additions, errors, limits, call log."""
from __future__ import annotations

import itertools
import re
import time
import uuid as uuid_module
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient

from qrtrack import accounts, codes, keys
from qrtrack.config import SETTING_NAMES
from qrtrack.store import codes as code_store
from qrtrack.store import keys as key_store
from qrtrack.web import api

from ..conftest import BACKENDS, cached_images, close_app, fresh_database, gen_code, gen_key, gen_user, make_app

pytestmark = pytest.mark.postgresql

SEED_CODE_FIELDS = {"uuid", "type", "destination", "scans", "created_at", "logo"}
SEED_SCAN_FIELDS = {"timestamp", "city", "country", "device"}
ISO_UTC_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/125.0 Mobile Safari/537.36")
TAMPA = {"CF-IPCountry": "US", "CF-IPCity": "Tampa"}
UNKNOWN_UUID = "f47ac10b-58cc-4372-a567-0e02b2c3d479"


def assert_error(response, status: int, code: str | None = None) -> dict:
    """Every failure answers JSON {"error": {"code", "message"[, "field"]}} with the given status."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "field"}
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def api_app(make_test_app, **settings) -> tuple[Flask, FlaskClient, dict[str, str]]:
    """An app with its own settings, a user and the headers carrying her key."""
    app = make_test_app(**settings)
    db = app.extensions["qrtrack"].db
    return app, app.test_client(), {"X-Api-Key": gen_key(db, gen_user(db, "carol"))}


def create(client: FlaskClient, headers, **body):
    body.setdefault("destination", "https://example.com/page")
    response = client.post("/api.php", headers=headers, json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def scan(client: FlaskClient, slug: str, user_agent: str = IPHONE, **headers):
    return client.get(f"/p/{slug}", headers={"User-Agent": user_agent, **headers})


def slug_of(code: dict) -> str:
    return code["short_url"].rsplit("/", 1)[1]


@dataclass
class Shared:
    client: FlaskClient
    headers: dict[str, str]
    code: dict

    def code_now(self) -> dict:
        return self.client.get(f"/api.php?uuid={self.code['uuid']}", headers=self.headers).get_json()


@pytest.fixture(scope="module", params=BACKENDS)
def shared(request, tmp_path_factory) -> Iterator[Shared]:
    """One app per database for the many tests that send only refused requests: they change nothing, so they
    share it.

    Each checks that its one code is unchanged; building an app per case would triple the run time.
    """
    with pytest.MonkeyPatch.context() as patch, fresh_database(request, request.param) as url:
        for name in SETTING_NAMES:
            patch.delenv(name, raising=False)
        app = make_app(tmp_path_factory.mktemp("shared") / "instance", DATABASE_URL=url,
                       API_RATE_LIMIT="100000/minute")
        db = app.extensions["qrtrack"].db
        client = app.test_client()
        headers = {"X-Api-Key": gen_key(db, gen_user(db, "erin"))}
        yield Shared(client, headers, create(client, headers, destination="https://example.com/kept", label="same"))
        close_app(app)


def assert_unchanged(shared: Shared) -> None:
    listed = shared.client.get("/api.php", headers=shared.headers).get_json()
    assert [code["uuid"] for code in listed["codes"]] == [shared.code["uuid"]]
    now = shared.code_now()
    assert (now["destination"], now["label"], now["status"]) == ("https://example.com/kept", "same", "active")


@pytest.fixture
def bob(db) -> int:
    return gen_user(db, "bob")


@pytest.fixture
def bob_headers(db, bob) -> dict[str, str]:
    return {"X-Api-Key": gen_key(db, bob)}


# --- the seed contract -------------------------------------------------------------------------

def test_list_answers_the_seed_shape_newest_first(client, api_headers):
    first = create(client, api_headers, destination="https://example.com/promo-summer")
    second = create(client, api_headers, destination="https://example.com/second")
    scan(client, slug_of(first))
    scan(client, slug_of(first))

    response = client.get("/api.php", headers=api_headers)

    assert response.status_code == 200 and response.mimetype == "application/json"
    listed = response.get_json()["codes"]
    assert [code["uuid"] for code in listed] == [second["uuid"], first["uuid"]]
    for code in listed:
        assert SEED_CODE_FIELDS <= set(code)
        assert code["type"] == "url"
        assert type(code["scans"]) is int
        assert ISO_UTC_SECONDS.fullmatch(code["created_at"])
        assert code["logo"] is None
    assert (listed[1]["destination"], listed[1]["scans"]) == ("https://example.com/promo-summer", 2)
    assert listed[0]["scans"] == 0


def test_get_one_answers_the_seed_shape_with_the_scan_log(make_test_app):
    app, client, headers = api_app(make_test_app, TRUST_CDN="cloudflare")
    code = create(client, headers, destination="https://example.com/promo-summer")
    scan(client, slug_of(code), IPHONE, **TAMPA)
    scan(client, slug_of(code), ANDROID, **TAMPA)

    response = client.get(f"/api.php?uuid={code['uuid']}", headers=headers)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["uuid"], body["type"], body["destination"]) == (
        code["uuid"], "url", "https://example.com/promo-summer")
    assert set(SEED_SCAN_FIELDS) <= set(body["scans"][0])
    assert [(entry["city"], entry["country"], entry["device"]) for entry in body["scans"]] == [
        ("Tampa", "US", "Android"), ("Tampa", "US", "iPhone")]
    assert body["scans"][0]["timestamp"] >= body["scans"][1]["timestamp"]
    assert all(ISO_UTC_SECONDS.fullmatch(entry["timestamp"]) for entry in body["scans"])
    assert (body["scans_total"], body["scan_count"], body["next_before"]) == (2, 2, None)


@pytest.mark.parametrize("base_url", ["https://qr.yoursite.com", "https://example.com/qr", "https://example.com/qr/"])
def test_create_answers_201_with_urls_on_base_url(make_test_app, base_url):
    app, client, headers = api_app(make_test_app, BASE_URL=base_url)
    seed_body = '{"type": "url", "destination": "https://example.com/my-page", "label": "Summer promo"}'
    response = client.post("/api.php", headers={**headers, "Content-Type": "application/json"}, data=seed_body)

    assert response.status_code == 201 and response.mimetype == "application/json"
    body = response.get_json()
    assert str(uuid_module.UUID(body["uuid"])) == body["uuid"]
    slug = slug_of(body)
    public = base_url.rstrip("/")
    assert body["short_url"] == f"{public}/p/{slug}"
    assert body["qr_image_url"] == f"{public}/img/{slug}.png"
    assert (body["destination"], body["label"], body["type"]) == ("https://example.com/my-page", "Summer promo", "url")
    assert client.get(f"/p/{slug}").headers["Location"] == "https://example.com/my-page"
    image = client.get(f"/img/{slug}.png")
    assert image.status_code == 200 and image.mimetype == "image/png"


@pytest.mark.parametrize(("request_base", "public"), [
    ("https://qr.yoursite.com", "https://qr.yoursite.com"),
    ("http://shared-host.example/~me/qrtrack", "http://shared-host.example/~me/qrtrack"),
])
def test_create_without_base_url_derives_urls_from_the_request(client, api_headers, request_base, public):
    response = client.post("/api.php", base_url=request_base, headers=api_headers,
                           json={"destination": "https://example.com"})
    body = response.get_json()
    assert body["short_url"] == f"{public}/p/{slug_of(body)}"
    assert body["qr_image_url"] == f"{public}/img/{slug_of(body)}.png"


@pytest.mark.parametrize("status", ["paused", "archived"])
def test_create_honours_a_status_as_update_does(client, api_headers, status):
    code = create(client, api_headers, status=status)
    assert code["status"] == status
    assert client.get(f"/api.php?uuid={code['uuid']}", headers=api_headers).get_json()["status"] == status
    assert scan(client, slug_of(code)).status_code == 410


def test_status_defaults_to_active(client, api_headers):
    code = create(client, api_headers)
    assert code["status"] == "active"
    assert scan(client, slug_of(code)).status_code == 302


def test_type_defaults_to_url(client, api_headers):
    assert create(client, api_headers, destination="https://example.com")["type"] == "url"
    assert create(client, api_headers, destination="https://example.com", type=None)["type"] == "url"


def test_updated_destination_is_where_the_next_scan_goes(client, api_headers):
    code = create(client, api_headers, destination="https://example.com/old")
    assert scan(client, slug_of(code)).headers["Location"] == "https://example.com/old"

    response = client.post(f"/api.php?uuid={code['uuid']}", headers=api_headers,
                           json={"destination": "https://example.com/new-destination"})

    assert response.status_code == 200
    assert response.get_json()["destination"] == "https://example.com/new-destination"
    redirect = scan(client, slug_of(code))
    assert (redirect.status_code, redirect.headers["Location"]) == (302, "https://example.com/new-destination")
    assert redirect.headers["Cache-Control"] == "no-store"
    assert client.get(f"/api.php?uuid={code['uuid']}", headers=api_headers).get_json()["scans_total"] == 2


# --- beyond the seed ---------------------------------------------------------------------------

def test_delete_removes_the_code_its_log_and_its_short_url(client, api_headers):
    code = create(client, api_headers)
    scan(client, slug_of(code))

    response = client.delete(f"/api.php?uuid={code['uuid']}", headers=api_headers)

    assert response.status_code == 200
    assert response.get_json() == {"uuid": code["uuid"], "deleted": True}
    assert_error(client.get(f"/api.php?uuid={code['uuid']}", headers=api_headers), 404, "code_not_found")
    assert client.get("/api.php", headers=api_headers).get_json()["codes"] == []
    assert scan(client, slug_of(code)).status_code == 404


def test_delete_removes_the_logo_file_no_other_code_uses(client, services, alice, api_headers):
    logo = codes.save_logo(services.logo_dir, b"logo bytes")
    made = [codes.create_code(services.db, owner_id=alice, destination="https://example.com/", logo=logo,
                              logo_dir=services.logo_dir) for _ in range(2)]
    logo_file = codes.logo_path(services.logo_dir, logo)

    client.delete(f"/api.php?uuid={made[0].uuid}", headers=api_headers)
    assert logo_file.is_file()  # the other code still shows it
    client.delete(f"/api.php?uuid={made[1].uuid}", headers=api_headers)
    assert not logo_file.exists()


def test_delete_discards_the_codes_cached_images(client, services, api_headers):
    code, other = create(client, api_headers), create(client, api_headers)
    slug, other_slug = slug_of(code), slug_of(other)
    for path in (f"/img/{slug}.png", f"/img/{slug}.png?size=96", f"/img/{slug}.svg", f"/img/{other_slug}.png"):
        assert client.get(path).status_code == 200, path
    assert len(cached_images(services, slug)) == 3

    assert client.delete(f"/api.php?uuid={code['uuid']}", headers=api_headers).status_code == 200

    assert cached_images(services, slug) == {}
    assert len(cached_images(services, other_slug)) == 1
    assert [client.get(f"/img/{slug}.{kind}").status_code for kind in ("png", "svg")] == [404, 404]


@pytest.mark.parametrize("body", [{"destination": "https://example.com/new"}, {"label": "renamed"},
                                  {"status": "paused"}])
def test_an_update_keeps_the_cached_images_it_does_not_change(client, services, api_headers, body):
    code = create(client, api_headers)
    image = client.get(f"/img/{slug_of(code)}.png").data
    cached = cached_images(services, slug_of(code))
    assert client.post(f"/api.php?uuid={code['uuid']}", headers=api_headers, json=body).status_code == 200
    assert cached_images(services, slug_of(code)) == cached
    assert client.get(f"/img/{slug_of(code)}.png").data == image


def test_delete_without_uuid_is_refused(shared):
    error = assert_error(shared.client.delete("/api.php", headers=shared.headers), 400, "missing_uuid")
    assert error["field"] == "uuid"
    assert_unchanged(shared)


def test_paused_code_stops_redirecting_and_stays_listed(client, api_headers):
    code = create(client, api_headers)
    paused = client.post(f"/api.php?uuid={code['uuid']}", headers=api_headers, json={"status": "paused"})
    assert paused.get_json()["status"] == "paused"
    assert scan(client, slug_of(code)).status_code == 410
    assert [c["status"] for c in client.get("/api.php", headers=api_headers).get_json()["codes"]] == ["paused"]

    client.post(f"/api.php?uuid={code['uuid']}", headers=api_headers, json={"status": "active"})
    assert scan(client, slug_of(code)).status_code == 302


def test_archived_code_leaves_the_default_list_but_can_be_listed(client, api_headers):
    kept = create(client, api_headers)
    archived = create(client, api_headers)
    client.post(f"/api.php?uuid={archived['uuid']}", headers=api_headers, json={"status": "archived"})

    default = client.get("/api.php", headers=api_headers).get_json()
    assert ([c["uuid"] for c in default["codes"]], default["total"]) == ([kept["uuid"]], 1)
    only_archived = client.get("/api.php?status=archived", headers=api_headers).get_json()
    assert [c["uuid"] for c in only_archived["codes"]] == [archived["uuid"]]
    assert scan(client, slug_of(archived)).status_code == 410


def test_list_pages_with_limit_and_offset_and_gives_the_total(client, api_headers):
    made = [create(client, api_headers, destination=f"https://example.com/{n}")["uuid"] for n in range(5)]
    newest_first = made[::-1]

    def page(query):
        body = client.get(f"/api.php?{query}", headers=api_headers).get_json()
        return [code["uuid"] for code in body["codes"]], body["total"]

    assert page("limit=2") == (newest_first[:2], 5)
    assert page("limit=2&offset=2") == (newest_first[2:4], 5)
    assert page("limit=2&offset=4") == (newest_first[4:], 5)
    assert page("limit=2&offset=50") == ([], 5)
    assert page("") == (newest_first, 5)


def test_label_filter_matches_text_case_insensitively_and_literally(client, api_headers):
    summer = create(client, api_headers, label="Summer promo 2026")
    percent = create(client, api_headers, label="100% off")
    create(client, api_headers, label="Winter")

    def labels(text):
        body = client.get("/api.php", query_string={"label": text}, headers=api_headers).get_json()
        assert body["total"] == len(body["codes"])
        return [code["uuid"] for code in body["codes"]]

    assert labels("summer") == [summer["uuid"]]
    assert labels("%") == [percent["uuid"]]
    assert labels("_") == []
    assert labels("nothing like it") == []


@pytest.mark.parametrize(("scan_count", "page_size"), [(5, 2), (4, 2), (3, 3), (1, 5), (0, 5)])
def test_scan_log_pages_with_limit_and_before_until_next_before_is_null(client, api_headers, scan_count, page_size):
    code = create(client, api_headers)
    for _ in range(scan_count):
        scan(client, slug_of(code))
    full = client.get(f"/api.php?uuid={code['uuid']}", headers=api_headers).get_json()["scans"]
    assert len(full) == scan_count

    seen, query, pages = [], f"uuid={code['uuid']}&limit={page_size}", 0
    while True:
        body = client.get(f"/api.php?{query}", headers=api_headers).get_json()
        pages += 1
        assert body["scans_total"] == scan_count and len(body["scans"]) <= page_size
        seen += body["scans"]
        if body["next_before"] is None:
            break
        query = f"uuid={code['uuid']}&limit={page_size}&before={body['next_before']}"
    assert seen == full
    assert pages == max(1, -(-scan_count // page_size))  # no empty last page


def test_a_before_that_is_not_a_scan_of_the_code_is_refused_not_answered_with_an_empty_page(client, api_headers):
    """An API probe got "scans": [] and next_before null for a made-up id, as if the code had no older scans."""
    code, other = create(client, api_headers), create(client, api_headers)
    scan(client, slug_of(code))
    for _ in range(2):
        scan(client, slug_of(other))
    other_scan_id = client.get(f"/api.php?uuid={other['uuid']}&limit=1", headers=api_headers).get_json()["next_before"]
    for before in (other_scan_id, 999_999):
        response = client.get(f"/api.php?uuid={code['uuid']}&before={before}", headers=api_headers)
        error = assert_error(response, 400, "invalid_parameter")
        assert error["field"] == "before" and "next_before of the previous page" in error["message"]


def test_label_with_html_is_stored_and_answered_verbatim(client, api_headers):
    label = '<script>alert("x")</script> & <b>bold</b>'
    code = create(client, api_headers, label=label)
    assert code["label"] == label
    assert client.get(f"/api.php?uuid={code['uuid']}", headers=api_headers).get_json()["label"] == label


def test_null_label_on_update_clears_it(client, api_headers):
    code = create(client, api_headers, label="temporary")
    updated = client.post(f"/api.php?uuid={code['uuid']}", headers=api_headers, json={"label": None}).get_json()
    assert (updated["label"], updated["destination"]) == ("", code["destination"])


def test_scans_whose_headers_carry_nul_or_an_overlong_os_version_are_counted(make_test_app):
    """Visitors control these headers; on PostgreSQL such a row used to fail its whole batch of scans."""
    app, client, headers = api_app(make_test_app, TRUST_CDN="cloudflare")
    code = create(client, headers)
    long_version = IPHONE.replace("17_5", "9" * 100 + "_5")
    paris = {"CF-IPCountry": "FR", "CF-IPCity": "Par\x00is"}
    assert scan(client, slug_of(code), long_version, **paris).status_code == 302
    assert scan(client, slug_of(code), "Mozilla/5.0\x00", Referer="https://news\x00.example/").status_code == 302
    body = client.get(f"/api.php?uuid={code['uuid']}", headers=headers).get_json()
    assert (body["scan_count"], body["scans_total"]) == (2, 2)
    assert body["scans"][1]["city"] in {"Paris", "Par\x00is"}
    assert body["scans"][1]["city"] == "Paris"  # both scan stores fit rows alike (sqlite_scans.fit_scan_row)


@pytest.mark.parametrize("path", ["/p/%00", "/p/ab%00", "/img/ab%00.png", "/img/ab%00.svg"])
def test_a_slug_with_nul_is_an_unknown_code(client, path):
    assert client.get(path).status_code == 404


def test_a_search_with_nul_finds_nothing(client, api_headers):
    create(client, api_headers, label="promo")
    body = client.get("/api.php?label=pro%00", headers=api_headers).get_json()
    assert body["codes"] == []


# --- validation --------------------------------------------------------------------------------

BAD_DESTINATIONS = [
    "javascript:alert(1)", "JavaScript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>",
    "/relative/path", "relative/path", "example.com/no-scheme", "//example.com/protocol-relative",
    "ftp://example.com/file", "mailto:someone@example.com", "https://", "http:///no-host", "http://[::1",
    "https://example.com:99999/", "not a url", "https://exa mple.com/", "https://example.com/a b",
    " https://example.com/", "https://example.com/\t", "\nhttps://example.com/", "   ", "",
    "https://example.com/\x00", "https://example.com/\x7f", "https://example.com/" + "a" * 2029,
    None, 42, ["https://example.com"], {"url": "https://example.com"},
    "https://a..b/", "https://[::1]x/", "https://xn--/",
]


def test_a_destination_whose_host_no_browser_opens_is_refused_with_the_reason(shared):
    created = shared.client.post("/api.php", headers=shared.headers, json={"destination": "https://shop..example/"})
    message = assert_error(created, 400, "invalid_destination")["message"]
    assert message == ("destination's host is not one a browser can open: 'shop..example' is not a domain name: "
                       "it has an empty part between dots")
    assert_unchanged(shared)


def test_a_code_cannot_be_pointed_at_its_own_short_url(client, api_headers):
    code = create(client, api_headers)
    response = client.post(f"/api.php?uuid={code['uuid']}", headers=api_headers,
                           json={"destination": code["short_url"]})
    assert "leads back to this code's own short URL" in assert_error(response, 400, "invalid_destination")["message"]
    assert scan(client, slug_of(code)).headers["Location"] == "https://example.com/page"


def test_an_internationalised_destination_redirects_to_the_domain_browsers_read_in_it(client, api_headers):
    """faß.de is xn--fa-hia.de to a browser; IDNA 2003 made it fass.de, a different domain."""
    created = client.post("/api.php", headers=api_headers, json={"destination": "https://faß.de/straße"})
    assert created.status_code == 201 and created.get_json()["destination"] == "https://faß.de/straße"
    assert scan(client, slug_of(created.get_json())).headers["Location"] == "https://xn--fa-hia.de/stra%C3%9Fe"


@pytest.mark.parametrize("destination", BAD_DESTINATIONS)
def test_create_and_update_refuse_a_bad_destination(shared, destination):
    created = shared.client.post("/api.php", headers=shared.headers, json={"destination": destination})
    assert assert_error(created, 400, "invalid_destination")["field"] == "destination"
    updated = shared.client.post(f"/api.php?uuid={shared.code['uuid']}", headers=shared.headers,
                                 json={"destination": destination})
    assert assert_error(updated, 400, "invalid_destination")["field"] == "destination"
    assert_unchanged(shared)
    assert scan(shared.client, slug_of(shared.code)).headers["Location"] == "https://example.com/kept"


def test_destination_of_exactly_2048_characters_is_accepted(client, api_headers):
    destination = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert create(client, api_headers, destination=destination)["destination"] == destination


@pytest.mark.parametrize("label", ["x" * 201, " " * 201, 42, ["a"], {"a": 1}, "nul\x00byte", "bell\x07"])
def test_bad_label_is_refused(shared, label):
    body = {"destination": "https://e.com", "label": label}
    created = shared.client.post("/api.php", headers=shared.headers, json=body)
    assert assert_error(created, 400, "invalid_label")["field"] == "label"
    updated = shared.client.post(f"/api.php?uuid={shared.code['uuid']}", headers=shared.headers,
                                 json={"label": label})
    assert assert_error(updated, 400, "invalid_label")["field"] == "label"
    assert_unchanged(shared)


def test_label_of_200_characters_is_accepted(client, api_headers):
    assert create(client, api_headers, label="é" * 200)["label"] == "é" * 200


@pytest.mark.parametrize(("body", "code"), [
    ({"destination": "https://e.com", "type": "vcard"}, "invalid_type"),
    ({"destination": "https://e.com", "type": 1}, "invalid_type"),
    ({"label": "no destination"}, "invalid_destination"),
    ({}, "invalid_destination"),
])
def test_create_refuses_bad_fields(shared, body, code):
    assert_error(shared.client.post("/api.php", headers=shared.headers, json=body), 400, code)
    assert_unchanged(shared)


@pytest.mark.parametrize("status", ["deleted", "PAUSED", "", None, 1, ["paused"]])
def test_create_refuses_a_bad_status_with_the_error_update_gives(shared, status):
    created = shared.client.post("/api.php", headers=shared.headers,
                                 json={"destination": "https://example.com/new", "status": status})
    updated = shared.client.post(f"/api.php?uuid={shared.code['uuid']}", headers=shared.headers,
                                 json={"status": status})
    assert assert_error(created, 400, "invalid_status")["field"] == "status"
    assert (created.status_code, created.get_json()) == (updated.status_code, updated.get_json())
    assert_unchanged(shared)


@pytest.mark.parametrize(("body", "code"), [
    ({"slug": "mine"}, "invalid_field"),
    ({"destinaton": "https://typo.example"}, "invalid_field"),
    ({"status": "deleted"}, "invalid_status"),
    ({"status": None}, "invalid_status"),
    ({"destination": None}, "invalid_destination"),
    ({"type": "vcard"}, "invalid_type"),
    ({}, "invalid_field"),  # the spec's minProperties: 1; a probe found it answered 200
])
def test_update_refuses_bad_fields_and_changes_nothing(shared, body, code):
    response = shared.client.post(f"/api.php?uuid={shared.code['uuid']}", headers=shared.headers, json=body)
    assert_error(response, 400, code)
    assert_unchanged(shared)


@pytest.mark.parametrize("data", [
    "{bad json", '{"destination": "https://e.com",}', "", "[1, 2]", '"https://e.com"', "null", "42",
    "[" * 30_000 + "]" * 30_000,  # deep nesting once raised RecursionError, a 500
    '{"destination": "https://e.com", "label": "\\ud800"}',  # a lone surrogate once reached SQLite, a 500
    b'{"destination": "https://e.com/\xff"}',
    '{"destination": "https://e.com", "x": NaN}', '{"destination": "https://e.com", "x": -Infinity}',
    '{"destination": "https://e.com"}'.encode("utf-16"),  # RFC 8259: UTF-8 only
])
@pytest.mark.parametrize("on_code", [False, True], ids=["create", "update"])
def test_malformed_or_non_object_json_is_400(shared, data, on_code):
    path = f"/api.php?uuid={shared.code['uuid']}" if on_code else "/api.php"
    response = shared.client.post(path, headers=shared.headers, data=data, content_type="application/json")
    assert_error(response, 400, "invalid_json")
    assert_unchanged(shared)


@pytest.mark.parametrize(("data", "message"), [
    ('{"destination": "https://e.com",}', "the body is not valid JSON: Expecting property name enclosed in double "
                                          "quotes at line 1 column 33"),
    ('{\n  "label": \'x\'\n}', "the body is not valid JSON: Expecting value at line 2 column 12"),
    ('{"destination": "https://e.com", "x": NaN}', "the body is not valid JSON: NaN is not a JSON value"),
])
def test_a_json_syntax_error_says_what_and_where(shared, data, message):
    response = shared.client.post("/api.php", headers=shared.headers, data=data, content_type="application/json")
    assert assert_error(response, 400, "invalid_json")["message"] == message
    assert_unchanged(shared)


@pytest.mark.parametrize(("data", "message"), [
    ("[" * 30_000 + "]" * 30_000, "the body nests objects and arrays more deeply than this API reads"),
    ('{"destination": "https://e.com", "x": ' + "9" * 5_000 + "}",
     "the body holds a number with more digits than this API reads"),
    (b'{"destination": "https://e.com/\xff"}', "the body is not UTF-8: byte 32 cannot start or continue a character"),
    ('{"label": "\\ud800"}', "the body holds text with a lone surrogate (such as \\ud800), which is no character"),
])
def test_json_that_parses_badly_for_another_reason_says_which(shared, data, message):
    response = shared.client.post("/api.php", headers=shared.headers, data=data, content_type="application/json")
    assert assert_error(response, 400, "invalid_json")["message"] == message
    assert_unchanged(shared)


def test_a_utf_8_byte_order_mark_is_let_pass(client, api_headers):
    data = b"\xef\xbb\xbf" + b'{"destination": "https://example.com/bom"}'
    response = client.post("/api.php", headers=api_headers, data=data, content_type="application/json")
    assert response.status_code == 201 and response.get_json()["destination"] == "https://example.com/bom"


@pytest.mark.parametrize("query", [
    "limit=0", "limit=-1", "limit=1001", "limit=abc", "limit=1.5", "limit=", "limit=%D9%A3", "limit=1_0",
    "offset=-1", "offset=x", "offset=99999999999999999999999",  # once overflowed SQLite: a 500
    "before=0", "before=abc", "before=99999999999999999999999",
    "status=deleted", "status=",
])
@pytest.mark.parametrize("with_uuid", [False, True], ids=["list", "one"])
def test_bad_query_parameters_are_400(shared, query, with_uuid):
    prefix = f"uuid={shared.code['uuid']}&" if with_uuid else ""
    error = assert_error(shared.client.get(f"/api.php?{prefix}{query}", headers=shared.headers), 400)
    assert error["field"] == query.split("=")[0]


def test_unknown_query_parameters_are_ignored(client, api_headers):
    create(client, api_headers)
    assert client.get("/api.php?_=1700000000&sort=whatever", headers=api_headers).get_json()["total"] == 1


# --- authentication ----------------------------------------------------------------------------

PROTECTED_CALLS = [
    ("GET", "/api.php", None),
    ("GET", f"/api.php?uuid={UNKNOWN_UUID}", None),
    ("POST", "/api.php", {"destination": "https://example.com"}),
    ("POST", f"/api.php?uuid={UNKNOWN_UUID}", {"destination": "https://example.com"}),
    ("DELETE", f"/api.php?uuid={UNKNOWN_UUID}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED_CALLS)
def test_every_call_without_a_key_is_401(shared, method, path, body):
    assert_error(shared.client.open(path, method=method, json=body), 401, "missing_api_key")


@pytest.mark.parametrize("presented", ["nope", "qrt_" + "0" * 40, "qrt_", "x" * 500])
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED_CALLS)
def test_every_call_with_an_unknown_key_is_401(shared, method, path, body, presented):
    response = shared.client.open(path, method=method, json=body, headers={"X-Api-Key": presented})
    assert_error(response, 401, "invalid_api_key")


def test_revoked_key_is_401_at_once_and_codes_stay(client, db, alice):
    raw_key, key_id = keys.issue_api_key(db, user_id=alice, name="to revoke")
    code = create(client, {"X-Api-Key": raw_key})
    keys.revoke_api_key(db, user_id=alice, key_id=key_id)
    assert_error(client.get("/api.php", headers={"X-Api-Key": raw_key}), 401, "invalid_api_key")
    assert codes.get_code(db, owner_id=alice, uuid=code["uuid"]).uuid == code["uuid"]


def test_key_of_a_disabled_user_is_401(client, db, api_headers, alice):
    gen_user(db, "admin", is_admin=True)
    accounts.set_user_active(db, user_id=alice, is_active=False)
    refused = assert_error(client.get("/api.php", headers=api_headers), 401, "invalid_api_key")
    # One message for every refused key, naming each reason (a probe read "revoked" for a disabled user).
    assert refused["message"] == "this API key is not valid: mistyped, revoked, or its user disabled"
    malformed = assert_error(client.get("/api.php", headers={"X-Api-Key": "not-a-key"}), 401, "invalid_api_key")
    assert malformed["message"] == refused["message"]
    accounts.set_user_active(db, user_id=alice, is_active=True)
    assert client.get("/api.php", headers=api_headers).status_code == 200


@pytest.mark.parametrize("elsewhere", [
    {"query_string": {"api_key": "KEY"}},
    {"query_string": {"X-Api-Key": "KEY"}},
    {"headers": {"Authorization": "Bearer KEY"}},
    {"headers": {"Authorization": "KEY"}},
    {"headers": {"Cookie": "X-Api-Key=KEY"}},
])
def test_key_is_accepted_only_from_the_x_api_key_header(shared, elsewhere):
    key = shared.headers["X-Api-Key"]
    options = {name: {k: v.replace("KEY", key) for k, v in value.items()} for name, value in elsewhere.items()}
    assert_error(shared.client.get("/api.php", **options), 401, "missing_api_key")


def test_header_name_is_case_insensitive(client, alice_key):
    assert client.get("/api.php", headers={"x-api-key": alice_key}).status_code == 200


# --- isolation between users -------------------------------------------------------------------

def test_list_shows_only_the_key_owners_codes(client, api_headers, bob_headers):
    mine = create(client, api_headers)
    theirs = create(client, bob_headers)
    assert [c["uuid"] for c in client.get("/api.php", headers=api_headers).get_json()["codes"]] == [mine["uuid"]]
    assert [c["uuid"] for c in client.get("/api.php", headers=bob_headers).get_json()["codes"]] == [theirs["uuid"]]


@pytest.mark.parametrize(("method", "body"), [("GET", None), ("POST", {"destination": "https://evil.example/"}),
                                              ("POST", {"status": "paused"}), ("DELETE", None)])
def test_another_users_code_is_404_exactly_like_an_unknown_one(client, api_headers, bob_headers, method, body):
    theirs = create(client, bob_headers, destination="https://bob.example/")

    foreign = client.open(f"/api.php?uuid={theirs['uuid']}", method=method, json=body, headers=api_headers)
    unknown = client.open(f"/api.php?uuid={UNKNOWN_UUID}", method=method, json=body, headers=api_headers)

    assert_error(foreign, 404, "code_not_found")
    assert foreign.get_json() == unknown.get_json()
    still = client.get(f"/api.php?uuid={theirs['uuid']}", headers=bob_headers).get_json()
    assert (still["destination"], still["status"]) == ("https://bob.example/", "active")
    assert scan(client, slug_of(theirs)).headers["Location"] == "https://bob.example/"


@pytest.mark.parametrize("uuid", ["not-a-uuid", UNKNOWN_UUID.upper().replace("-", ""), "' OR 1=1 --"])
def test_malformed_uuid_is_404_too(shared, uuid):
    assert_error(shared.client.get("/api.php", query_string={"uuid": uuid}, headers=shared.headers), 404,
                 "code_not_found")


def test_uuid_is_matched_case_insensitively(client, api_headers):
    code = create(client, api_headers)
    assert client.get(f"/api.php?uuid={code['uuid'].upper()}", headers=api_headers).get_json()["uuid"] == code["uuid"]


# --- HTTP-level errors -------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["", "?uuid={uuid}"], ids=["create", "update"])
def test_head_with_a_body_changes_nothing(shared, query):
    """HEAD is GET without the body; it once ran the POST branch and created or changed codes."""
    body = {"destination": "https://made-by-head.example/", "label": "made by HEAD"}
    response = shared.client.head("/api.php" + query.format(uuid=shared.code["uuid"]), headers=shared.headers,
                                  json=body)
    assert response.status_code == 200 and response.data == b""
    assert_unchanged(shared)


@pytest.mark.parametrize("query", ["", "?uuid={uuid}", "?limit=1&offset=0"])
def test_head_answers_as_get_does_without_the_body(shared, query):
    path = "/api.php" + query.format(uuid=shared.code["uuid"])
    got = shared.client.get(path, headers=shared.headers)
    head = shared.client.head(path, headers=shared.headers)
    assert (head.status_code, head.mimetype, head.data) == (200, "application/json", b"")
    assert head.headers["Content-Length"] == got.headers["Content-Length"]


def test_head_without_a_key_is_401(shared):
    response = shared.client.head("/api.php")
    assert (response.status_code, response.mimetype) == (401, "application/json")


def test_options_names_the_methods_that_answer(shared):
    response = shared.client.options("/api.php")
    assert (response.status_code, response.data) == (204, b"")
    assert "Content-Type" not in response.headers  # there is no content to have a type
    assert [method.strip() for method in response.headers["Allow"].split(",")] == [
        "GET", "HEAD", "POST", "DELETE", "OPTIONS"]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_an_empty_uuid_is_a_missing_uuid_for_every_method(shared, method):
    response = shared.client.open("/api.php?uuid=", method=method, headers=shared.headers,
                                  json={"destination": "https://e.com/"} if method == "POST" else None)
    assert assert_error(response, 400, "missing_uuid")["field"] == "uuid"
    assert_unchanged(shared)


@pytest.mark.parametrize("path", ["/API.PHP", "/api.php/", "/api.php/codes", "/Api.php?uuid=x"])
def test_paths_near_the_api_answer_json_errors(shared, path):
    assert_error(shared.client.get(path, headers=shared.headers), 404, "not_found")


def test_a_destination_that_is_not_a_string_is_named_as_such(shared):
    response = shared.client.post("/api.php", headers=shared.headers, json={"destination": 123})
    assert "must be a string" in assert_error(response, 400, "invalid_destination")["message"]
    assert_unchanged(shared)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "TRACE", "PROPFIND"])
def test_unsupported_method_is_405_with_allow_and_json(shared, method):
    """Allow names what answers, also for a method no route takes (a probe's TRACE was told PUT and PATCH)."""
    response = shared.client.open("/api.php", method=method, headers=shared.headers,
                                  json={"destination": "https://e.com"})
    assert_error(response, 405, "method_not_allowed")
    assert [m.strip() for m in response.headers["Allow"].split(",")] == ["GET", "HEAD", "POST", "DELETE", "OPTIONS"]


@pytest.mark.parametrize("on_code", [False, True], ids=["create", "update"])
@pytest.mark.parametrize("size", [64 * 1024 + 1, 3 * 1024 * 1024])
def test_body_over_64_kib_is_413(shared, on_code, size):
    path = f"/api.php?uuid={shared.code['uuid']}" if on_code else "/api.php"
    data = '{"destination": "https://e.com", "label": "' + "x" * size + '"}'
    response = shared.client.post(path, headers=shared.headers, data=data, content_type="application/json")
    assert_error(response, 413, "payload_too_large")
    assert_unchanged(shared)


def test_body_of_64_kib_is_read(client, api_headers):
    padding = 64 * 1024 - len('{"destination": "https://e.com", "pad": ""}')
    data = '{"destination": "https://e.com", "pad": "' + "x" * padding + '"}'
    assert len(data.encode()) == 64 * 1024
    assert client.post("/api.php", headers=api_headers, data=data, content_type="application/json").status_code == 201


@pytest.mark.parametrize(("content_type", "data"), [
    ("text/plain", '{"destination": "https://e.com"}'),
    ("application/x-www-form-urlencoded", "destination=https%3A%2F%2Fe.com"),
    ("multipart/form-data; boundary=x", '--x\r\nContent-Disposition: form-data; name="destination"\r\n\r\n'
                                        'https://e.com\r\n--x--\r\n'),
    (None, '{"destination": "https://e.com"}'),
])
@pytest.mark.parametrize("on_code", [False, True], ids=["create", "update"])
def test_body_that_is_not_json_is_415(shared, content_type, data, on_code):
    path = f"/api.php?uuid={shared.code['uuid']}" if on_code else "/api.php"
    response = shared.client.post(path, headers=shared.headers, data=data, content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    assert_unchanged(shared)


def test_json_with_a_charset_is_accepted(client, api_headers):
    response = client.post("/api.php", headers=api_headers, data='{"destination": "https://e.com"}',
                           content_type="application/json; charset=utf-8")
    assert response.status_code == 201


def test_unknown_api_path_is_a_json_404(shared):
    assert_error(shared.client.get("/api/nothing-here", headers=shared.headers), 404)


# --- rate limiting -----------------------------------------------------------------------------

def test_limit_answers_429_with_retry_after_and_json_after_the_allowance(make_test_app):
    app, client, headers = api_app(make_test_app, API_RATE_LIMIT="3")
    db = app.extensions["qrtrack"].db
    allowed = [client.get("/api.php", headers=headers) for _ in range(3)]
    for remaining, response in zip((2, 1, 0), allowed, strict=True):
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == str(remaining)
        assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())
        assert "Retry-After" not in response.headers

    refused = client.post("/api.php", headers=headers, json={"destination": "https://e.com"})

    assert_error(refused, 429, "rate_limited")
    assert re.fullmatch(r"\d+", refused.headers["Retry-After"]) and 0 <= int(refused.headers["Retry-After"]) <= 60
    with db.read() as conn:
        assert code_store.count_codes(conn, 1) == 0  # the refused POST made nothing


def test_limit_counts_per_key(make_test_app):
    app, client, headers = api_app(make_test_app, API_RATE_LIMIT="2")
    db = app.extensions["qrtrack"].db
    other = {"X-Api-Key": gen_key(db, gen_user(db, "dave"))}
    for _ in range(2):
        assert client.get("/api.php", headers=headers).status_code == 200
    assert client.get("/api.php", headers=headers).status_code == 429
    assert client.get("/api.php", headers=other).status_code == 200


def test_errors_count_against_the_limit_and_carry_its_headers(make_test_app):
    app, client, headers = api_app(make_test_app, API_RATE_LIMIT="2")
    response = client.post("/api.php", headers=headers, json={"destination": "javascript:alert(1)"})
    assert response.status_code == 400 and response.headers["X-RateLimit-Remaining"] == "1"
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(("setting", "limit", "window"), [
    (None, "60", 60), ("60", "60", 60), ("5", "5", 60), ("100/hour", "100", 3600), ("10 per second", "10", 1),
])
def test_api_rate_limit_setting_forms(make_test_app, setting, limit, window):
    settings = {} if setting is None else {"API_RATE_LIMIT": setting}
    app, client, headers = api_app(make_test_app, **settings)
    before = time.time()
    response = client.get("/api.php", headers=headers)
    after = time.time()  # a loaded machine may take a while to answer: the window starts within the request
    assert response.headers["X-RateLimit-Limit"] == limit
    assert before <= int(response.headers["X-RateLimit-Reset"]) <= after + window + 1


def test_requests_without_a_key_are_limited_per_address(make_test_app):
    app, client, headers = api_app(make_test_app, API_RATE_LIMIT="2")
    for _ in range(2):
        assert client.get("/api.php", headers={"X-Api-Key": "qrt_guess"}).status_code == 401
    assert_error(client.get("/api.php", headers={"X-Api-Key": "qrt_guess"}), 429, "rate_limited")
    assert client.get("/api.php", headers=headers).status_code == 200
    # The README says what shares the address's count: keyless OPTIONS and the OpenAPI document too.
    assert client.options("/api.php").status_code == 429
    assert client.get("/api/openapi.json").status_code == 429


# --- call log ----------------------------------------------------------------------------------

def calls_of(db, user_id: int):
    with db.read() as conn:
        return key_store.list_api_calls(conn, user_id, limit=1000)


def test_every_call_is_logged_for_the_owner_without_the_key(make_test_app):
    app, client, headers = api_app(make_test_app, API_RATE_LIMIT="7")
    db = app.extensions["qrtrack"].db
    raw_key = headers["X-Api-Key"]
    code = create(client, headers, label=raw_key)  # even a key pasted into a label stays out of the log
    client.get("/api.php?limit=5", headers=headers)
    client.get(f"/api.php?api_key={raw_key}&k={raw_key.replace('_', '%5F').upper()}", headers=headers)
    client.post("/api.php", headers=headers, json={"destination": "javascript:x"})
    client.get(f"/api.php?uuid={UNKNOWN_UUID}", headers=headers)
    client.delete(f"/api.php?uuid={code['uuid']}", headers=headers)
    client.put("/api.php", headers=headers, json={})  # the 7th: a wrong method
    client.get("/api.php", headers=headers)  # the 8th: rate limited

    [carol] = [user for user in accounts.list_users(db) if user.username == "carol"]
    calls = calls_of(db, carol.id)[::-1]
    assert [(c.method, c.path, c.status) for c in calls] == [
        ("POST", "/api.php", 201),
        ("GET", "/api.php?limit=5", 200),
        ("GET", "/api.php?api_key=qrt_[redacted]&k=QRT%[redacted]", 200),
        ("POST", "/api.php", 400),
        ("GET", f"/api.php?uuid={UNKNOWN_UUID}", 404),
        ("DELETE", f"/api.php?uuid={code['uuid']}", 200),
        ("PUT", "/api.php", 405),
        ("GET", "/api.php", 429),
    ]
    for call in calls:
        assert call.key_name == "test key" and call.source == "api"
        assert isinstance(call.duration_ms, int) and call.duration_ms >= 0
        assert abs(call.ts - time.time()) < 60
        assert raw_key[4:].lower() not in repr(tuple(call)).lower()


def test_call_durations_are_measured_and_a_refused_call_takes_none(make_test_app, monkeypatch):
    """Each read of the clock here is 5 ms after the last, as if every step were slow: a served call is logged
    with its time, and a call the rate limit refused before the timer started with 0 ms, never less."""
    app, client, headers = api_app(make_test_app, API_RATE_LIMIT="1")
    ticks = itertools.count(start=1000, step=5)
    monkeypatch.setattr(api.time, "perf_counter", lambda: next(ticks) / 1000)
    assert client.get("/api.php", headers=headers).status_code == 200
    assert client.get("/api.php", headers=headers).status_code == 429

    [carol] = [user for user in accounts.list_users(app.extensions["qrtrack"].db) if user.username == "carol"]
    served, refused = calls_of(app.extensions["qrtrack"].db, carol.id)[::-1]
    assert (served.status, refused.status) == (200, 429)
    assert served.duration_ms == 5 and refused.duration_ms == 0


def test_calls_are_logged_only_for_their_owner_and_unauthenticated_calls_for_nobody(client, db, alice, api_headers,
                                                                                   bob, bob_headers):
    client.get("/api.php", headers=api_headers)
    client.get("/api.php", headers={"X-Api-Key": "qrt_" + "0" * 40})
    client.get("/api.php")
    assert [c.status for c in calls_of(db, alice)] == [200]
    assert calls_of(db, bob) == []


def test_call_log_keeps_the_key_name(client, db, alice):
    raw_key, _ = keys.issue_api_key(db, user_id=alice, name="build server")
    client.get("/api.php", headers={"X-Api-Key": raw_key})
    assert [c.key_name for c in calls_of(db, alice)] == ["build server"]


# --- the spec ----------------------------------------------------------------------------------

def test_openapi_spec_is_served_without_a_key_and_names_this_server(client):
    response = client.get("/api/openapi.json", base_url="https://qr.yoursite.com")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = response.get_json()
    assert spec["openapi"].startswith("3.1")
    assert spec["servers"] == [{"url": "https://qr.yoursite.com"}]
    assert set(spec["paths"]["/api.php"]) == {"get", "head", "post", "delete", "options"}
    assert spec["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-Api-Key"}


def test_openapi_spec_names_base_url_when_set(make_test_app):
    app, client, headers = api_app(make_test_app, BASE_URL="https://example.com/qr")
    assert client.get("/api/openapi.json").get_json()["servers"] == [{"url": "https://example.com/qr"}]


def test_created_code_is_a_code_of_the_service_layer_too(client, db, alice, api_headers):
    code = create(client, api_headers, label="from the API")
    assert codes.get_code(db, owner_id=alice, uuid=code["uuid"]).label == "from the API"
    made_by_service = gen_code(db, alice).uuid
    assert made_by_service in {c["uuid"] for c in client.get("/api.php", headers=api_headers).get_json()["codes"]}


def test_one_rate_limit_covers_every_api_endpoint_for_a_key(make_test_app):
    app = make_test_app(API_RATE_LIMIT="3")
    db = app.extensions["qrtrack"].db
    headers = {"X-Api-Key": gen_key(db, gen_user(db, "limited"))}
    client = app.test_client()
    statuses = [client.get("/api.php", headers=headers).status_code,
                client.get("/api/openapi.json", headers=headers).status_code,
                client.get("/api.php", headers=headers).status_code,
                client.get("/api/openapi.json", headers=headers).status_code]
    assert statuses == [200, 200, 200, 429]
