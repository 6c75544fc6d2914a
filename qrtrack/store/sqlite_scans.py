"""The scan path's data access: its SQL, written once, and a lean SQLite connection to run it.

Standard library only, so a CGI process can record a scan without importing SQLAlchemy or
Flask (their import alone costs several times the whole scan). scans.py runs the same SQL
through SQLAlchemy for the other databases.
"""
from __future__ import annotations

import _thread  # its lock without threading, which would make a CGI scan 1.30× as long (bench devices)
import fcntl
import os

try:  # the sqlite3 package adds datetime adapters the scan never uses, and makes a CGI scan 1.29× as long
    import _sqlite3 as sqlite3
except ImportError:  # an interpreter that has only the package
    import sqlite3


SCAN_COLUMNS = ("code_id", "ts", "country", "city", "device", "os", "browser", "is_bot", "referrer_host",
                "user_agent", "visitor")
SCAN_TEXT_LENGTHS = {"country": 2, "city": 100, "device": 32, "os": 64, "browser": 64, "referrer_host": 255,
                     "user_agent": 512, "visitor": 32}
"""The scan log's text columns and their lengths in schema.py (a test holds the two equal)."""
TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

SCHEMA_REVISION = "0006"
"""The newest migration, and so the schema the SQL here is written for: a lean handler writes only to a database
at this revision. db.py upgrades to it at start-up without importing Alembic; tests/store/test_db.py fails when a new
migration is added without updating it."""
FIND_SCHEMA_REVISION_SQL = "SELECT version_num FROM alembic_version"
FIND_SCAN_TARGET_SQL = "SELECT id, destination, status FROM codes WHERE slug = :slug"
INSERT_SCAN_SQL = (f"INSERT INTO scans ({', '.join(SCAN_COLUMNS)}) "
                   f"VALUES ({', '.join(':' + column for column in SCAN_COLUMNS)})")
COUNT_SCANS_SQL = "UPDATE codes SET scan_count = scan_count + :added WHERE id = :code_id"
FIND_IMAGE_SOURCE_SQL = "SELECT logo FROM codes WHERE slug = :slug"
BUSY_TIMEOUT_SECONDS = 10
WRITER_LOCK_SUFFIX = "-writer.lock"
SQLITE_FILE_SUFFIXES = ("", "-journal", "-wal", "-shm")
"""The files SQLite keeps for a database at path: path + each suffix."""
DAMAGED_DATABASE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
"""SQLite's result codes for a file that is not, or no longer, a sound database."""
CHECKPOINT_AFTER_ROWS = 300
"""How many scans a long-running process writes between its copies of the WAL into the database (checkpoint_wal):
about the 1,000 WAL pages at which SQLite would copy it itself, inside a commit."""
CHECKPOINT_BACKSTOP_PAGES = 4000
"""Where SQLite still copies the WAL inside a commit for a long-running process: should processes end before
writing CHECKPOINT_AFTER_ROWS scans each (a host that stops idle ones), the WAL stops growing there."""
WAL_TRIM_BYTES = 512 * 1024
"""How long a one-shot process lets the WAL grow before it empties it (SqliteScanStore.trim_wal): about 40
scans. Each process reads the WAL on opening (~2 µs a page here); emptying it costs a checkpoint and its syncs."""


def sqlite_primary_code(error: BaseException) -> int | None:
    """The primary result code (SQLITE_CORRUPT, SQLITE_BUSY...) of a sqlite3 error, or None: an extended code keeps
    its primary code in the low byte. Here rather than in db.py, which a CGI scan does not import."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_damaged_database(error: BaseException) -> bool:
    """Whether SQLite raised error because the file is not, or no longer, a sound database."""
    return sqlite_primary_code(error) in DAMAGED_DATABASE_CODES


def delete_database_files(path: str) -> None:
    """Delete the database at path with its journal and WAL files, ignoring those that are not there (or stay)."""
    for suffix in SQLITE_FILE_SUFFIXES:
        try:
            os.remove(path + suffix)
        except OSError:
            pass


def fit_scan_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's SCAN_COLUMNS as every database stores them alike: a visitor's headers (User-Agent,
    Referer, a CDN's city) may carry NUL or parse into an over-long OS version, which PostgreSQL refuses,
    failing the whole batch, and SQLite would store as it came."""
    return {column: _fit_text(row.get(column), SCAN_TEXT_LENGTHS.get(column)) for column in SCAN_COLUMNS}


def _fit_text(value: Any, length: int | None) -> Any:
    if not isinstance(value, str):
        return value
    return value.replace("\x00", "")[:length]


def scans_per_code(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, int]]:
    """Parameters for COUNT_SCANS_SQL: how many of rows belong to each code."""
    added: dict[int, int] = {}
    for row in rows:
        added[row["code_id"]] = added.get(row["code_id"], 0) + 1
    return [{"code_id": code_id, "added": count} for code_id, count in added.items()]


