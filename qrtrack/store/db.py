"""Database access: the engine, SQLite pragmas and functions, the filters every query module shares, migrations."""
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    String,
    create_engine,
    event,
    false,
    inspect,
    literal,
    text,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..config import ConfigError, Settings
from ..errors import ValidationError
from .schema import MAX_INTEGER
from .sqlite_scans import (
    FIND_SCHEMA_REVISION_SQL,
    SCHEMA_REVISION,
    SQLITE_FILE_SUFFIXES,
    WRITER_LOCK_SUFFIX,
    sqlite_primary_code,
)

MIGRATIONS_PATH = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
BUSY_TIMEOUT_MS = 10_000
MIGRATION_LOCK_KEY = 0x51_72_74_72_61_63_6B  # "Qrtrack" in ASCII: PostgreSQL's advisory lock for migrations
SQLITE_LOWER_FUNCTION = "unicode_lower"
LIVE_DATABASE_SUFFIXES = (*SQLITE_FILE_SUFFIXES, WRITER_LOCK_SUFFIX)
"""The database file and the files SQLite and the scan writer keep beside it."""


class UnicodeLower(FunctionElement):
    """lower(text) that folds every letter with a case, for case-insensitive search.

    SQLite's own lower() and LIKE fold ASCII only, so on SQLite this calls Python's str.lower, which every
    connection registers (make_engine). Elsewhere it is lower(), which PostgreSQL applies to all of Unicode
    in a database with a UTF-8 locale (LC_CTYPE C folds ASCII only there too).
    """

    type = String()
    name = "lower"
    inherit_cache = True


@compiles(UnicodeLower)
def _compile_lower(element: UnicodeLower, compiler, **kw) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(UnicodeLower, "sqlite")
def _compile_sqlite_lower(element: UnicodeLower, compiler, **kw) -> str:
    return f"{SQLITE_LOWER_FUNCTION}({compiler.process(element.clauses, **kw)})"


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


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


class Database:
    """The engine plus the two ways services use it: a short read, or a write transaction.

    On SQLite a write transaction starts with BEGIN IMMEDIATE so that two writers queue on the
    busy timeout instead of one failing at once when it upgrades a read lock.
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(settings: Settings) -> Engine:
    if not settings.is_sqlite:
        return create_engine(settings.DATABASE_URL, pool_pre_ping=True)
    _ensure_sqlite_folder(settings.DATABASE_URL)
    engine = create_engine(settings.DATABASE_URL, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    journal = "WAL" if settings.SQLITE_WAL else "DELETE"

    @event.listens_for(engine, "connect")
    def configure_sqlite(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA journal_mode={journal}")
        cursor.execute(f"PRAGMA synchronous={settings.SQLITE_SYNCHRONOUS}")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        # Deterministic, so SQLite folds a search pattern once per query rather than once per row.
        dbapi_connection.create_function(SQLITE_LOWER_FUNCTION, 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def begin_sqlite(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _ensure_sqlite_folder(url: str) -> None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def _alembic_config(conn: Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    config.attributes["connection"] = conn
    return config


def upgrade_schema(db: Database) -> None:
    """Create or upgrade the schema to the newest migration (idempotent, safe in concurrent processes).

    On SQLite the migration runs under BEGIN IMMEDIATE, so a second process starting at the same
    moment waits, then finds the schema current and does nothing.
    """
    with db.engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            migrate_to_head(conn)


def migrate_to_head(conn: Connection) -> None:
    """Run the migrations the schema lacks in conn's transaction, holding off other processes' until it ends.

    On PostgreSQL a transaction-scoped advisory lock does what BEGIN IMMEDIATE does on SQLite. Without it,
    the workers of a server starting together on an old schema all read the old revision, wait for each
    other's ALTER TABLE, and all but one then fail ("column ... already exists") and stop.
    """
    from alembic import command

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    command.upgrade(_alembic_config(conn), "head")


def current_revision(conn: Connection) -> str | None:
    """The schema revision of conn's database, None before its first migration. The catalog is asked first:
    PostgreSQL logs a failed SELECT of a missing table as an ERROR, which a new install's first start and every
    CGI scan before it (SqlAlchemyScanStore.has_current_schema) would leave in its log."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.exec_driver_sql(FIND_SCHEMA_REVISION_SQL).scalar()


