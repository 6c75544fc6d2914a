"""A `limits` storage that keeps rate-limit counters in one SQLite file shared by every process.

Shared hosts run several Passenger or CGI processes, and `memory://` counts per process (under CGI it
never limits at all), so flask-limiter is given ``storage_uri=storage_uri_for(instance / "ratelimit.db")``,
which reads ``qrtrack+sqlite:////abs/path/ratelimit.db`` (four slashes: an empty host, then an absolute
path). Importing this module registers the scheme with `limits`.

Options, from the URI query string (``?journal_mode=delete&timeout=2``) or as keyword arguments
(``RATELIMIT_STORAGE_OPTIONS``; a keyword wins over the query string):

- ``journal_mode``: ``wal`` (default) or ``delete``, for a home directory on a network filesystem,
  where WAL's shared memory is unsafe.
- ``timeout``: seconds to wait for another process's lock before raising; default 5.

It also mends how limits talks to the counter servers RATELIMIT_STORAGE_URI may name instead (see
`storage_options` and `MemcachedStorage`), so that a server that is down or silent is refused with a 503, soon.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import random
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar, TypeVar

import limits.storage
from limits.errors import ConfigurationError
from limits.storage import SlidingWindowCounterSupport, Storage
from limits.storage.base import TimestampedSlidingWindow

from .sqlite_scans import delete_database_files, is_damaged_database

logger = logging.getLogger(__name__)
R = TypeVar("R")

SCHEME = "qrtrack+sqlite"
JOURNAL_MODES = ("wal", "delete")
DEFAULT_TIMEOUT = 5.0
COUNTER_SERVER_TIMEOUT_SECONDS = 2.0
"""How long a rate-limit check waits on a redis or memcached server, to connect and for each answer. A healthy
one answers in about a millisecond; without a bound, a server that stopped answering (a host gone behind a
firewall that drops packets) would hold every API call and sign-in for minutes, where it now gets a 503."""
# The clients' own keyword arguments, which limits passes on; for redis a value in the URI's query wins.
_REDIS_TIMEOUTS = dict.fromkeys(("socket_connect_timeout", "socket_timeout"), COUNTER_SERVER_TIMEOUT_SECONDS)
_COUNTER_SERVER_TIMEOUTS = {
    "redis": _REDIS_TIMEOUTS, "rediss": _REDIS_TIMEOUTS, "redis+unix": _REDIS_TIMEOUTS,
    "memcached": dict.fromkeys(("connect_timeout", "timeout"), COUNTER_SERVER_TIMEOUT_SECONDS),
}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ratelimit_counter (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expiry REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ratelimit_counter_expiry ON ratelimit_counter (expiry)",
)


def storage_uri_for(path: str | os.PathLike[str], **options: str | float) -> str:
    """The storage URI for the SQLite file at path, which must be absolute; options go in the query string."""
    path = os.fspath(path)
    if not os.path.isabs(path):
        raise ValueError(f"the rate-limit database path must be absolute: {path!r}")
    query = f"?{urllib.parse.urlencode(options)}" if options else ""
    return f"{SCHEME}:///{urllib.parse.quote(path)}{query}"


def storage_options(uri: str) -> dict[str, object]:
    """flask-limiter's RATELIMIT_STORAGE_OPTIONS for the storage at uri: failures raised as limits' StorageError,
    which the app answers with a 503 (web.handle_rate_limit_storage_error), and a bound on the wait for a
    counter server."""
    scheme = urllib.parse.urlsplit(uri).scheme
    return {"wrap_exceptions": True, **_COUNTER_SERVER_TIMEOUTS.get(scheme, {})}


def storage_failure_hint(uri: str) -> str:
    """What an operator should check when the storage behind uri fails; names no password."""
    if uri.startswith(f"{SCHEME}:"):
        path = _parse_uri(uri)[0]
        return f"its counters are in {path}, which the app's user must be able to write, with its folder"
    return f"check the {urllib.parse.urlsplit(uri).scheme} server that RATELIMIT_STORAGE_URI names"


def _parse_uri(uri: str) -> tuple[str, dict[str, str]]:
    """The absolute database path and the query-string options of a qrtrack+sqlite URI."""
    parts = urllib.parse.urlsplit(uri)
    path = urllib.parse.unquote(parts.path[1:])  # drop the "/" that ends the empty host
    if parts.scheme != SCHEME or parts.netloc or not os.path.isabs(path):
        raise ConfigurationError(f"expected {SCHEME}:////absolute/path/ratelimit.db, got {uri!r}")
    try:
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigurationError(f"bad query string in {uri!r}") from exc
    return path, dict(query)


def _parse_options(options: dict[str, str | float | bool]) -> tuple[float, str]:
    """The busy timeout and journal mode, checked; unknown names are refused so that typos do not pass."""
    unknown = sorted(set(options) - {"timeout", "journal_mode"})
    if unknown:
        raise ConfigurationError(f"unknown {SCHEME} storage options: {', '.join(unknown)}")
    try:
        timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    except ValueError as exc:
        raise ConfigurationError(f"timeout must be a number of seconds, got {options['timeout']!r}") from exc
    if not timeout >= 0:
        raise ConfigurationError(f"timeout must be 0 or more seconds, got {timeout!r}")
    journal_mode = str(options.get("journal_mode", "wal")).lower()
    if journal_mode not in JOURNAL_MODES:
        raise ConfigurationError(f"journal_mode must be one of {', '.join(JOURNAL_MODES)}, got {journal_mode!r}")
    return timeout, journal_mode


def _mends_damage(method: Callable[..., R]) -> Callable[..., R]:
    """A storage method that, should the counter file prove damaged, replaces it and runs once more."""
    @functools.wraps(method)
    def mending(self: SQLiteStorage, *args: object, **kwargs: object) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            if not is_damaged_database(error):
                raise
            self._replace_damaged_file(error)
        return method(self, *args, **kwargs)

    return mending


class SQLiteStorage(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """Counters in a SQLite table, for the fixed-window and sliding-window-counter strategies.

    Every method returns what limits' MemoryStorage returns for the same calls: a missing or
    expired counter reads 0 and expires now (absolute epoch seconds). Each call is one short
    transaction; writes take the lock up front (BEGIN IMMEDIATE). Expired rows are deleted on
    about one write in a hundred (PURGE_PROBABILITY), not on every call.

    A damaged file (SQLite finds it is not a database, or a malformed one: a disk fault, a copy cut short) is
    deleted and started afresh, with a warning in the log, rather than refusing every API call and sign-in
    until someone deletes it by hand: it holds nothing but counters that expire within a window anyway.

    Moving window is not supported: it needs a row per hit, and fixed or sliding windows are
    enough for an API limit.

    Connections are per thread and per process: a process forked from one that used the storage
    closes the inherited connections and opens its own, as SQLite requires. Nothing is opened
    until the first call, so a preloading parent holds no connection when it forks. close()
    closes this process's connections; the storage reopens them when used again.
    """

    STORAGE_SCHEME: ClassVar[list[str]] = [SCHEME]
    PURGE_PROBABILITY: ClassVar[float] = 0.01

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str | float | bool):
        if uri is None:
            raise ConfigurationError(f"{SCHEME} storage needs a URI: {SCHEME}:////absolute/path/ratelimit.db")
        self.path, uri_options = _parse_uri(uri)
        self.timeout, self.journal_mode = _parse_options({**uri_options, **options})
        self._local = threading.local()
        self._connections: dict[tuple[int, threading.Thread], sqlite3.Connection] = {}
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error, OSError)

    @property
    def storage(self) -> str:
        """The database path; flask-limiter's `flask limiter config` command prints `storage.storage`."""
        return self.path

    @_mends_damage
    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add amount to key's counter, starting a window of expiry seconds if none is running; the new value."""
        now = time.time()
        with self._write() as conn:
            value = _increment(conn, key, expiry, amount, now)
            if random.random() < self.PURGE_PROBABILITY:
                conn.execute("DELETE FROM ratelimit_counter WHERE expiry <= ?", (now,))
        return value

    @_mends_damage
    def get(self, key: str) -> int:
        row = self._connection().execute(
            "SELECT value FROM ratelimit_counter WHERE key = ? AND expiry > ?", (key, time.time())).fetchone()
        return row[0] if row else 0

    @_mends_damage
    def get_expiry(self, key: str) -> float:
        now = time.time()
        row = self._connection().execute(
            "SELECT expiry FROM ratelimit_counter WHERE key = ? AND expiry > ?", (key, now)).fetchone()
        return row[0] if row else now

    def check(self) -> bool:
        try:
            self._read_any_counter()
        except self.base_exceptions:
            return False
        return True

    @_mends_damage
    def _read_any_counter(self) -> None:
        self._connection().execute("SELECT 1 FROM ratelimit_counter LIMIT 1").fetchall()

    @_mends_damage
    def reset(self) -> int:
        """Delete every counter; the number of rows deleted."""
        with self._write() as conn:
            return conn.execute("DELETE FROM ratelimit_counter").rowcount

    @_mends_damage
    def clear(self, key: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM ratelimit_counter WHERE key = ?", (key,))

    @_mends_damage
    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Count a hit if the weighted count allows it; read and increment in one transaction, so no race."""
        if amount > limit:
            return False
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        with self._write() as conn:
            previous_count, previous_ttl, current_count, _ = _sliding_window(
                conn, previous_key, current_key, expiry, now)
            if math.floor(previous_count * previous_ttl / expiry + current_count) + amount > limit:
                return False
            _increment(conn, current_key, 2 * expiry, amount, now)
        return True

    @_mends_damage
    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        return _sliding_window(self._connection(), previous_key, current_key, expiry, now)

    @_mends_damage
    def clear_sliding_window(self, key: str, expiry: int) -> None:
        previous_key, current_key = self.sliding_window_keys(key, expiry, time.time())
        with self._write() as conn:
            conn.execute("DELETE FROM ratelimit_counter WHERE key IN (?, ?)", (previous_key, current_key))

    def close(self) -> None:
        """Close every connection this storage holds; the next call opens a new one."""
        self._local = threading.local()
        self._close_connections(lambda pid, thread: True)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use in each thread, again after a fork, and again when the
        file at its path was replaced or deleted since (a damaged one, by another process): so every process
        counts in the file that is there now, never in a deleted one that it alone still holds open. That costs
        a stat per call."""
        pid = os.getpid()
        if getattr(self._local, "pid", None) == pid and self._local.file_id == _file_id(self.path):
            return self._local.conn
        # Inherited connections are closed before opening ours: SQLite keeps lock state per process,
        # and a new connection would share the parent's copy of it.
        current = threading.current_thread()
        self._close_connections(lambda owner, thread: owner != pid or thread is current or not thread.is_alive())
        self._local.__dict__.clear()
        conn = self._open()
        self._connections[(pid, current)] = conn
        self._local.conn, self._local.pid, self._local.file_id = conn, pid, _file_id(self.path)
        return conn

    def _replace_damaged_file(self, error: sqlite3.DatabaseError) -> None:
        """Drop this thread's connection and delete the damaged file, unless another process or thread already
        replaced it since this connection opened it: then only the new file is opened, and kept."""
        pid, current = os.getpid(), threading.current_thread()
        opened = self._local.file_id if getattr(self._local, "pid", None) == pid else None
        self._close_connections(lambda owner, thread: owner == pid and thread is current)
        self._local.__dict__.clear()
        if opened is None or opened == _file_id(self.path):
            delete_database_files(self.path)
            logger.warning("the rate-limit counters in %s were damaged (%s): deleted them; counting starts afresh",
                           self.path, error)

    def _close_connections(self, should_close: Callable[[int, threading.Thread], bool]) -> None:
        # dict.copy() and dict.pop() are atomic, so threads pruning at once close each connection once.
        for (pid, thread), conn in self._connections.copy().items():
            if should_close(pid, thread) and self._connections.pop((pid, thread), None) is conn:
                conn.close()

    def _open(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # check_same_thread=False only so that close() may close another thread's connection;
        # each connection is otherwise used by the thread that opened it.
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != self.journal_mode:
                self._switch_journal_mode(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _switch_journal_mode(self, conn: sqlite3.Connection) -> None:
        """Switch a database's journal mode, retrying while other processes hold it, up to the timeout.

        SQLite answers "database is locked" at once instead of calling the busy handler when another
        connection reads while this one switches, which happens when several processes start at once.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute(f"PRAGMA journal_mode = {self.journal_mode}")  # one of JOURNAL_MODES
                return
            except sqlite3.OperationalError as exc:
                if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(random.uniform(0.005, 0.02))  # jitter, so that starting processes do not retry in step


def _file_id(path: str) -> tuple[int, int] | None:
    """Which file is at path now (device and inode), or None when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _increment(conn: sqlite3.Connection, key: str, expiry: float, amount: int, now: float) -> int:
    """Add amount to key's counter inside the caller's write transaction; the new value."""
    row = conn.execute("SELECT value, expiry FROM ratelimit_counter WHERE key = ?", (key,)).fetchone()
    if row is None or row[1] <= now or row[0] == 0:
        # A window starts when the counter is missing, expired or zero, as in MemoryStorage.
        conn.execute("INSERT OR REPLACE INTO ratelimit_counter (key, value, expiry) VALUES (?, ?, ?)",
                     (key, amount, now + expiry))
        return amount
    conn.execute("UPDATE ratelimit_counter SET value = value + ? WHERE key = ?", (amount, key))
    return row[0] + amount


def _sliding_window(conn: sqlite3.Connection, previous_key: str, current_key: str, expiry: int,
                    now: float) -> tuple[int, float, int, float]:
    """(previous count, previous TTL, current count, current TTL), computed as MemoryStorage does."""
    counts = dict(conn.execute("SELECT key, value FROM ratelimit_counter WHERE key IN (?, ?) AND expiry > ?",
                               (previous_key, current_key, now)).fetchall())
    previous_count, current_count = counts.get(previous_key, 0), counts.get(current_key, 0)
    previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous_count else 0.0
    current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
    return previous_count, previous_ttl, current_count, current_ttl


class MemcachedStorage(limits.storage.MemcachedStorage):
    """limits' memcached storage, with every failure of the server counted as the storage's.

    pymemcache raises the socket's own errors when the server is down or silent (ConnectionRefusedError,
    TimeoutError), not its MemcacheError, and limits 5.8 wraps only the latter: a memcached that was down
    turned every API call into a 500. Defining this class registers it for the memcached scheme, in
    place of limits' own.
    """

    STORAGE_SCHEME: ClassVar[list[str]] = ["memcached"]

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return (self.dependency.MemcacheError, OSError)
