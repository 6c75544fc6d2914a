"""Every query QR Track runs: one function per query, each taking a connection and never committing."""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    delete,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from . import scanstore
from .db import UnicodeLower, current_revision
from .schema import MAX_INTEGER, api_calls, api_keys, codes, scans, users

LOGO_LOCK_SPACE = 0x51724C6F  # "QrLo": lock_logo's advisory locks, apart from db.py's migration lock

CODE_COLUMNS = (
    codes.c.id, codes.c.uuid, codes.c.slug, codes.c.owner_id, codes.c.type, codes.c.destination,
    codes.c.label, codes.c.logo, codes.c.status, codes.c.created_at, codes.c.updated_at, codes.c.scan_count,
)
CODE_SUMMARY_COLUMNS = (
    codes.c.uuid, codes.c.type, codes.c.destination, codes.c.scan_count, codes.c.created_at, codes.c.logo,
    codes.c.label, codes.c.status, codes.c.slug, codes.c.updated_at,
)
"""What the API shows of a code, in the order of its JSON fields, so a listing's rows unpack straight into it."""
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


def is_storable(value: str) -> bool:
    """False for text with NUL, which PostgreSQL refuses even as a query parameter.

    No stored value contains NUL, so a lookup of such text finds nothing on any database without asking.
    """
    return "\x00" not in value


def has_id(column: ColumnElement, value: int) -> ColumnElement[bool]:
    """column = value, for an id that came from outside (a URL, a form, a query string): never an error.

    The value is bound as a 64-bit integer: PostgreSQL's users, keys and codes ids are 32-bit (only scans and
    API calls have 64-bit ones), and bound as their own type a larger id fails as out of range instead of
    matching nothing. Past 64 bits no database stores it (SQLite's
    driver raises OverflowError), so it matches nothing without being sent.
    """
    if not -MAX_INTEGER - 1 <= value <= MAX_INTEGER:
        return false()
    return column == literal(value, BigInteger)


# --- users -------------------------------------------------------------------------------------

def insert_user(conn: Connection, *, username: str, password_hash: str, is_admin: bool, now: int) -> int:
    result = conn.execute(insert(users).values(
        username=username, password_hash=password_hash, is_admin=is_admin, is_active=True, created_at=now))
    return result.inserted_primary_key[0]


def get_user_by_id(conn: Connection, user_id: int) -> Row | None:
    return conn.execute(select(*USER_COLUMNS).where(has_id(users.c.id, user_id))).first()


def list_users_by_lowercase_username(conn: Connection, lowercase_username: str) -> list[Row]:
    """The users whose name, lowercased, is this (more than one only in databases from before names were
    unique regardless of case). Usernames are ASCII, which lower() folds alike on every database."""
    if not is_storable(lowercase_username):
        return []
    query = select(*USER_COLUMNS).where(func.lower(users.c.username) == lowercase_username).order_by(users.c.id)
    return list(conn.execute(query))


