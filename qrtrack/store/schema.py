"""The database schema, written down once as SQLAlchemy Core tables.

Timestamps are integer epoch seconds (UTC): portable across SQLite, PostgreSQL and MySQL,
and day buckets for analytics are plain integer division.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

MAX_INTEGER = 2**63 - 1
"""The largest integer SQLite's INTEGER and PostgreSQL's BIGINT hold: no id or count can be larger, and a
larger number given to a query makes SQLite's driver raise OverflowError instead of finding nothing."""

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

LOG_ID = BigInteger().with_variant(Integer, "sqlite")
"""The id of a log that may pass 2**31 rows (scans, API calls). SQLite's INTEGER PRIMARY KEY is already a
64-bit row id, and only that exact type makes it one."""

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("created_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger),
    Column("revoked_at", BigInteger),
    # The "Generate key" form that made the key (null for keys made otherwise). Unique per user, so a form sent
    # twice, by a reload or by a double click whose two posts race, makes one key on every database.
    Column("form_token", String(64)),
    Index("ix_api_keys_user_form_token", "user_id", "form_token", unique=True),
)

codes = Table(
    "codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("slug", String(16), nullable=False, unique=True),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(16), nullable=False, default="url"),
    Column("destination", Text, nullable=False),
    Column("label", String(200), nullable=False, default=""),
    Column("logo", String(64)),
    Column("status", String(16), nullable=False, default="active"),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("scan_count", BigInteger, nullable=False, default=0),
    Index("ix_codes_owner_created", "owner_id", "created_at", "id"),
    # The dashboard list sorts by these too; scan_count gets no index, which every scan would have to update.
    Index("ix_codes_owner_label", "owner_id", "label", "id"),
    Index("ix_codes_owner_updated", "owner_id", "updated_at", "id"),
)

scans = Table(
    "scans",
    metadata,
    Column("id", LOG_ID, primary_key=True),
    Column("code_id", Integer, ForeignKey("codes.id", ondelete="CASCADE"), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("country", String(2)),
    Column("city", String(100)),
    Column("device", String(32), nullable=False, default="Other"),
    Column("os", String(64), nullable=False, default=""),
    Column("browser", String(64), nullable=False, default=""),
    Column("is_bot", Boolean, nullable=False, default=False),
    Column("referrer_host", String(255)),
    Column("user_agent", String(512), nullable=False, default=""),
    Column("visitor", String(32), nullable=False, default=""),
    # The only index on scans: every scan pays for each index it updates (issue 6).
    Index("ix_scans_code_ts", "code_id", "ts"),
)

api_calls = Table(
    "api_calls",
    metadata,
    Column("id", LOG_ID, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("key_id", Integer, ForeignKey("api_keys.id", ondelete="SET NULL")),
    Column("key_name", String(100), nullable=False, default=""),
    Column("ts", BigInteger, nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", String(300), nullable=False),
    Column("status", Integer, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("source", String(16), nullable=False, default="api"),
    Index("ix_api_calls_user_ts", "user_id", "ts"),
)

# Analytics rollups: what the scan log adds up to per code and UTC day (day = ts // 86400), kept current
# from scans.id > rollup_watermarks.last_scan_id whenever analytics are read, so recording a scan does no
# extra work. human_visitors and all_visitors are distinct visitor values on that day, without and with bots.
scan_rollup_days = Table(
    "scan_rollup_days",
    metadata,
    Column("code_id", Integer, ForeignKey("codes.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("human_scans", BigInteger, nullable=False, default=0),
    Column("bot_scans", BigInteger, nullable=False, default=0),
    Column("human_visitors", BigInteger, nullable=False, default=0),
    Column("all_visitors", BigInteger, nullable=False, default=0),
    sqlite_with_rowid=False,
)

# One row per code, dimension (country, city, device, os, browser), bot flag, UTC day and value; an unknown
# value is stored as "". The key order serves "one code's values of one dimension over a range of days".
scan_rollup_values = Table(
    "scan_rollup_values",
    metadata,
    Column("code_id", Integer, ForeignKey("codes.id", ondelete="CASCADE"), primary_key=True),
    Column("dimension", String(16), primary_key=True),
    Column("is_bot", Boolean, primary_key=True),
    Column("day", Integer, primary_key=True, autoincrement=False),
    Column("value", String(110), primary_key=True),
    Column("scans", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# On SQLite a new scan takes the highest id plus one, so deleting the newest scans frees their ids for the next
# ones. Migration 0006's trigger scans_watermark_below_new_ids then lowers the watermark to the highest id left,
# so those scans are counted. (AUTOINCREMENT would do it too, but costs every scan's commit 11-22 us here.)
rollup_watermarks = Table(
    "rollup_watermarks",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_scan_id", BigInteger, nullable=False),
)
