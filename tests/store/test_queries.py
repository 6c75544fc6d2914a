"""The data layer: queries whose shape callers rely on, tested on SQLite and PostgreSQL without Flask requests."""
from __future__ import annotations

import pytest
from sqlalchemy import event, select, text

from qrtrack.store import accounts as account_store
from qrtrack.store import codes as code_store
from qrtrack.store import keys as key_store
from qrtrack.store import scans as scan_store
from qrtrack.store.schema import scans

from ..conftest import gen_code, gen_user

pytestmark = pytest.mark.postgresql


def test_code_summaries_come_newest_first_in_the_api_field_order(db, alice):
    older = gen_code(db, alice, label="older")
    newer = gen_code(db, alice, label="newer")
    gen_code(db, gen_user(db, "bob"), label="not alice's")
    with db.write() as conn:
        code_store.update_code(conn, older.id, {"created_at": newer.created_at - 60, "status": "paused"})
        rows = code_store.list_code_summaries(conn, alice)
        active = code_store.list_code_summaries(conn, alice, statuses=("active",))
        second = code_store.list_code_summaries(conn, alice, limit=1, offset=1)
    assert rows[0]._fields == tuple(column.name for column in code_store.CODE_SUMMARY_COLUMNS)
    assert [row.label for row in rows] == ["newer", "older"]
    assert [row.label for row in active] == ["newer"] and [row.label for row in second] == ["older"]
    assert tuple(rows[0]) == tuple(getattr(newer, column.name) for column in code_store.CODE_SUMMARY_COLUMNS)


def test_deleting_api_calls_beyond_the_newest_leaves_exactly_those_and_other_users_alone(db, alice):
    bob = gen_user(db, "bob")
    with db.write() as conn:
        for number in range(30):  # ts ties in threes, settled by id
            for user_id in (alice, bob):
                key_store.insert_api_call(conn, {"user_id": user_id, "ts": 1_700_000_000 + number // 3, "method": "GET",
                                                 "path": f"/api.php?n={number}", "status": 200, "duration_ms": 1})
        assert key_store.delete_api_calls_beyond(conn, alice, keep=10) == 20
        assert key_store.delete_api_calls_beyond(conn, alice, keep=10) == 0
        assert key_store.delete_api_calls_beyond(conn, alice, keep=50) == 0
        alice_paths = [row.path for row in key_store.list_api_calls(conn, alice, limit=100)]
        bob_count = len(key_store.list_api_calls(conn, bob, limit=100))
    assert alice_paths == [f"/api.php?n={number}" for number in range(29, 19, -1)]
    assert bob_count == 30


def test_text_with_nul_finds_nothing_where_postgresql_would_refuse_the_query(db, alice):
    code = gen_code(db, alice, label="plain")
    with db.read() as conn:
        assert code_store.get_full_code_by_slug(conn, code.slug + "\x00") is None
        assert account_store.list_users_by_lowercase_username(conn, "alice\x00") == []
        assert code_store.list_codes(conn, alice, search="pla\x00") == []
        assert code_store.list_code_summaries(conn, alice, search="\x00") == []
        assert code_store.count_codes(conn, alice, search="\x00") == 0
    sql_store = scan_store.SqlAlchemyScanStore(db.engine)
    assert sql_store.find_target(code.slug) == (code.id, code.destination, "active")
    assert sql_store.find_target(code.slug + "\x00") is None and sql_store.find_logo("\x00") is None