def ensure_schema(db: Database) -> str | None:
    """Upgrade the schema at start-up when it is behind, so replacing the files is a whole upgrade; returns the
    revision the database was at (None: it had no schema yet)."""
    with db.engine.connect() as conn:  # a database that cannot be reached is an error here
        current = current_revision(conn)
    if current != SCHEMA_REVISION:
        _refuse_newer_schema(db, current)
        upgrade_schema(db)
    return current


def _refuse_newer_schema(db: Database, current: str | None) -> None:
    """ConfigError when a newer release has upgraded the database past every migration this one has.

    That is a user going back to an older release after an upgrade: Alembic would only fail with a traceback
    ("Can't locate revision"), and the older code must not run on a schema it does not know.
    """
    if current is None:
        return
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}
    if current in known:
        return
    where = db.engine.url.render_as_string(hide_password=True)
    db.dispose()  # start-up stops here: nothing else will close the connection that read the revision
    raise ConfigError(f"the database {where} was upgraded by a newer version of QR Track (schema {current}; this "
                      f"version knows up to {SCHEMA_REVISION}): run that version, or restore the backup taken "
                      "before the upgrade")


def schema_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return current_revision(conn)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def is_schema_current(db: Database) -> bool:
    return schema_revision(db) == head_revision()


def backup_sqlite(db: Database, target: str | os.PathLike) -> None:
    """Copy the live SQLite database to target with SQLite's online backup API (safe while serving).

    ValidationError, and nothing written, when target is the live database or one of the files beside it
    (journal, WAL, shared memory, the scan writer's lock: writing a database over them would damage it), by
    any path to them, or when it cannot be written.
    """
    target = os.fspath(target)
    _refuse_live_database_files(db.engine.url.database, target)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise ValidationError(f"cannot back up to {target}: there is no folder {folder}", code="invalid_path")
    raw = db.engine.raw_connection()
    try:
        destination = sqlite3.connect(target)
        try:
            raw.driver_connection.backup(destination)
        finally:
            destination.close()
    except sqlite3.Error as error:
        raise ValidationError(f"cannot back up to {target}: {error}", code="invalid_path") from None
    finally:
        raw.close()


def _refuse_live_database_files(database: str, target: str) -> None:
    live = os.path.realpath(database)
    live_files = [live + suffix for suffix in LIVE_DATABASE_SUFFIXES]
    if os.path.realpath(target) in live_files or any(_is_same_file(target, path) for path in live_files):
        raise ValidationError(f"cannot back up to {target}: that is the live database {live} or a file beside it; "
                              "choose a path outside it", code="invalid_path")


def _is_same_file(first: str, second: str) -> bool:
    """Also true for two hard links to one file."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


# SQLite's primary result codes when the trouble is the file, its folder or another process, not the SQL
# (which is SQLITE_ERROR): refused with a 503 (web/error_responses.py).
SQLITE_UNAVAILABLE_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_READONLY,
                                      sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN})


def is_unavailable(error: OperationalError, dialect: str) -> bool:
    """Whether the database refused the work for a reason outside the request (a file the app cannot write,
    a full disk, a lock held past the timeout, a server that went away), rather than a bug in the SQL."""
    if dialect != "sqlite":
        return True  # PostgreSQL's OperationalError is the connection's or the server's; bad SQL is ProgrammingError
    return sqlite_primary_code(error.orig) in SQLITE_UNAVAILABLE_CODES


def unavailable_hint(db: Database) -> str:
    """What an operator should check, for the log: on SQLite, the file, its owner and the process's user."""
    path = db.engine.url.database if db.engine.dialect.name == "sqlite" else None
    if not path:
        return "check that the database server DATABASE_URL names is running and reachable"
    import pwd

    def owner(uid: int) -> str:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    try:
        file_owner = owner(os.stat(path).st_uid)
    except OSError:
        file_owner = "nobody, as it is missing"
    return (f"the database is {path}, owned by {file_owner}; this process runs as {owner(os.geteuid())}, which must "
            "be able to write it, the files beside it and its folder (see the README's 'What every host needs')")
