"""The data layer: queries whose shape callers rely on, tested on a real SQLite file without Flask requests."""
from __future__ import annotations

import pytest

from qrtrack import store

from .conftest import gen_code, gen_user

pytestmark = pytest.mark.postgresql


def test_code_summaries_come_newest_first_in_the_api_field_order(db, alice):
    older = gen_code(db, alice, label="older")
    newer = gen_code(db, alice, label="newer")
    gen_code(db, gen_user(db, "bob"), label="not alice's")
    with db.write() as conn:
        store.update_code(conn, older.id, {"created_at": newer.created_at - 60, "status": "paused"})
        rows = store.list_code_summaries(conn, alice)
        active = store.list_code_summaries(conn, alice, statuses=("active",))
        second = store.list_code_summaries(conn, alice, limit=1, offset=1)
    assert rows[0]._fields == tuple(column.name for column in store.CODE_SUMMARY_COLUMNS)
    assert [row.label for row in rows] == ["newer", "older"]
    assert [row.label for row in active] == ["newer"] and [row.label for row in second] == ["older"]
    assert tuple(rows[0]) == tuple(getattr(newer, column.name) for column in store.CODE_SUMMARY_COLUMNS)


def test_deleting_api_calls_beyond_the_newest_leaves_exactly_those_and_other_users_alone(db, alice):
    bob = gen_user(db, "bob")
    with db.write() as conn:
        for number in range(30):  # ts ties in threes, settled by id
            for user_id in (alice, bob):
                store.insert_api_call(conn, {"user_id": user_id, "ts": 1_700_000_000 + number // 3, "method": "GET",
                                             "path": f"/api.php?n={number}", "status": 200, "duration_ms": 1})
        assert store.delete_api_calls_beyond(conn, alice, keep=10) == 20
        assert store.delete_api_calls_beyond(conn, alice, keep=10) == 0
        assert store.delete_api_calls_beyond(conn, alice, keep=50) == 0
        alice_paths = [row.path for row in store.list_api_calls(conn, alice, limit=100)]
        bob_count = len(store.list_api_calls(conn, bob, limit=100))
    assert alice_paths == [f"/api.php?n={number}" for number in range(29, 19, -1)]
    assert bob_count == 30
