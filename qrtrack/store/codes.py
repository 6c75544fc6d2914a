"""The queries of codes: one function per query, each taking a connection and never committing."""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Row, Select, delete, false, func, insert, or_, select, text, update

from .db import UnicodeLower, is_storable
from .schema import codes

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
SORTABLE_CODE_COLUMNS = {"created": codes.c.created_at, "scans": codes.c.scan_count, "label": codes.c.label,
                         "updated": codes.c.updated_at}


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