def test_scan_store_fits_header_text_to_the_scan_log_columns(db, alice):
    """What visitors' headers put in a scan row must not fail the batch: NUL goes, over-long text is cut."""
    code = gen_code(db, alice)
    long_os = "Android " + "9" * 200
    row = {"code_id": code.id, "ts": 1_776_254_400, "country": "FR", "city": "Par\x00is", "device": "Android",
           "os": long_os, "browser": "Chrome\x00", "is_bot": False, "referrer_host": "news\x00.example",
           "user_agent": "Mozilla/5.0\x00" + "x" * 600, "visitor": "v"}
    scan_store.SqlAlchemyScanStore(db.engine).write([row, {**row, "os": "iOS 17.5"}])
    with db.read() as conn:
        stored = conn.execute(select(scans.c.city, scans.c.os, scans.c.browser, scans.c.referrer_host,
                                     scans.c.user_agent).order_by(scans.c.id)).all()
        assert code_store.get_full_code_by_slug(conn, code.slug).scan_count == 2
    assert stored[0] == ("Paris", long_os[:64], "Chrome", "news.example", ("Mozilla/5.0" + "x" * 600)[:512])
    assert stored[1].os == "iOS 17.5"


@pytest.mark.parametrize("outside_id", [2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**30])
def test_a_lookup_by_an_id_no_row_can_have_finds_nothing_instead_of_failing(db, alice, outside_id):
    """PostgreSQL's id columns are 32-bit and SQLite's driver refuses integers past 64 bits; an id from a URL,
    a form or a query string may be anything."""
    code = gen_code(db, alice)
    with db.write() as conn:
        assert account_store.get_user_by_id(conn, outside_id) is None
        assert key_store.get_active_key_for_user(conn, key_id=outside_id, user_id=alice) is None
        assert key_store.revoke_api_key(conn, key_id=outside_id, user_id=alice, now=1) == 0
        assert scan_store.list_scans(conn, code.id, limit=10, before_id=outside_id) is None
        assert account_store.get_user_by_id(conn, alice).username == "alice"


@pytest.mark.parametrize("search, found", [
    ("bücher", ["Bücher", "BÜCHER-Regal"]), ("BÜCHER", ["Bücher", "BÜCHER-Regal"]), ("Café", ["café", "CAFÉ"]),
    ("ÉCOLE", ["école.example"]), ("ΣΟΦΊΑ", ["σοφία"]), ("plain", ["PLAIN ascii"]), ("50%", ["50% off"]),
    ("a_b", ["A_B"]), ("\\", ["back\\slash"]),
])
def test_search_ignores_case_for_every_letter_and_takes_wildcards_literally(db, alice, search, found):
    labels = ["Bücher", "BÜCHER-Regal", "café", "CAFÉ", "σοφία", "PLAIN ascii", "50% off", "500 off", "A_B", "AxB",
              "back\\slash", "Buecher"]
    for label in labels:
        gen_code(db, alice, label=label)
    gen_code(db, alice, destination="https://école.example/")
    with db.read() as conn:
        listed = {row.label or row.destination for row in code_store.list_codes(conn, alice, search=search)}
        summaries = {row.label or row.destination for row in code_store.list_code_summaries(conn, alice, search=search)}
        count = code_store.count_codes(conn, alice, search=search)
    expected = {"https://école.example/" if label == "école.example" else label for label in found}
    assert listed == summaries == expected and count == len(expected)


def test_users_are_listed_by_name_regardless_of_case(db):
    for username in ("Zoe", "adam", "carol", "Bob"):
        gen_user(db, username)
    with db.read() as conn:
        assert [user.username for user in account_store.list_users(conn)] == ["adam", "Bob", "carol", "Zoe"]


def test_the_scan_store_knows_whether_the_database_is_at_the_schema_its_sql_is_for(db):
    """A lean handler writes only then (fastpath.lean_fast_path); behind the code, the full app migrates first.
    Asking runs no failing statement: PostgreSQL would log it as an ERROR, on every CGI scan of a new install."""
    sql_store = scan_store.SqlAlchemyScanStore(db.engine)
    failed = []
    event.listen(db.engine, "handle_error", lambda context: failed.append(context.statement))
    assert sql_store.has_current_schema()
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    assert not sql_store.has_current_schema()
    with db.write() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert not sql_store.has_current_schema()
    assert failed == []