class _Ticket:
    __slots__ = ("rows", "is_done", "error")

    def __init__(self, rows: list[Mapping[str, Any]]):
        self.rows = rows
        self.is_done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Commit the scans of concurrent requests together: one transaction and one sync for many.

    The first thread to arrive writes everything queued so far while later ones queue behind
    it; when its commit returns, the next waiting thread writes the next batch. Every caller
    returns only once a transaction containing its rows has committed, or raises its error.
    """

    def __init__(self, write_batch: Callable[[list[Mapping[str, Any]]], None]):
        import threading  # here: a one-shot CGI process writes without a GroupCommit and never needs it

        self._write_batch = write_batch
        self._condition = threading.Condition()
        self._queue: list[_Ticket] = []
        self._is_writing = False

    def write(self, rows: list[Mapping[str, Any]]) -> None:
        ticket = _Ticket(rows)
        with self._condition:
            self._queue.append(ticket)
            while not ticket.is_done:
                if self._is_writing:
                    self._condition.wait()
                else:
                    self._lead_one_batch()
        if ticket.error is not None:
            raise ticket.error

    def _lead_one_batch(self) -> None:
        """Called with the condition held; releases it while the batch is written."""
        batch, self._queue, self._is_writing = self._queue, [], True
        error = None
        self._condition.release()
        try:
            self._write_batch([row for ticket in batch for row in ticket.rows])
        except BaseException as caught:  # handed to every caller of the batch
            error = caught
        finally:
            self._condition.acquire()
            for ticket in batch:
                ticket.is_done, ticket.error = True, error
            self._is_writing = False
            self._condition.notify_all()


class SqliteScanStore:
    """One sqlite3 connection per thread (re-opened after a fork) running the scan SQL.

    sqlite3 keeps each connection's prepared statements, so after the first scan a lookup
    and a write cost a few tens of microseconds. Writes go through a GroupCommit, which
    matters with threaded servers and SQLITE_SYNCHRONOUS=FULL, where each commit is a sync.

    Processes take turns at writing through a lock file (flock) beside the database rather than
    through SQLite's busy handler alone, which polls with sleeps of 1 to 100 ms: a writer that finds
    the database locked slept on long after the other's commit, and under FULL one process could be
    passed over for a second. A flock wakes the next writer as soon as the lock is free.

    With WAL and synchronous=FULL, the store syncs the WAL itself (_sync_wal) instead of leaving it
    to SQLite: see there why.

    With group_commit=False writes go straight to the database: for a process that writes once from
    one thread, a CGI scan. Either way the store keeps the WAL short once an answer is sent
    (after_answer): a one-shot process empties it now and then, a long-running one copies it into the
    database itself instead of SQLite doing it inside a commit.
    """

    def __init__(self, path: str, *, wal: bool = True, synchronous: str = "NORMAL", group_commit: bool = True):
        self.path = path
        self.journal_mode = "WAL" if wal else "DELETE"
        self.synchronous = synchronous
        self.syncs_wal_itself = wal and synchronous == "FULL"
        self._local = _thread._local()
        self._group_commit = GroupCommit(self._write_batch) if group_commit else None
        self._writer_lock_fd: int | None = None
        self._writer_lock_pid: int | None = None
        self._writers_turn_in_process = _thread.allocate_lock()  # flock does not tell this process's threads apart
        self._rows_since_checkpoint = 0
        self._wal_folder_synced_pid: int | None = None

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                   check_same_thread=True, cached_statements=16)
            conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
            conn.execute(f"PRAGMA synchronous={'NORMAL' if self.syncs_wal_itself else self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            if self._group_commit is not None:  # see checkpoint_wal
                conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP_PAGES}")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def has_current_schema(self) -> bool:
        """Whether the database is at SCHEMA_REVISION. After an upgrade of the files and before the full app's
        start-up migrates the database, it is not, and a scan written now could fail and be lost."""
        try:
            found = self._connection().execute(FIND_SCHEMA_REVISION_SQL).fetchone()
        except sqlite3.Error:  # no such table yet, or no database
            return False
        return found is not None and found[0] == SCHEMA_REVISION

    def find_target(self, slug: str) -> tuple[int, str, str] | None:
        """(code id, destination, status) for slug, or None."""
        return self._connection().execute(FIND_SCAN_TARGET_SQL, {"slug": slug}).fetchone()

    def find_logo(self, slug: str) -> tuple[str | None] | None:
        """(logo content hash or None) for an existing code, None when there is no such code."""
        return self._connection().execute(FIND_IMAGE_SOURCE_SQL, {"slug": slug}).fetchone()

    def write(self, rows: list[Mapping[str, Any]]) -> None:
        """Insert the scans and bump their codes' counts; committed when this returns."""
        if self._group_commit is None:
            self._write_batch(rows)
        else:
            self._group_commit.write(rows)

    def trim_wal(self) -> None:
        """Copy the WAL into the database and empty the file, once it has grown past WAL_TRIM_BYTES.

        For a one-shot process that ends without closing its connection (app.cgi, to skip the checkpoint a
        close makes). The next process finds no record of what was already copied (the first connection
        rebuilds SQLite's WAL index from the file), so SQLite never starts the WAL over: it grew with every
        scan, every process read all of it on opening and copied all of it again at each automatic
        checkpoint. After 10 MB of it a CGI scan took ~10 ms more here. Called once the answer is sent.

        Emptying the file needs a moment when no other process writes or reads an older snapshot, and
        SQLite holds off writers while it waits for one. So it is tried only when it need not wait, in
        the writers' turn (see the class) and without SQLite's busy timeout: a backup or a long report
        running elsewhere makes it give up at once, and a later process tries again.
        """
        try:
            if os.stat(self.path + "-wal").st_size <= WAL_TRIM_BYTES:
                return
            conn = self._connection()
            if not self._take_writers_turn(wait=False):
                return
        except (OSError, sqlite3.Error):
            return
        try:
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        finally:
            self._end_writers_turn()
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")

    def after_answer(self) -> Callable[[], None] | None:
        """Work to do once the answer to a scan is sent, or None. A one-shot process: trim_wal. A long-running
        one: checkpoint_wal, every CHECKPOINT_AFTER_ROWS scans it wrote."""
        if self._group_commit is None:
            return self.trim_wal
        return self.checkpoint_wal if self._rows_since_checkpoint >= CHECKPOINT_AFTER_ROWS else None

    def checkpoint_wal(self) -> None:
        """Copy the WAL into the database, in two passes so that other processes' scans hardly wait.

        SQLite copied it inside the commit that took the WAL past 1,000 pages: that scan's answer waited
        ~6 ms, and as the commit holds the writers' turn, every other worker's scan waited with it. Here
        the bulk is copied while the other processes go on writing, then, in the writers' turn, the few
        pages they added meanwhile: the WAL is then copied whole, and the next commit starts it over
        instead of letting it grow. The bench's p99 at 50 connections read 1.71-1.86× the bare 302's
        this way, 1.92-2.13× before, and 1.60-1.64× with no checkpoint at all (bench/RESULTS.md).
        """
        self._rows_since_checkpoint = 0
        try:
            conn = self._connection()
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._take_writers_turn(wait=True)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                self._end_writers_turn()
        except (OSError, sqlite3.Error):
            import logging  # here: a scan that goes well never pays for importing it

            logging.getLogger(__name__).warning("could not copy the WAL of %s into it", self.path, exc_info=True)

    def _write_batch(self, rows: list[Mapping[str, Any]]) -> None:
        conn = self._connection()
        self._take_writers_turn(wait=True)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(INSERT_SCAN_SQL, [fit_scan_row(row) for row in rows])
                conn.executemany(COUNT_SCANS_SQL, scans_per_code(rows))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            self._end_writers_turn()
        self._rows_since_checkpoint += len(rows)
        if self.syncs_wal_itself:
            self._sync_wal()

    def _take_writers_turn(self, *, wait: bool) -> bool:
        """Take this process's turn at writing (see the class); without wait, False when another writer has it."""
        if not self._writers_turn_in_process.acquire(wait):
            return False
        try:
            fcntl.flock(self._writer_lock(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException as error:
            self._writers_turn_in_process.release()
            if isinstance(error, BlockingIOError):
                return False
            raise
        return True

    def _end_writers_turn(self) -> None:
        fcntl.flock(self._writer_lock(), fcntl.LOCK_UN)
        self._writers_turn_in_process.release()

    def _sync_wal(self) -> None:
        """Make the batch just committed durable against a power cut, as synchronous=FULL does, but after
        the writer lock is released rather than while holding it.

        FULL in WAL mode means one thing more than NORMAL: the WAL is synced after each commit (NORMAL
        already syncs it before checkpoints and its header when it is reused). Under FULL every process
        waited for its own sync with the lock held, so commits were capped near one per sync. Synced
        after the lock is let go, the next process commits meanwhile and one sync often covers several
        commits: 20-40 % more scans/s with 2-4 processes here. The caller still returns, and the scan
        is acknowledged, only after the sync. The WAL's folder is synced once per process too, since
        a WAL file created since the last sync would otherwise not survive the cut.
        """
        wal = os.open(self.path + "-wal", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(wal)
        finally:
            os.close(wal)
        if self._wal_folder_synced_pid != os.getpid():
            folder = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
            self._wal_folder_synced_pid = os.getpid()

    def _writer_lock(self) -> int:
        """This process's descriptor of the lock file; called by one thread at a time (the writers' turn).

        Opened again after a fork: a descriptor inherited from the parent shares its lock with it.
        """
        if self._writer_lock_pid != os.getpid():
            self._writer_lock_fd = os.open(self.path + WRITER_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                           0o644)
            self._writer_lock_pid = os.getpid()
        return self._writer_lock_fd

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
