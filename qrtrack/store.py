"""Every query QR Track runs: one function per query, each taking a connection and never committing."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    case,
    delete,
    distinct,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)

from . import scanstore
from .schema import api_calls, api_keys, codes, rollup_watermarks, scan_rollup_days, scan_rollup_values, scans, users

CODE_COLUMNS = (
    codes.c.id, codes.c.uuid, codes.c.slug, codes.c.owner_id, codes.c.type, codes.c.destination,
    codes.c.label, codes.c.logo, codes.c.status, codes.c.created_at, codes.c.updated_at, codes.c.scan_count,
)
SCAN_LOG_COLUMNS = (
    scans.c.id, scans.c.ts, scans.c.city, scans.c.country, scans.c.device, scans.c.os, scans.c.browser,
    scans.c.is_bot, scans.c.referrer_host,
)
USER_COLUMNS = (users.c.id, users.c.username, users.c.password_hash, users.c.is_admin, users.c.is_active,
                users.c.created_at)
KEY_COLUMNS = (api_keys.c.id, api_keys.c.user_id, api_keys.c.name, api_keys.c.prefix, api_keys.c.created_at,
               api_keys.c.last_used_at, api_keys.c.revoked_at)
SORTABLE_CODE_COLUMNS = {"created": codes.c.created_at, "scans": codes.c.scan_count, "label": codes.c.label,
                         "updated": codes.c.updated_at}


# --- users -------------------------------------------------------------------------------------

def insert_user(conn: Connection, *, username: str, password_hash: str, is_admin: bool, now: int) -> int:
    result = conn.execute(insert(users).values(
        username=username, password_hash=password_hash, is_admin=is_admin, is_active=True, created_at=now))
    return result.inserted_primary_key[0]


def get_user_by_id(conn: Connection, user_id: int) -> Row | None:
    return conn.execute(select(*USER_COLUMNS).where(users.c.id == user_id)).first()


def get_user_by_username(conn: Connection, username: str) -> Row | None:
    return conn.execute(select(*USER_COLUMNS).where(users.c.username == username)).first()


def list_users(conn: Connection) -> list[Row]:
    return list(conn.execute(select(*USER_COLUMNS).order_by(users.c.username)))


def count_users(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(users)).scalar_one()


def count_active_admins(conn: Connection) -> int:
    query = select(func.count()).select_from(users).where(users.c.is_admin.is_(True), users.c.is_active.is_(True))
    return conn.execute(query).scalar_one()


def update_user(conn: Connection, user_id: int, values: Mapping[str, Any]) -> int:
    return conn.execute(update(users).where(users.c.id == user_id).values(**values)).rowcount


def delete_user(conn: Connection, user_id: int) -> int:
    return conn.execute(delete(users).where(users.c.id == user_id)).rowcount


# --- api keys ----------------------------------------------------------------------------------

def insert_api_key(conn: Connection, *, user_id: int, name: str, prefix: str, key_hash: str, now: int) -> int:
    result = conn.execute(insert(api_keys).values(
        user_id=user_id, name=name, prefix=prefix, key_hash=key_hash, created_at=now))
    return result.inserted_primary_key[0]


def get_active_key_by_hash(conn: Connection, key_hash: str) -> Row | None:
    """The unrevoked key with this hash, joined to its enabled owner."""
    query = (
        select(api_keys.c.id, api_keys.c.user_id, api_keys.c.name, api_keys.c.key_hash, api_keys.c.last_used_at)
        .join(users, users.c.id == api_keys.c.user_id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None), users.c.is_active.is_(True))
    )
    return conn.execute(query).first()


def get_active_key_for_user(conn: Connection, *, key_id: int, user_id: int) -> Row | None:
    query = (
        select(api_keys.c.id, api_keys.c.user_id, api_keys.c.name, api_keys.c.last_used_at)
        .join(users, users.c.id == api_keys.c.user_id)
        .where(api_keys.c.id == key_id, api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None),
               users.c.is_active.is_(True))
    )
    return conn.execute(query).first()


def list_api_keys(conn: Connection, user_id: int) -> list[Row]:
    query = select(*KEY_COLUMNS).where(api_keys.c.user_id == user_id).order_by(api_keys.c.id.desc())
    return list(conn.execute(query))


def touch_api_key(conn: Connection, key_id: int, now: int) -> None:
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))


def revoke_api_key(conn: Connection, *, key_id: int, user_id: int, now: int) -> int:
    query = (update(api_keys)
             .where(api_keys.c.id == key_id, api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
             .values(revoked_at=now))
    return conn.execute(query).rowcount


# --- codes -------------------------------------------------------------------------------------

def insert_code(conn: Connection, values: Mapping[str, Any]) -> int:
    return conn.execute(insert(codes).values(**values)).inserted_primary_key[0]


def slug_exists(conn: Connection, slug: str) -> bool:
    return conn.execute(select(codes.c.id).where(codes.c.slug == slug)).first() is not None


def get_full_code_by_slug(conn: Connection, slug: str) -> Row | None:
    return conn.execute(select(*CODE_COLUMNS).where(codes.c.slug == slug)).first()


def get_code_by_uuid(conn: Connection, *, uuid: str, owner_id: int) -> Row | None:
    query = select(*CODE_COLUMNS).where(codes.c.uuid == uuid, codes.c.owner_id == owner_id)
    return conn.execute(query).first()


def _code_filters(owner_id: int, *, search: str | None, statuses: Iterable[str] | None) -> list:
    filters = [codes.c.owner_id == owner_id]
    if statuses:
        filters.append(codes.c.status.in_(list(statuses)))
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        filters.append(or_(codes.c.label.ilike(pattern, escape="\\"),
                           codes.c.destination.ilike(pattern, escape="\\"),
                           codes.c.slug == search))
    return filters


def list_codes(conn: Connection, owner_id: int, *, search: str | None = None,
               statuses: Iterable[str] | None = None, sort: str = "created", descending: bool = True,
               limit: int | None = None, offset: int = 0) -> list[Row]:
    column = SORTABLE_CODE_COLUMNS[sort]
    order = (column.desc(), codes.c.id.desc()) if descending else (column.asc(), codes.c.id.asc())
    query = (select(*CODE_COLUMNS).where(*_code_filters(owner_id, search=search, statuses=statuses))
             .order_by(*order).offset(offset))
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query))


def count_codes(conn: Connection, owner_id: int, *, search: str | None = None,
                statuses: Iterable[str] | None = None) -> int:
    query = select(func.count()).select_from(codes).where(
        *_code_filters(owner_id, search=search, statuses=statuses))
    return conn.execute(query).scalar_one()


def update_code(conn: Connection, code_id: int, values: Mapping[str, Any]) -> int:
    return conn.execute(update(codes).where(codes.c.id == code_id).values(**values)).rowcount


def delete_code(conn: Connection, code_id: int) -> int:
    return conn.execute(delete(codes).where(codes.c.id == code_id)).rowcount


def count_codes_using_logo(conn: Connection, logo: str) -> int:
    return conn.execute(select(func.count()).select_from(codes).where(codes.c.logo == logo)).scalar_one()


# --- scans -------------------------------------------------------------------------------------

def insert_scans(conn: Connection, rows: list[Mapping[str, Any]]) -> None:
    """Insert scan rows and keep each code's scan_count in step, in the caller's transaction."""
    if not rows:
        return
    conn.execute(text(scanstore.INSERT_SCAN_SQL), [{column: row.get(column) for column in scanstore.SCAN_COLUMNS}
                                                   for row in rows])
    conn.execute(text(scanstore.COUNT_SCANS_SQL), scanstore.scans_per_code(rows))


class SqlAlchemyScanStore:
    """The scan path's store for databases other than SQLite: the same SQL through the engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def find_target(self, slug: str) -> tuple[int, str, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(text(scanstore.FIND_SCAN_TARGET_SQL), {"slug": slug}).first()
        return tuple(row) if row is not None else None

    def find_logo(self, slug: str) -> tuple[str | None] | None:
        with self.engine.connect() as conn:
            row = conn.execute(text(scanstore.FIND_IMAGE_SOURCE_SQL), {"slug": slug}).first()
        return tuple(row) if row is not None else None

    def write(self, rows: list[Mapping[str, Any]]) -> None:
        with self.engine.begin() as conn:
            insert_scans(conn, rows)


