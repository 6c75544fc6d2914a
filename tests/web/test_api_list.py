"""GET /api.php without a uuid: the listing's exact bytes, so a faster listing cannot drift from the contract."""
from __future__ import annotations

import json

import pytest
from flask import jsonify
from flask.testing import FlaskClient

from qrtrack.clock import isoformat_utc
from qrtrack.store import codes as code_store
from qrtrack.web import api

from ..conftest import gen_code, gen_key, gen_user

pytestmark = pytest.mark.postgresql

LOGO = "ab" * 32
# (uuid, slug, label, destination, status, logo, scan_count, created_at, updated_at), oldest first.
FIXED_CODES = (
    ("00000000-0000-4000-8000-000000000001", "Aaaaaa1", "", "https://example.com/", "active", None, 0,
     1_700_000_000, 1_700_000_000),
    ("00000000-0000-4000-8000-000000000002", "Bbbbbb2", "Café <b>&</b> \"quoted\"", "https://example.com/ü?a=1&b=2",
     "paused", LOGO, 142, 1_776_277_451, 1_777_212_131),
    ("00000000-0000-4000-8000-000000000003", "Ccccccc", "archived one", "https://example.com/old", "archived", None,
     7, 1_776_277_452, 1_776_277_452),
    ("00000000-0000-4000-8000-000000000004", "Ddddddd", "Summer promo", "http://example.org/x", "active", LOGO,
     12_345_678_901, 1_776_277_453, 1_799_999_999),
)
BASE = "https://qr.example.com/qr"


def _code_json(uuid, slug, label, destination, status, logo, scans, created, updated, base=BASE) -> str:
    logo_url = "null" if logo is None else f'"{base}/logo/{logo}.png"'
    return (f'{{"uuid":"{uuid}","type":"url","destination":{json.dumps(destination)},"scans":{scans},'
            f'"created_at":"{created}","logo":{logo_url},"label":{json.dumps(label)},"status":"{status}",'
            f'"slug":"{slug}","short_url":"{base}/p/{slug}","qr_image_url":"{base}/img/{slug}.png",'
            f'"updated_at":"{updated}"}}')


EXPECTED_ACTIVE = _code_json(*FIXED_CODES[3][:6], 12_345_678_901, "2026-04-15T18:24:13Z", "2027-01-15T07:59:59Z")
EXPECTED_PAUSED = _code_json(*FIXED_CODES[1][:6], 142, "2026-04-15T18:24:11Z", "2026-04-26T14:02:11Z")
EXPECTED_FIRST = _code_json(*FIXED_CODES[0][:6], 0, "2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z")
EXPECTED_ARCHIVED = _code_json(*FIXED_CODES[2][:6], 7, "2026-04-15T18:24:12Z", "2026-04-15T18:24:12Z")


@pytest.fixture
def listing(make_test_app) -> tuple[FlaskClient, dict[str, str]]:
    """Alice's four codes with every field fixed, and Bob's one code that must never show."""
    app = make_test_app(BASE_URL=BASE + "/")
    db = app.extensions["qrtrack"].db
    alice, bob = gen_user(db, "alice"), gen_user(db, "bob")
    gen_code(db, bob, "https://example.com/bob")
    for uuid, slug, label, destination, status, logo, scans, created, updated in FIXED_CODES:
        code = gen_code(db, alice)
        with db.write() as conn:
            code_store.update_code(conn, code.id, {
                "uuid": uuid, "slug": slug, "label": label, "destination": destination, "status": status,
                "logo": logo, "scan_count": scans, "created_at": created, "updated_at": updated})
    return app.test_client(), {"X-Api-Key": gen_key(db, alice)}


def listed(client: FlaskClient, headers: dict[str, str], query: str = "", **kwargs) -> bytes:
    response = client.get(f"/api.php{query}", headers=headers, **kwargs)
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_data()


def expected(codes: list[str], total: int, limit: int | None = None, offset: int = 0) -> bytes:
    limit_json = "null" if limit is None else str(limit)
    return f'{{"codes":[{",".join(codes)}],"total":{total},"limit":{limit_json},"offset":{offset}}}\n'.encode()


def test_list_answers_every_field_in_its_order_newest_first(listing):
    assert listed(*listing) == expected([EXPECTED_ACTIVE, EXPECTED_PAUSED, EXPECTED_FIRST], 3)


