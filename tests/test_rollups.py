"""Rollups: after any sequence of refreshes, the rollup tables hold what plain GROUP BYs over the scan log give."""
from __future__ import annotations

import random

import pytest
from sqlalchemy import text

from qrtrack import rollups
from qrtrack.store import analytics as analytics_store
from qrtrack.store import scans as scan_store
from qrtrack.store.db import Database

from .conftest import gen_code

pytestmark = pytest.mark.postgresql

DAY = 86400
NOW = 1776254400  # 2026-04-15 12:00:00 UTC
DEVICES = ["iPhone", "Android", "Mac"]
PLACES = [("DE", "Berlin"), ("FR", "Paris"), ("US", "Paris"), ("FR", None), (None, None)]


def random_scans(code_ids: list[int], count: int, *, rng: random.Random, first_day: int, last_day: int) -> list[dict]:
    """count scans, each of a code picked at random, so the codes' rows interleave in the log."""
    rows = []
    for _ in range(count):
        country, city = rng.choice(PLACES)
        day = rng.randint(first_day, last_day)
        rows.append({"code_id": rng.choice(code_ids), "ts": day * DAY + rng.randrange(DAY), "country": country,
                     "city": city, "device": rng.choice(DEVICES), "os": rng.choice(["iOS 17.4", ""]),
                     "browser": rng.choice(["Mobile Safari 17.4", ""]), "is_bot": rng.random() < 0.2,
                     "referrer_host": None, "user_agent": "", "visitor": f"v{rng.randrange(6)}"})
    return rows


def gen_scans(db: Database, rows: list[dict]) -> None:
    with db.write() as conn:
        scan_store.insert_scans(conn, rows)


def rollup_rows(db: Database) -> tuple[set, set]:
    with db.read() as conn:
        days = set(conn.execute(text(
            "SELECT code_id, day, human_scans, bot_scans, human_visitors, all_visitors FROM scan_rollup_days")))
        values = set(conn.execute(text("SELECT code_id, dimension, day, is_bot, value, scans FROM scan_rollup_values")))
    return days, values


def rows_from_the_scan_log(db: Database) -> tuple[set, set]:
    """The rollup rows by definition, counted from the whole scan log."""
    with db.read() as conn:
        days = set(conn.execute(text(
            "SELECT code_id, ts / 86400, SUM(CASE WHEN is_bot THEN 0 ELSE 1 END),"
            " SUM(CASE WHEN is_bot THEN 1 ELSE 0 END),"
            " COUNT(DISTINCT CASE WHEN is_bot THEN NULL ELSE visitor END), COUNT(DISTINCT visitor)"
            " FROM scans GROUP BY 1, 2")))
        values = set()
        for dimension in rollups.DIMENSIONS:
            value = ("CASE WHEN COALESCE(city, '') = '' THEN '' ELSE COALESCE(country, '') || '|' || city END"
                     if dimension == "city" else f"COALESCE({dimension}, '')")
            values |= {(code_id, dimension, day, is_bot, value, scans) for code_id, day, is_bot, value, scans in
                       conn.execute(text(f"SELECT code_id, ts / 86400, is_bot, {value}, COUNT(*) FROM scans"
                                         " GROUP BY 1, 2, 3, 4"))}
    return days, values


def test_one_batch_of_several_codes_merges_each_codes_scans_into_its_own_rows(db, alice, monkeypatch):
    rng = random.Random(7)
    today = NOW // DAY
    first, second, third, untouched = (gen_code(db, alice).id for _ in range(4))
    gen_scans(db, random_scans([first, second, untouched], 120, rng=rng, first_day=today - 6, last_day=today - 2))
    assert rollups.refresh_rollups(db, now=NOW) == 120

    # Later scans of three codes, interleaved, on days already rolled up and on new ones: one batch.
    batches = []
    advance = analytics_store.advance_rollup_watermark
    monkeypatch.setattr(analytics_store, "advance_rollup_watermark",
                        lambda conn, **ids: batches.append(ids) or advance(conn, **ids))
    gen_scans(db, random_scans([first, second, third], 300, rng=rng, first_day=today - 4, last_day=today - 1))
    assert rollups.refresh_rollups(db, now=NOW) == 300
    assert len(batches) == 1

    days, values = rollup_rows(db)
    assert {row[0] for row in days} == {first, second, third, untouched}
    assert (days, values) == rows_from_the_scan_log(db)


def test_scans_split_over_many_small_batches_add_up_the_same(db, alice, monkeypatch):
    monkeypatch.setattr(rollups, "ROLLUP_BATCH", 9)
    rng = random.Random(8)
    today = NOW // DAY
    code_ids = [gen_code(db, alice).id for _ in range(3)]
    gen_scans(db, random_scans(code_ids, 200, rng=rng, first_day=today - 3, last_day=today - 1))
    assert rollups.refresh_rollups(db, now=NOW) == 200
    assert rollup_rows(db) == rows_from_the_scan_log(db)


def test_scans_after_the_newest_scans_code_is_deleted_are_counted(db, alice):
    """Deleting the code that had the newest scans frees their ids; had SQLite handed those ids out again, the new
    scans would sit at or below the watermark and never be counted (the analytics showed 2 scans of 5)."""
    today = NOW // DAY
    kept, deleted = gen_code(db, alice).id, gen_code(db, alice).id
    rng = random.Random(9)
    gen_scans(db, random_scans([kept], 4, rng=rng, first_day=today - 3, last_day=today - 2))
    gen_scans(db, random_scans([deleted], 6, rng=rng, first_day=today - 2, last_day=today - 1))
    assert rollups.refresh_rollups(db, now=NOW) == 10
    with db.write() as conn:
        conn.execute(text("DELETE FROM codes WHERE id = :id"), {"id": deleted})
    gen_scans(db, random_scans([kept], 5, rng=rng, first_day=today - 1, last_day=today - 1))
    assert rollups.refresh_rollups(db, now=NOW) == 5
    assert rollup_rows(db) == rows_from_the_scan_log(db)


def test_a_code_deleted_while_its_scans_are_being_counted_is_left_out_not_a_500(db, alice, monkeypatch):
    """Each batch is tallied outside the write lock: a code deleted meanwhile had its rollup rows inserted after it
    was gone, and the foreign key failed the refresh, and with it /analytics, while deletes went on."""
    today = NOW // DAY
    kept, deleted = gen_code(db, alice).id, gen_code(db, alice).id
    rng = random.Random(10)
    gen_scans(db, random_scans([deleted], 4, rng=rng, first_day=today - 2, last_day=today - 2))
    gen_scans(db, random_scans([kept], 3, rng=rng, first_day=today - 1, last_day=today - 1))
    count_visitors = rollups.count_visitors

    def count_then_delete(conn, touched):
        found = count_visitors(conn, touched)
        with db.write() as other:
            other.execute(text("DELETE FROM codes WHERE id = :id"), {"id": deleted})
        return found

    monkeypatch.setattr(rollups, "count_visitors", count_then_delete)
    rollups.refresh_rollups(db, now=NOW)
    assert rollup_rows(db) == rows_from_the_scan_log(db)