def lock_users_for_insert(conn: Connection) -> None:
    """Make other transactions that add users wait until this one ends, so a check for a name and the insert
    of it are one step. SQLite's write transactions (BEGIN IMMEDIATE) already wait for each other; on
    PostgreSQL this lock does not hold up reads, only other writes to users."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")


def list_users(conn: Connection) -> list[Row]:
    """By name regardless of case ("adam" before "Zoe"); usernames are ASCII, which lower() folds alike everywhere."""
    return list(conn.execute(select(*USER_COLUMNS).order_by(func.lower(users.c.username), users.c.id)))


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

def insert_api_key(conn: Connection, *, user_id: int, name: str, prefix: str, key_hash: str, now: int,
                   form_token: str | None = None) -> int:
    result = conn.execute(insert(api_keys).values(
        user_id=user_id, name=name, prefix=prefix, key_hash=key_hash, created_at=now, form_token=form_token))
    return result.inserted_primary_key[0]


def get_key_id_by_form_token(conn: Connection, *, user_id: int, form_token: str) -> int | None:
    query = select(api_keys.c.id).where(api_keys.c.user_id == user_id, api_keys.c.form_token == form_token)
    return conn.execute(query).scalar()


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
        .where(has_id(api_keys.c.id, key_id), api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None),
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
             .where(has_id(api_keys.c.id, key_id), api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
             .values(revoked_at=now))
    return conn.execute(query).rowcount


# --- codes -------------------------------------------------------------------------------------

def insert_code(conn: Connection, values: Mapping[str, Any]) -> int:
    return conn.execute(insert(codes).values(**values)).inserted_primary_key[0]


def slug_exists(conn: Connection, slug: str) -> bool:
    return conn.execute(select(codes.c.id).where(codes.c.slug == slug)).first() is not None


def get_full_code_by_slug(conn: Connection, slug: str) -> Row | None:
    if not is_storable(slug):
        return None
    return conn.execute(select(*CODE_COLUMNS).where(codes.c.slug == slug)).first()


def get_code_by_uuid(conn: Connection, *, uuid: str, owner_id: int) -> Row | None:
    query = select(*CODE_COLUMNS).where(codes.c.uuid == uuid, codes.c.owner_id == owner_id)
    return conn.execute(query).first()


def _code_filters(owner_id: int, *, search: str | None, statuses: Iterable[str] | None) -> list:
    filters = [codes.c.owner_id == owner_id]
    if statuses:
        filters.append(codes.c.status.in_(list(statuses)))
    if search and not is_storable(search):
        filters.append(false())
    elif search:
        pattern = UnicodeLower("%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        filters.append(or_(UnicodeLower(codes.c.label).like(pattern, escape="\\"),
                           UnicodeLower(codes.c.destination).like(pattern, escape="\\"),
                           codes.c.slug == search))
    return filters


def list_codes(conn: Connection, owner_id: int, *, search: str | None = None,
               statuses: Iterable[str] | None = None, sort: str = "created", descending: bool = True,
               limit: int | None = None, offset: int = 0) -> list[Row]:
    column = SORTABLE_CODE_COLUMNS[sort]
    order = (column.desc(), codes.c.id.desc()) if descending else (column.asc(), codes.c.id.asc())
    query = _codes_page(CODE_COLUMNS, owner_id, search=search, statuses=statuses, order=order, limit=limit,
                        offset=offset)
    return conn.execute(query).all()


def list_code_summaries(conn: Connection, owner_id: int, *, search: str | None = None,
                        statuses: Iterable[str] | None = None, limit: int | None = None,
                        offset: int = 0) -> list[Row]:
    """CODE_SUMMARY_COLUMNS of the owner's codes, newest first, fetched in one go for lists of thousands."""
    query = _codes_page(CODE_SUMMARY_COLUMNS, owner_id, search=search, statuses=statuses,
                        order=(codes.c.created_at.desc(), codes.c.id.desc()), limit=limit, offset=offset)
    return conn.execute(query).all()


def _codes_page(columns: Iterable, owner_id: int, *, search: str | None, statuses: Iterable[str] | None,
                order: tuple, limit: int | None, offset: int) -> Select:
    query = (select(*columns).where(*_code_filters(owner_id, search=search, statuses=statuses))
             .order_by(*order).offset(offset))
    return query if limit is None else query.limit(limit)


def count_codes(conn: Connection, owner_id: int, *, search: str | None = None,
                statuses: Iterable[str] | None = None) -> int:
    query = select(func.count()).select_from(codes).where(
        *_code_filters(owner_id, search=search, statuses=statuses))
    return conn.execute(query).scalar_one()


def is_logo_used(conn: Connection, logo: str) -> bool:
    """Whether any code, anyone's, shows this logo (logos are stored once per content hash)."""
    return conn.execute(select(codes.c.id).where(codes.c.logo == logo).limit(1)).first() is not None


def lock_logo(conn: Connection, logo: str) -> None:
    """Make other transactions that attach this logo to a code or delete its file wait until this one ends,
    so that "is its file there?" and "does a code still use it?" each see the other's committed result.
    SQLite's write transactions (BEGIN IMMEDIATE) already wait for each other; on PostgreSQL a
    transaction-scoped advisory lock on the logo, in a key space of its own, does the same."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"),
                     {"space": LOGO_LOCK_SPACE, "key": zlib.crc32(logo.encode()) - 2**31})


def list_used_logos(conn: Connection) -> set[str]:
    """Every logo some code shows, anyone's."""
    return set(conn.execute(select(codes.c.logo).where(codes.c.logo.is_not(None)).distinct()).scalars())


def update_code(conn: Connection, code_id: int, values: Mapping[str, Any]) -> int:
    return conn.execute(update(codes).where(codes.c.id == code_id).values(**values)).rowcount


