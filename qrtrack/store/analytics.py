"""The analytics queries: scan rollups, their watermark, and the scan-log reads reports need.

One function per query, each taking a connection and never committing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Row, case, delete, distinct, func, insert, or_, select, update

from .scans import SCAN_LOG_COLUMNS
from .schema import codes, rollup_watermarks, scan_rollup_days, scan_rollup_values, scans

SCANS_WATERMARK = "scans"
SECONDS_PER_DAY = 86400
ROLLUP_DIMENSIONS = ("country", "city", "device", "os", "browser")
ROLLUP_DIMENSION_COLUMNS = {"country": scans.c.country, "city": scans.c.city, "device": scans.c.device,
                            "os": scans.c.os, "browser": scans.c.browser}
ROLLUP_DAY_COLUMNS = (scan_rollup_days.c.day, scan_rollup_days.c.human_scans, scan_rollup_days.c.bot_scans,
                      scan_rollup_days.c.human_visitors, scan_rollup_days.c.all_visitors)
ROLLUP_VALUE_COLUMNS = (scan_rollup_values.c.dimension, scan_rollup_values.c.day, scan_rollup_values.c.is_bot,
                        scan_rollup_values.c.value, scan_rollup_values.c.scans)


def get_rollup_watermark(conn: Connection) -> int:
    """The id of the last scan counted in the rollup tables (0: none yet)."""
    query = select(rollup_watermarks.c.last_scan_id).where(rollup_watermarks.c.name == SCANS_WATERMARK)
    return conn.execute(query).scalar() or 0


def advance_rollup_watermark(conn: Connection, *, from_id: int, to_id: int) -> bool:
    """Move the watermark from from_id to to_id; False when another writer moved it first."""
    query = (update(rollup_watermarks)
             .where(rollup_watermarks.c.name == SCANS_WATERMARK, rollup_watermarks.c.last_scan_id == from_id)
             .values(last_scan_id=to_id))
    if conn.execute(query).rowcount == 1:
        return True
    exists = select(rollup_watermarks.c.name).where(rollup_watermarks.c.name == SCANS_WATERMARK)
    if from_id == 0 and conn.execute(exists).first() is None:
        conn.execute(insert(rollup_watermarks).values(name=SCANS_WATERMARK, last_scan_id=to_id))
        return True
    return False


def get_last_scan_id_before(conn: Connection, *, after_id: int, before_ts: int) -> int | None:
    """The highest scan id above after_id among scans older than before_ts (a primary-key range read)."""
    query = select(func.max(scans.c.id)).where(scans.c.id > after_id, scans.c.ts < before_ts)
    return conn.execute(query).scalar()


def count_scans_after(conn: Connection, *, after_id: int) -> int:
    return conn.execute(select(func.count()).select_from(scans).where(scans.c.id > after_id)).scalar_one()


def count_scans_by_rollup_key(conn: Connection, *, after_id: int, last_id: int | None = None,
                              dimension: str | None = None) -> list[Row]:
    """Scans with after_id < id <= last_id per code, UTC day, bot flag and, given a dimension, its rollup value.

    Only the primary key narrows the rows, so the read is a key range however many scans a code has.
    """
    keys = [scans.c.code_id, (scans.c.ts // SECONDS_PER_DAY).label("day"), scans.c.is_bot]
    if dimension is not None:
        keys.append(_rollup_value(dimension).label("value"))
    filters = [scans.c.id > after_id]
    if last_id is not None:
        filters.append(scans.c.id <= last_id)
    query = select(*keys, func.count().label("scans")).where(*filters).group_by(*keys)
    return list(conn.execute(query))


def _rollup_value(dimension: str):
    """What a scan counts under in a dimension: "" when unknown; a city keeps its country ("FR|Paris")."""
    if dimension == "city":
        return case((func.coalesce(scans.c.city, "") == "", ""),
                    else_=func.coalesce(scans.c.country, "") + "|" + scans.c.city)
    return func.coalesce(ROLLUP_DIMENSION_COLUMNS[dimension], "")


def count_visitors_by_day(conn: Connection, code_id: int, *, first_day: int, last_day: int) -> list[Row]:
    """Per UTC day of one code: distinct visitors among human scans, and among all scans."""
    day = (scans.c.ts // SECONDS_PER_DAY).label("day")
    query = (select(day,
                    func.count(distinct(case((scans.c.is_bot.is_(False), scans.c.visitor)))).label("human_visitors"),
                    func.count(distinct(scans.c.visitor)).label("all_visitors"))
             .where(scans.c.code_id == code_id, scans.c.ts >= first_day * SECONDS_PER_DAY,
                    scans.c.ts < (last_day + 1) * SECONDS_PER_DAY)
             .group_by(day))
    return list(conn.execute(query))


def list_rollup_days(conn: Connection, code_id: int, *, first_day: int, last_day: int) -> list[Row]:
    query = select(*ROLLUP_DAY_COLUMNS).where(
        scan_rollup_days.c.code_id == code_id, scan_rollup_days.c.day.between(first_day, last_day))
    return list(conn.execute(query))


def delete_rollup_days(conn: Connection, code_id: int, *, first_day: int, last_day: int) -> None:
    conn.execute(delete(scan_rollup_days).where(
        scan_rollup_days.c.code_id == code_id, scan_rollup_days.c.day.between(first_day, last_day)))


def insert_rollup_days(conn: Connection, rows: list[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(insert(scan_rollup_days), rows)


def list_rollup_values(conn: Connection, code_id: int, *, first_day: int, last_day: int) -> list[Row]:
    query = select(*ROLLUP_VALUE_COLUMNS).where(
        scan_rollup_values.c.code_id == code_id, scan_rollup_values.c.day.between(first_day, last_day))
    return list(conn.execute(query))


def delete_rollup_values(conn: Connection, code_id: int, *, first_day: int, last_day: int) -> None:
    conn.execute(delete(scan_rollup_values).where(
        scan_rollup_values.c.code_id == code_id, scan_rollup_values.c.day.between(first_day, last_day)))


def insert_rollup_values(conn: Connection, rows: list[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(insert(scan_rollup_values), rows)


def _in_scope(code_id_column, *, code_id: int | None, owner_id: int | None):
    """One code, or every code of one owner."""
    if code_id is not None:
        return code_id_column == code_id
    return code_id_column.in_(select(codes.c.id).where(codes.c.owner_id == owner_id))


def sum_rollup_days_by_day(conn: Connection, *, code_id: int | None = None, owner_id: int | None = None,
                           first_day: int, last_day: int) -> list[Row]:
    """Per day: scans and visitors with and without bots, added up over the codes in scope."""
    table = scan_rollup_days.c
    query = (select(table.day, func.sum(table.human_scans).label("human_scans"),
                    func.sum(table.bot_scans).label("bot_scans"),
                    func.sum(table.human_visitors).label("human_visitors"),
                    func.sum(table.all_visitors).label("all_visitors"))
             .where(_in_scope(table.code_id, code_id=code_id, owner_id=owner_id),
                    table.day.between(first_day, last_day))
             .group_by(table.day))
    return list(conn.execute(query))


def sum_rollup_days_by_code(conn: Connection, *, owner_id: int, first_day: int, last_day: int) -> list[Row]:
    """Per code of the owner with scans in the days: scans with and without bots."""
    table = scan_rollup_days.c
    query = (select(table.code_id, func.sum(table.human_scans).label("human_scans"),
                    func.sum(table.bot_scans).label("bot_scans"))
             .where(_in_scope(table.code_id, code_id=None, owner_id=owner_id), table.day.between(first_day, last_day))
             .group_by(table.code_id))
    return list(conn.execute(query))


def sum_rollup_values(conn: Connection, *, code_id: int | None = None, owner_id: int | None = None,
                      dimension: str, first_day: int, last_day: int, include_bots: bool) -> list[Row]:
    """Scans per value of one dimension over the days and codes in scope."""
    table = scan_rollup_values.c
    # Naming both bot flags lets the (code_id, dimension, is_bot, day) key reach the days as two ranges.
    filters = [_in_scope(table.code_id, code_id=code_id, owner_id=owner_id), table.dimension == dimension,
               table.is_bot.in_([False, True] if include_bots else [False]), table.day.between(first_day, last_day)]
    query = select(table.value, func.sum(table.scans).label("scans")).where(*filters).group_by(table.value)
    return list(conn.execute(query))


def list_code_ids(conn: Connection, owner_id: int) -> set[int]:
    return set(conn.execute(select(codes.c.id).where(codes.c.owner_id == owner_id)).scalars())


def list_existing_code_ids(conn: Connection, code_ids: Iterable[int]) -> set[int]:
    """Those of code_ids whose code is still there."""
    return set(conn.execute(select(codes.c.id).where(codes.c.id.in_(list(code_ids)))).scalars())


def list_code_names(conn: Connection, owner_id: int, code_ids: Iterable[int]) -> list[Row]:
    query = select(codes.c.id, codes.c.uuid, codes.c.slug, codes.c.label).where(
        codes.c.owner_id == owner_id, codes.c.id.in_(list(code_ids)))
    return list(conn.execute(query))


def list_latest_scans(conn: Connection, *, code_id: int | None = None, owner_id: int | None = None, start: int,
                      end: int, include_bots: bool, limit: int) -> list[Row]:
    """The newest scans in [start, end) of the codes in scope, with their code's uuid, slug and label."""
    filters = [_in_scope(scans.c.code_id, code_id=code_id, owner_id=owner_id), scans.c.ts >= start, scans.c.ts < end]
    if not include_bots:
        filters.append(scans.c.is_bot.is_(False))
    query = (select(*SCAN_LOG_COLUMNS, codes.c.uuid, codes.c.slug, codes.c.label)
             .join(codes, codes.c.id == scans.c.code_id).where(*filters)
             .order_by(scans.c.ts.desc(), scans.c.id.desc()).limit(limit))
    return list(conn.execute(query))


def list_scan_log_page(conn: Connection, code_id: int, *, start: int, end: int, after: tuple[int, int] | None,
                       limit: int, include_bots: bool = True) -> list[Row]:
    """Up to limit scans of a code in [start, end), oldest first, after the (ts, id) keyset cursor."""
    filters = [scans.c.code_id == code_id, scans.c.ts >= start, scans.c.ts < end]
    if not include_bots:
        filters.append(scans.c.is_bot.is_(False))
    if after is not None:
        after_ts, after_id = after
        # ts >= after_ts lets the (code_id, ts) index start at the cursor; the OR settles equal timestamps.
        filters += [scans.c.ts >= after_ts, or_(scans.c.ts > after_ts, scans.c.id > after_id)]
    query = select(*SCAN_LOG_COLUMNS).where(*filters).order_by(scans.c.ts, scans.c.id).limit(limit)
    return list(conn.execute(query))
