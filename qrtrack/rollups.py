"""Keep the scan rollup tables current: count the scans past the watermark into per-code, per-UTC-day rows.

The rollups are brought up to date when analytics are read, never when a scan is recorded, so the
scan path does no extra work. Counts add up; distinct visitors do not, so a day that gets new
scans has its visitors counted again from the scan log.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection

from .clock import now_epoch
from .store import analytics as analytics_store
from .store.db import Database

# Scans younger than this are left for reports to read from the log: on PostgreSQL and MySQL ids are
# handed out before commit, so a lower id can still become visible after a higher one, and no scan's
# transaction lasts this long.
SETTLE_SECONDS = 30
ROLLUP_BATCH = 50_000  # scan ids per batch: each batch is one short write transaction
DIMENSIONS = analytics_store.ROLLUP_DIMENSIONS


@dataclass
class CodeTally:
    """One code's part of a Tally, keyed as the rows of that code in the rollup tables."""

    days: dict[int, list[int]] = field(default_factory=dict)  # day: [human, bot]
    values: Counter = field(default_factory=Counter)  # (dimension, day, is_bot, value): scans


@dataclass
class Tally:
    """Scan rows counted the way the rollup tables count them."""

    days: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (code, day): [human, bot]
    values: Counter = field(default_factory=Counter)  # (code, dimension, day, is_bot, value): scans

    def scans(self) -> int:
        return sum(human + bot for human, bot in self.days.values())

    def restricted_to(self, code_ids: set[int], first_day: int, last_day: int) -> Tally:
        """The part of the tally about these codes and days."""
        return Tally(days={key: counts for key, counts in self.days.items()
                           if key[0] in code_ids and first_day <= key[1] <= last_day},
                     values=Counter({key: scans for key, scans in self.values.items()
                                     if key[0] in code_ids and first_day <= key[2] <= last_day}))

    def touched_days(self) -> dict[int, list[int]]:
        touched: dict[int, list[int]] = {}
        for code_id, day in sorted(self.days):
            touched.setdefault(code_id, []).append(day)
        return touched

    def split_by_code(self) -> dict[int, CodeTally]:
        """Each code's part of the tally, in one pass over it."""
        parts: dict[int, CodeTally] = {}
        for (code_id, day), counts in self.days.items():
            parts.setdefault(code_id, CodeTally()).days[day] = counts
        for (code_id, *key), scans in self.values.items():
            parts.setdefault(code_id, CodeTally()).values[tuple(key)] += scans
        return parts


def refresh_rollups(db: Database, *, now: int | None = None, budget_seconds: float | None = None) -> int:
    """Count every scan settled since the watermark into the rollup tables; returns how many were added.

    Each batch is read outside the write lock, so scans keep being recorded meanwhile; when two
    requests race, the one that moves the watermark first wins and the other stops. With a budget,
    no batch starts once it is spent (a backlog of millions is then worked off over several calls).
    """
    started = time.monotonic()
    settled_before = (now_epoch() if now is None else now) - SETTLE_SECONDS
    with db.read() as conn:
        watermark = analytics_store.get_rollup_watermark(conn)
        last_id = analytics_store.get_last_scan_id_before(conn, after_id=watermark, before_ts=settled_before)
    added = 0
    while last_id is not None and watermark < last_id:
        if added and budget_seconds is not None and time.monotonic() - started > budget_seconds:
            break
        batch_end = min(watermark + ROLLUP_BATCH, last_id)
        with db.read() as conn:
            tally = tally_scans(conn, after_id=watermark, last_id=batch_end)
            visitors = count_visitors(conn, tally.touched_days())
        with db.write() as conn:
            if not analytics_store.advance_rollup_watermark(conn, from_id=watermark, to_id=batch_end):
                return added
            parts = tally.split_by_code()
            # A code deleted since the tally took its scans with it: its part is counted into nothing.
            for code_id in sorted(analytics_store.list_existing_code_ids(conn, parts)):
                _merge_into_rollups(conn, code_id, parts[code_id], visitors)
        added += tally.scans()
        watermark = batch_end
    return added


def tally_scans(conn: Connection, *, after_id: int, last_id: int | None = None) -> Tally:
    """Count the scans with after_id < id <= last_id the way the rollup tables count them (GROUP BYs in SQL)."""
    tally = Tally()
    for row in analytics_store.count_scans_by_rollup_key(conn, after_id=after_id, last_id=last_id):
        tally.days.setdefault((row.code_id, int(row.day)), [0, 0])[bool(row.is_bot)] += int(row.scans)
    for dimension in DIMENSIONS:
        rows = analytics_store.count_scans_by_rollup_key(conn, after_id=after_id, last_id=last_id, dimension=dimension)
        for row in rows:
            tally.values[(row.code_id, dimension, int(row.day), bool(row.is_bot), row.value)] += int(row.scans)
    return tally


def count_visitors(conn: Connection, touched: dict[int, list[int]]) -> dict[tuple[int, int], tuple[int, int]]:
    """(human, all) distinct visitors per (code, day), counted from the scan log for the touched days."""
    visitors = {}
    for code_id, days in touched.items():
        for first_day, last_day in day_runs(days):
            for row in analytics_store.count_visitors_by_day(conn, code_id, first_day=first_day, last_day=last_day):
                visitors[(code_id, int(row.day))] = (int(row.human_visitors), int(row.all_visitors))
    return visitors


def day_runs(days: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted day numbers as (first, last) runs of consecutive days."""
    first = previous = days[0]
    for day in days[1:]:
        if day != previous + 1:
            yield first, previous
            first = day
        previous = day
    yield first, previous


def _merge_into_rollups(conn: Connection, code_id: int, part: CodeTally,
                        visitors: dict[tuple[int, int], tuple[int, int]]) -> None:
    """Rewrite one code's rollup rows for the days its part of the tally covers, with that part added."""
    first_day, last_day = min(part.days), max(part.days)
    days = {row.day: [row.human_scans, row.bot_scans, row.human_visitors, row.all_visitors]
            for row in analytics_store.list_rollup_days(conn, code_id, first_day=first_day, last_day=last_day)}
    for day, (human, bot) in part.days.items():
        counts = days.setdefault(day, [0, 0, 0, 0])
        counts[:] = [counts[0] + human, counts[1] + bot, *visitors[(code_id, day)]]
    stored = analytics_store.list_rollup_values(conn, code_id, first_day=first_day, last_day=last_day)
    values = Counter({(row.dimension, row.day, bool(row.is_bot), row.value): row.scans for row in stored})
    values.update(part.values)
    analytics_store.delete_rollup_days(conn, code_id, first_day=first_day, last_day=last_day)
    analytics_store.insert_rollup_days(conn, [
        {"code_id": code_id, "day": day, "human_scans": human, "bot_scans": bot, "human_visitors": human_visitors,
         "all_visitors": all_visitors} for day, (human, bot, human_visitors, all_visitors) in days.items()])
    analytics_store.delete_rollup_values(conn, code_id, first_day=first_day, last_day=last_day)
    analytics_store.insert_rollup_values(conn, [
        {"code_id": code_id, "dimension": dimension, "day": day, "is_bot": is_bot, "value": value, "scans": scans}
        for (dimension, day, is_bot, value), scans in values.items()])
