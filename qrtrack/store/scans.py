"""The queries of the scan log through SQLAlchemy: the scan path's store for PostgreSQL, and the log's pages.

The SQLite scan path runs the same SQL through sqlite3 alone (sqlite_scans.py), which a CGI scan can load
without SQLAlchemy.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, text, tuple_
from sqlalchemy.exc import SQLAlchemyError

from . import sqlite_scans
from .db import current_revision, has_id, is_storable
from .schema import scans

SCAN_LOG_COLUMNS = (
    scans.c.id, scans.c.ts, scans.c.city, scans.c.country, scans.c.device, scans.c.os, scans.c.browser,
    scans.c.is_bot, scans.c.referrer_host,
)

def insert_scans(conn: Connection, rows: list[Mapping[str, Any]]) -> None:
    """Insert scan rows and keep each code's scan_count in step, in the caller's transaction."""
    if not rows:
        return
    conn.execute(text(sqlite_scans.INSERT_SCAN_SQL), [sqlite_scans.fit_scan_row(row) for row in rows])
    conn.execute(text(sqlite_scans.COUNT_SCANS_SQL), sqlite_scans.scans_per_code(rows))


class SqlAlchemyScanStore:
    """The scan path's store for databases other than SQLite: the same SQL through the engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def has_current_schema(self) -> bool:
        """As SqliteScanStore.has_current_schema."""
        try:
            with self.engine.connect() as conn:
                return current_revision(conn) == sqlite_scans.SCHEMA_REVISION
        except SQLAlchemyError:
            return False

    def find_target(self, slug: str) -> tuple[int, str, str] | None:
        if not is_storable(slug):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(text(sqlite_scans.FIND_SCAN_TARGET_SQL), {"slug": slug}).first()
        return tuple(row) if row is not None else None

    def find_logo(self, slug: str) -> tuple[str | None] | None:
        if not is_storable(slug):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(text(sqlite_scans.FIND_IMAGE_SOURCE_SQL), {"slug": slug}).first()
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
