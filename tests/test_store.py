"""The data layer: queries whose shape callers rely on, tested on a real SQLite file without Flask requests."""
from __future__ import annotations

from qrtrack import store

from .conftest import gen_code, gen_user


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