def list_scans(conn: Connection, code_id: int, *, limit: int, before_id: int | None = None,
               start: int | None = None, end: int | None = None, include_bots: bool = True) -> list[Row]:
    """Newest first by (ts, id), which the (code_id, ts) index serves without sorting the whole log.

    before_id is the keyset cursor from the previous page: the last scan shown there.
    """
    filters = _scan_filters(code_id, start=start, end=end, include_bots=include_bots)
    if before_id is not None:
        cursor = select(scans.c.ts, scans.c.id).where(scans.c.id == before_id, scans.c.code_id == code_id)
        position = conn.execute(cursor).first()
        if position is None:
            return []
        filters.append(tuple_(scans.c.ts, scans.c.id) < tuple_(position.ts, position.id))
    query = (select(*SCAN_LOG_COLUMNS).where(*filters)
             .order_by(scans.c.ts.desc(), scans.c.id.desc()).limit(limit))
    return list(conn.execute(query))


def _scan_filters(code_id: int, *, start: int | None, end: int | None, include_bots: bool) -> list:
    filters = [scans.c.code_id == code_id]
    if not include_bots:
        filters.append(scans.c.is_bot.is_(False))
    if start is not None:
        filters.append(scans.c.ts >= start)
    if end is not None:
        filters.append(scans.c.ts < end)
    return filters