def delete_code(conn: Connection, code_id: int) -> int:
    return conn.execute(delete(codes).where(codes.c.id == code_id)).rowcount


# --- scans -------------------------------------------------------------------------------------

def insert_scans(conn: Connection, rows: list[Mapping[str, Any]]) -> None:
    """Insert scan rows and keep each code's scan_count in step, in the caller's transaction."""
    if not rows:
        return
    conn.execute(text(scanstore.INSERT_SCAN_SQL), [scanstore.fit_scan_row(row) for row in rows])
    conn.execute(text(scanstore.COUNT_SCANS_SQL), scanstore.scans_per_code(rows))


class SqlAlchemyScanStore:
    """The scan path's store for databases other than SQLite: the same SQL through the engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def has_current_schema(self) -> bool:
        """As SqliteScanStore.has_current_schema."""
        try:
            with self.engine.connect() as conn:
                return current_revision(conn) == scanstore.SCHEMA_REVISION
        except SQLAlchemyError:
            return False

    def find_target(self, slug: str) -> tuple[int, str, str] | None:
        if not is_storable(slug):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(text(scanstore.FIND_SCAN_TARGET_SQL), {"slug": slug}).first()
        return tuple(row) if row is not None else None

    def find_logo(self, slug: str) -> tuple[str | None] | None:
        if not is_storable(slug):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(text(scanstore.FIND_IMAGE_SOURCE_SQL), {"slug": slug}).first()
        return tuple(row) if row is not None else None

    def write(self, rows: list[Mapping[str, Any]]) -> None:
        with self.engine.begin() as conn:
            insert_scans(conn, rows)

    def after_answer(self) -> None:
        """As SqliteScanStore.after_answer: nothing to do here, the database server keeps its own log."""
        return None

    def dispose(self) -> None:
        """Close the pooled connections (for tests and embedding programs that outlive the app)."""
        self.engine.dispose()


def list_scans(conn: Connection, code_id: int, *, limit: int, before_id: int | None = None,
               start: int | None = None, end: int | None = None, include_bots: bool = True) -> list[Row] | None:
    """Newest first by (ts, id), which the (code_id, ts) index serves without sorting the whole log.

    before_id is the keyset cursor from the previous page: the last scan shown there. None when it is not
    a scan of this code.
    """
    filters = _scan_filters(code_id, start=start, end=end, include_bots=include_bots)
    if before_id is not None:
        cursor = select(scans.c.ts, scans.c.id).where(has_id(scans.c.id, before_id), scans.c.code_id == code_id)
        position = conn.execute(cursor).first()
        if position is None:
            return None
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

def insert_api_call(conn: Connection, values: Mapping[str, Any]) -> int:
    return conn.execute(insert(api_calls).values(**values)).inserted_primary_key[0]


def delete_api_calls_beyond(conn: Connection, user_id: int, *, keep: int) -> int:
    """Delete the user's calls older than their newest `keep`, newest by (ts, id).

    That is the order of the (user_id, ts) index (on SQLite it ends in the id), so finding the boundary reads
    `keep` index entries and the delete is a range of the same index: no scan of the table.
    """
    newest_first = (select(api_calls.c.ts, api_calls.c.id).where(api_calls.c.user_id == user_id)
                    .order_by(api_calls.c.ts.desc(), api_calls.c.id.desc()).offset(keep).limit(1))
    boundary = conn.execute(newest_first).first()
    if boundary is None:
        return 0
    older = tuple_(api_calls.c.ts, api_calls.c.id) <= tuple_(boundary.ts, boundary.id)
    return conn.execute(delete(api_calls).where(api_calls.c.user_id == user_id, older)).rowcount


def list_api_calls(conn: Connection, user_id: int, *, limit: int) -> list[Row]:
    query = (select(api_calls.c.id, api_calls.c.ts, api_calls.c.key_name, api_calls.c.method, api_calls.c.path,
                    api_calls.c.status, api_calls.c.duration_ms, api_calls.c.source)
             .where(api_calls.c.user_id == user_id).order_by(api_calls.c.id.desc()).limit(limit))
    return list(conn.execute(query))


# --- settings ----------------------------------------------------------------------------------

def count_codes_by_owner(conn: Connection) -> dict[int, int]:
    """Every owner's number of codes, whatever their status, for the users page."""
    query = select(codes.c.owner_id, func.count()).group_by(codes.c.owner_id)
    return {owner_id: count for owner_id, count in conn.execute(query)}