def test_list_pages_keep_the_bytes_of_each_code(listing):
    assert listed(*listing, "?limit=1&offset=1") == expected([EXPECTED_PAUSED], 3, limit=1, offset=1)
    assert listed(*listing, "?limit=2&offset=3") == expected([], 3, limit=2, offset=3)


def test_list_filters_keep_the_bytes_of_each_code(listing):
    assert listed(*listing, "?status=archived") == expected([EXPECTED_ARCHIVED], 1)
    assert listed(*listing, "?status=paused&label=caf") == expected([EXPECTED_PAUSED], 1)


def test_list_without_base_url_uses_the_request_origin(make_test_app):
    app = make_test_app()
    db = app.extensions["qrtrack"].db
    alice = gen_user(db)
    code = gen_code(db, alice)
    with db.write() as conn:
        code_store.update_code(conn, code.id, {"uuid": FIXED_CODES[3][0], "slug": "Ddddddd", "label": "Summer promo",
                                               "destination": "http://example.org/x", "logo": LOGO,
                                               "scan_count": 12_345_678_901, "created_at": 1_776_277_453,
                                               "updated_at": 1_799_999_999})
    base = "http://shared-host.example/~me/qrtrack"
    body = listed(app.test_client(), {"X-Api-Key": gen_key(db, alice)}, base_url=base)
    assert body == expected([_code_json(*FIXED_CODES[3][:5], LOGO, 12_345_678_901, "2026-04-15T18:24:13Z",
                                        "2027-01-15T07:59:59Z", base=base)], 1)


ESCAPED_TEXT = ("quote \" backslash \\ slash / tab \t nul \x00 del \x7f é ß € 𝄞 \u2028 \ud7ff "
                "</script><!-- &amp;")


@pytest.mark.parametrize("base_url", ["https://qr.example.com", "https://bücher.example/q\"r"])
def test_list_text_is_what_jsonify_makes_of_each_code_summary(make_test_app, backend, base_url):
    app = make_test_app(BASE_URL=base_url)
    db = app.extensions["qrtrack"].db
    alice = gen_user(db)
    # PostgreSQL cannot store NUL (the services refuse it in labels, and URLs cannot carry it unescaped).
    escaped_text = ESCAPED_TEXT if backend == "sqlite" else ESCAPED_TEXT.replace("\x00", "")
    for logo, label in ((LOGO, escaped_text), (None, ""), ("c\"d", "plain")):
        code = gen_code(db, alice)
        with db.write() as conn:
            code_store.update_code(conn, code.id, {"logo": logo, "label": label, "destination": f"https://example.com/{label}",
                                                   "scan_count": 2**40, "created_at": 0, "updated_at": 4_102_444_800})
    with db.read() as conn:
        full_rows = code_store.list_codes(conn, alice)
        summary_rows = code_store.list_code_summaries(conn, alice)
    with app.test_request_context("/api.php"):
        text = api.code_list_json(summary_rows, base_url)
        assert f"{text}\n" == jsonify([api.code_summary(row) for row in full_rows]).get_data(as_text=True)


def test_a_listed_code_reads_as_the_code_itself(client, api_headers):
    made = client.post("/api.php", headers=api_headers, json={"destination": "https://example.com/é",
                                                               "label": "Sommer <b>\"promo\"</b> 𝄞"}).get_json()
    listed_code = client.get("/api.php", headers=api_headers).get_json()["codes"][0]
    one = client.get(f"/api.php?uuid={made['uuid']}", headers=api_headers).get_json()
    assert listed_code == made
    assert listed_code == {**{name: one[name] for name in listed_code}, "scans": one["scan_count"]}


@pytest.mark.parametrize("epochs", [
    range(0, 3 * 86400, 997),  # the first days, across midnights
    range(951_782_400 - 5, 951_782_400 + 86400 * 2, 3331),  # 29 February 2000
    [1_776_277_451] * 3 + [4_102_444_799, 4_102_444_800, 253_402_300_799],  # repeats; 2099-12-31; 9999-12-31
])
def test_list_timestamps_read_as_isoformat_utc(epochs):
    timestamps = api.IsoTimestamps()
    assert [timestamps[epoch] for epoch in epochs] == [isoformat_utc(epoch) for epoch in epochs]