# --- api call log ------------------------------------------------------------------------------

def insert_api_call(conn: Connection, values: Mapping[str, Any]) -> None:
    conn.execute(insert(api_calls).values(**values))


def list_api_calls(conn: Connection, user_id: int, *, limit: int) -> list[Row]:
    query = (select(api_calls.c.id, api_calls.c.ts, api_calls.c.key_name, api_calls.c.method, api_calls.c.path,
                    api_calls.c.status, api_calls.c.duration_ms, api_calls.c.source)
             .where(api_calls.c.user_id == user_id).order_by(api_calls.c.id.desc()).limit(limit))
    return list(conn.execute(query))


def delete_api_calls_before(conn: Connection, ts: int) -> int:
    return conn.execute(delete(api_calls).where(and_(api_calls.c.ts < ts))).rowcount


# --- settings ----------------------------------------------------------------------------------

def count_codes_by_owner(conn: Connection) -> dict[int, int]:
    """Every owner's number of codes, whatever their status, for the users page."""
    query = select(codes.c.owner_id, func.count()).group_by(codes.c.owner_id)
    return {owner_id: count for owner_id, count in conn.execute(query)}


# --- analytics ---------------------------------------------------------------------------------

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
                       limit: int) -> list[Row]:
    """Up to limit scans of a code in [start, end), oldest first, after the (ts, id) keyset cursor."""
    filters = [scans.c.code_id == code_id, scans.c.ts >= start, scans.c.ts < end]
    if after is not None:
        after_ts, after_id = after
        # ts >= after_ts lets the (code_id, ts) index start at the cursor; the OR settles equal timestamps.
        filters += [scans.c.ts >= after_ts, or_(scans.c.ts > after_ts, scans.c.id > after_id)]
    query = select(*SCAN_LOG_COLUMNS).where(*filters).order_by(scans.c.ts, scans.c.id).limit(limit)
    return list(conn.execute(query))
