"""The qrtrack+sqlite rate-limit storage: MemoryStorage's semantics, one count shared by every process."""
from __future__ import annotations

import http.client
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
from contextlib import closing

import limits
import pytest
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter
from werkzeug.serving import make_server

from qrtrack.store import ratelimit
from qrtrack.store.ratelimit import SQLiteStorage, storage_options, storage_uri_for

SPAWN = multiprocessing.get_context("spawn")
PROCESS_TIMEOUT = 30


class FakeClock:
    """Stands in for time.time(); advance() moves it on."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.fixture
def storage(tmp_path):
    sqlite_storage = SQLiteStorage(storage_uri_for(tmp_path / "rl.db"))
    yield sqlite_storage
    sqlite_storage.close()


def count_rows(path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT count(*) FROM ratelimit_counter").fetchone()[0]


# URI and options


def test_storage_uri_for_builds_a_four_slash_uri():
    assert storage_uri_for("/srv/qr/instance/ratelimit.db") == "qrtrack+sqlite:////srv/qr/instance/ratelimit.db"
    assert storage_uri_for("/x/rl.db", journal_mode="delete") == "qrtrack+sqlite:////x/rl.db?journal_mode=delete"


def test_storage_uri_for_refuses_a_relative_path():
    with pytest.raises(ValueError, match="absolute"):
        storage_uri_for("instance/ratelimit.db")


def test_module_registers_its_scheme_with_limits():
    assert limits.storage.SCHEMES[ratelimit.SCHEME] is SQLiteStorage


def test_module_registers_its_memcached_storage_in_place_of_limits_own():
    """So that ConnectionRefusedError and timeouts count as the storage failing (test_ratelimit_servers.py)."""
    assert limits.storage.SCHEMES["memcached"] is ratelimit.MemcachedStorage
    assert issubclass(ratelimit.MemcachedStorage, limits.storage.MemcachedStorage)


def test_storage_options_wrap_failures_and_bound_the_wait_on_a_counter_server(tmp_path):
    timeout = ratelimit.COUNTER_SERVER_TIMEOUT_SECONDS
    assert storage_options(storage_uri_for(tmp_path / "rl.db")) == {"wrap_exceptions": True}
    assert storage_options("memcached://cache:11211") == {"wrap_exceptions": True, "connect_timeout": timeout,
                                                           "timeout": timeout}
    for uri in ("redis://cache:6379/0", "rediss://:pw@cache:6380", "redis+unix:///run/redis.sock"):
        assert storage_options(uri) == {"wrap_exceptions": True, "socket_connect_timeout": timeout,
                                        "socket_timeout": timeout}, uri


def test_a_redis_uri_may_set_its_own_timeout_over_the_default():
    """What the README says: `?socket_timeout=5` in the URI wins. Nothing connects until the first check."""
    for uri, expected in (("redis://cache:6379/0", ratelimit.COUNTER_SERVER_TIMEOUT_SECONDS),
                          ("redis://cache:6379/0?socket_timeout=5", 5.0)):
        built = storage_from_string(uri, **storage_options(uri))
        assert built.storage.connection_pool.connection_kwargs["socket_timeout"] == expected


def test_storage_from_string_builds_the_storage_from_its_uri(tmp_path):
    path = tmp_path / "odd #dir?" / "rl%20.db"
    built = storage_from_string(storage_uri_for(path))
    try:
        assert isinstance(built, SQLiteStorage)
        assert (built.path, built.timeout, built.journal_mode) == (str(path), 5.0, "wal")
        assert built.incr("k", 60) == 1
        assert path.is_file()  # the parent directories were created
    finally:
        built.close()


def test_query_string_options_reach_the_storage_and_keywords_win(tmp_path):
    uri = storage_uri_for(tmp_path / "rl.db", journal_mode="DELETE", timeout="2.5")
    from_uri = storage_from_string(uri)
    from_keywords = storage_from_string(uri, timeout=1, journal_mode="wal")
    assert (from_uri.timeout, from_uri.journal_mode) == (2.5, "delete")
    assert (from_keywords.timeout, from_keywords.journal_mode) == (1.0, "wal")


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_journal_mode_is_applied_to_the_database(tmp_path, journal_mode):
    path = tmp_path / "rl.db"
    rl_storage = storage_from_string(storage_uri_for(path, journal_mode=journal_mode))
    try:
        rl_storage.incr("k", 60)
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == journal_mode
    finally:
        rl_storage.close()


@pytest.mark.parametrize("uri", [
    "qrtrack+sqlite:///relative/rl.db",
    "qrtrack+sqlite://host/rl.db",
    "qrtrack+sqlite://",
    "qrtrack+sqlite:////x/rl.db?journal_mode=memory",
    "qrtrack+sqlite:////x/rl.db?timeout=soon",
    "qrtrack+sqlite:////x/rl.db?timeout=-1",
    "qrtrack+sqlite:////x/rl.db?journal-mode=delete",
    "qrtrack+sqlite:////x/rl.db?journal_mode",
])
def test_bad_uri_or_option_is_a_configuration_error(uri):
    with pytest.raises(ConfigurationError):
        storage_from_string(uri)


def test_switching_to_wal_waits_for_another_process_writing_the_database(tmp_path):
    # While another connection writes, SQLite refuses the switch at once rather than calling the
    # busy handler, as it does when several processes first open the database together.
    path = tmp_path / "rl.db"
    with closing(sqlite3.connect(path, isolation_level=None, check_same_thread=False)) as writer:
        writer.execute("CREATE TABLE other (x)")
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO other (x) VALUES (1)")
        finish_writing = threading.Timer(0.2, writer.execute, ("COMMIT",))
        finish_writing.start()
        rl_storage = SQLiteStorage(storage_uri_for(path))
        try:
            assert rl_storage.incr("k", 60) == 1
        finally:
            finish_writing.join()
            rl_storage.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_construction_opens_nothing(tmp_path):
    SQLiteStorage(storage_uri_for(tmp_path / "sub" / "rl.db"))
    assert not (tmp_path / "sub").exists()


# Counter semantics


def test_counter_calls_return_what_memory_storage_returns(storage, clock):
    memory = MemoryStorage()
    calls = [
        ("incr", "a", 60), ("incr", "a", 60), ("incr", "a", 30, 5), ("get", "a"), ("get_expiry", "a"),
        ("get", "missing"), ("get_expiry", "missing"), ("incr", "b", 10), ("clear", "a"), ("get", "a"),
        ("get_expiry", "a"), ("clear", "missing"), ("incr", "a", 5, 0), ("incr", "a", 5), ("get_expiry", "a"),
        ("check",), ("reset",), ("get", "b"), ("reset",),
    ]
    for name, *args in calls:
        assert getattr(storage, name)(*args) == getattr(memory, name)(*args), (name, args)
        clock.advance(0.5)


def test_counter_expires_after_its_window(storage, clock):
    def observe(rl_storage) -> list[float]:
        started = clock.now
        seen = [rl_storage.incr("k", 1)]
        clock.advance(0.5)
        seen += [rl_storage.incr("k", 1), rl_storage.get_expiry("k") - started]
        clock.advance(0.5)
        seen += [rl_storage.get("k"), rl_storage.get_expiry("k") - clock.now]
        seen += [rl_storage.incr("k", 1), rl_storage.get_expiry("k") - clock.now]
        return seen

    assert observe(storage) == observe(MemoryStorage()) == [1, 2, 1.0, 0, 0.0, 1, 1.0]


def test_expired_rows_are_purged_only_now_and_then(storage, clock, monkeypatch):
    monkeypatch.setattr(SQLiteStorage, "PURGE_PROBABILITY", 0.0)
    storage.incr("old", 1)
    clock.advance(2)
    storage.incr("new", 60)
    assert count_rows(storage.path) == 2
    monkeypatch.setattr(SQLiteStorage, "PURGE_PROBABILITY", 1.0)
    storage.incr("new", 60)
    assert count_rows(storage.path) == 1


def test_fixed_window_allows_exactly_five_hits_per_minute(storage, clock):
    limiter = FixedWindowRateLimiter(storage)
    five_per_minute = limits.parse("5/minute")
    allowed = [limiter.hit(five_per_minute, "client") for _ in range(50)]
    assert allowed == [True] * 5 + [False] * 45
    assert limiter.get_window_stats(five_per_minute, "client") == (clock.now + 60, 0)
    clock.advance(60)
    assert limiter.test(five_per_minute, "client")
    assert limiter.hit(five_per_minute, "client")


def test_sliding_window_counter_decides_as_memory_storage_does(storage, clock):
    limiters = [SlidingWindowCounterRateLimiter(storage), SlidingWindowCounterRateLimiter(MemoryStorage())]
    ten_per_minute = limits.parse("10/minute")
    clock.now = 60 * 30_000_000 + 50.0  # 10 s before a window ends
    decisions: list[list[tuple[bool, int]]] = [[], []]
    for _ in range(40):
        for limiter, seen in zip(limiters, decisions, strict=True):
            seen.append((limiter.hit(ten_per_minute, "client"), limiter.get_window_stats(ten_per_minute, "client")[1]))
        clock.advance(3)
    assert decisions[0] == decisions[1]
    assert sum(allowed for allowed, _ in decisions[0]) < 40
    limiters[0].clear(ten_per_minute, "client")
    assert limiters[0].get_window_stats(ten_per_minute, "client")[1] == 10


# Health, errors, connections


def test_check_is_false_when_the_database_cannot_be_opened(tmp_path):
    (tmp_path / "rl.db").mkdir()
    unusable = SQLiteStorage(storage_uri_for(tmp_path / "rl.db"))
    assert unusable.check() is False
    unusable.close()


def test_storage_errors_are_wrapped_when_asked(tmp_path):
    (tmp_path / "rl.db").mkdir()
    unusable = SQLiteStorage(storage_uri_for(tmp_path / "rl.db"), wrap_exceptions=True)
    with pytest.raises(StorageError):
        unusable.incr("k", 60)
    unusable.close()


def damage(path) -> None:
    """Put a file that is not a database where the counters are, as a disk fault or a copy cut short would."""
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    damaged = f"{path}.damaged"
    with open(damaged, "wb") as file:
        file.write(b"SQLite format 3\x00" + os.urandom(8192))
    os.replace(damaged, path)


def test_a_file_that_is_not_a_database_is_replaced_and_counting_starts_afresh(tmp_path, caplog):
    path = tmp_path / "rl.db"
    path.write_bytes(b"not a database, " * 512)
    storage = SQLiteStorage(storage_uri_for(path), wrap_exceptions=True)
    with caplog.at_level(logging.WARNING, logger="qrtrack.store.ratelimit"):
        assert storage.incr("k", 60) == 1
        assert storage.incr("k", 60) == 2
    assert count_rows(path) == 1
    assert [record.getMessage() for record in caplog.records] == [
        f"the rate-limit counters in {path} were damaged (file is not a database): deleted them; "
        "counting starts afresh"]
    storage.close()


@pytest.mark.parametrize("call", ["incr", "get", "get_expiry", "clear", "reset", "check", "sliding_window"])
def test_every_call_replaces_a_damaged_file_and_answers(tmp_path, call):
    path = tmp_path / "rl.db"
    storage = SQLiteStorage(storage_uri_for(path), wrap_exceptions=True)
    storage.incr("k", 60)
    damage(path)
    calls = {"incr": lambda: storage.incr("k", 60) == 1, "get": lambda: storage.get("k") == 0,
             "get_expiry": lambda: storage.get_expiry("k") > 0, "clear": lambda: storage.clear("k") is None,
             "reset": lambda: storage.reset() == 0, "check": lambda: storage.check() is True,
             "sliding_window": lambda: storage.acquire_sliding_window_entry("k", 5, 60) is True}
    assert calls[call]()
    assert count_rows(path) == (1 if call in ("incr", "sliding_window") else 0)
    storage.close()


def test_a_file_replaced_by_another_process_is_joined_not_deleted_again(tmp_path, caplog):
    """Two storages on one file stand for two processes: the first to meet the damage replaces the file; the
    other, whose connection is on the old file, moves to the new one and keeps what was counted there."""
    path = tmp_path / "rl.db"
    first, second = (SQLiteStorage(storage_uri_for(path), wrap_exceptions=True) for _ in range(2))
    assert (first.incr("k", 60), second.incr("k", 60)) == (1, 2)
    damage(path)
    with caplog.at_level(logging.WARNING, logger="qrtrack.store.ratelimit"):
        assert first.incr("k", 60) == 1
        assert second.incr("k", 60) == 2
        assert first.get("k") == 2
    assert len(caplog.records) == 1
    first.close()
    second.close()


def test_damage_met_just_after_another_process_mended_it_keeps_the_new_file(tmp_path):
    """The race the file check before each call leaves open: the other process replaces the file between that
    check and this call's failing query. What the failing call then does must not delete the new file."""
    path = tmp_path / "rl.db"
    first, second = (SQLiteStorage(storage_uri_for(path)) for _ in range(2))
    assert (first.incr("k", 60), second.incr("k", 60)) == (1, 2)
    damage(path)
    assert first.incr("k", 60) == 1
    second._replace_damaged_file(sqlite3.DatabaseError("file is not a database"))
    assert second.incr("k", 60) == 2
    first.close()
    second.close()


def test_a_file_deleted_while_in_use_is_recreated_and_shared_again(tmp_path):
    """An owner may delete the counter file while the app runs, as it holds nothing else: every process then
    counts in the new file, none in the deleted one it still held open."""
    path = tmp_path / "rl.db"
    first, second = (SQLiteStorage(storage_uri_for(path)) for _ in range(2))
    assert (first.incr("k", 60), second.incr("k", 60)) == (1, 2)
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{path}{suffix}")
    assert second.incr("k", 60) == 1
    assert first.incr("k", 60) == 2
    assert count_rows(path) == 1
    first.close()
    second.close()


def test_a_file_it_cannot_delete_stays_refused(tmp_path, monkeypatch):
    """Mending must not loop: when the damaged file stays (its folder is read-only, say), the call fails once
    more and the app answers 503 as for any storage it cannot use."""
    path = tmp_path / "rl.db"
    path.write_bytes(b"not a database, " * 512)
    monkeypatch.setattr(ratelimit, "delete_database_files", lambda path: None)
    storage = SQLiteStorage(storage_uri_for(path), wrap_exceptions=True)
    with pytest.raises(StorageError, match="file is not a database"):
        storage.incr("k", 60)
    storage.close()


def test_close_closes_every_threads_connection_and_the_storage_reopens(storage):
    opened, closed, values = threading.Event(), threading.Event(), []

    def use_before_and_after_close() -> None:
        values.append(storage.incr("k", 60))
        opened.set()
        closed.wait(10)
        values.append(storage.incr("k", 60))

    worker = threading.Thread(target=use_before_and_after_close)
    worker.start()
    opened.wait(10)
    storage.incr("k", 60)
    assert len(storage._connections) == 2
    storage.close()
    assert storage._connections == {}
    closed.set()
    worker.join()
    assert values == [1, 3]
    assert storage.get("k") == 3


def test_a_finished_threads_connection_is_closed_when_another_thread_opens_one(storage):
    for _ in range(3):
        worker = threading.Thread(target=storage.incr, args=("k", 60))
        worker.start()
        worker.join()
    assert len(storage._connections) == 1
    assert storage.get("k") == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_opens_its_own_connection(storage):
    assert storage.incr("k", 60) == 1
    inherited = storage._local.conn
    pid = os.fork()
    if pid == 0:  # the child must leave through os._exit, whatever happens
        try:
            value = storage.incr("k", 60)
            os._exit(0 if value == 2 and storage._local.conn is not inherited else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert storage._local.conn is inherited
    assert storage.incr("k", 60) == 3


# Several processes


def hammer_limit(uri: str, attempts: int, start: multiprocessing.synchronize.Barrier, results) -> None:
    """Runs in a spawned process: try `attempts` hits on one shared key of a 100/minute limit."""
    try:
        rl_storage = storage_from_string(uri)
        limiter = FixedWindowRateLimiter(rl_storage)
        hundred_per_minute = limits.parse("100/minute")
        start.wait(PROCESS_TIMEOUT)
        allowed = sum(limiter.hit(hundred_per_minute, "shared") for _ in range(attempts))
        rl_storage.close()
        results.put(allowed)
    except BaseException as exc:
        results.put(repr(exc))
        raise


def test_concurrent_processes_allow_exactly_the_limit_between_them(tmp_path):
    uri = storage_uri_for(tmp_path / "rl.db")
    workers, attempts = 6, 50
    start, results = SPAWN.Barrier(workers), SPAWN.Queue()
    processes = [SPAWN.Process(target=hammer_limit, args=(uri, attempts, start, results)) for _ in range(workers)]
    try:
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=PROCESS_TIMEOUT) for _ in processes]
    finally:
        stop_processes(processes)
        results.close()
        results.join_thread()
    assert all(isinstance(allowed, int) for allowed in outcomes), outcomes
    assert sum(outcomes) == 100


def serve_limited_app(uri: str, ports, stop: multiprocessing.synchronize.Event) -> None:
    """Runs in a spawned process: a Flask app limited to 3/minute, served on 127.0.0.1 until stop is set."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = Flask(__name__)
    limiter = Limiter(key_func=get_remote_address, app=app, storage_uri=uri, headers_enabled=True)

    @app.get("/ping")
    @limiter.limit("3/minute")
    def ping():
        return {"pid": os.getpid()}

    server = make_server("127.0.0.1", 0, app)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        ports.put(server.port)
        stop.wait(PROCESS_TIMEOUT)
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
        limiter.storage.close()


def get_ping(port: int) -> tuple[int, dict[str, str]]:
    with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=10)) as conn:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())


def test_flask_limiter_counts_one_limit_across_three_server_processes(tmp_path):
    uri = storage_uri_for(tmp_path / "rl.db")
    ports, stop = SPAWN.Queue(), SPAWN.Event()
    servers = [SPAWN.Process(target=serve_limited_app, args=(uri, ports, stop)) for _ in range(3)]
    try:
        for server in servers:
            server.start()
        server_ports = [ports.get(timeout=PROCESS_TIMEOUT) for _ in servers]
        responses = [get_ping(server_ports[i % 3]) for i in range(6)]
    finally:
        stop.set()
        stop_processes(servers)
        ports.close()
        ports.join_thread()
    assert [status for status, _ in responses] == [200, 200, 200, 429, 429, 429]
    assert [headers["X-RateLimit-Remaining"] for _, headers in responses] == ["2", "1", "0", "0", "0", "0"]
    assert all(int(headers["Retry-After"]) > 0 for _, headers in responses[3:])


def test_a_file_damaged_under_three_server_processes_is_replaced_and_the_limit_stays_shared(tmp_path):
    """Each process holds its own connection to the damaged file: whichever meets the damage first replaces it,
    and every other one moves to the new file rather than replacing it again or counting on in the old one."""
    path = tmp_path / "rl.db"
    ports, stop = SPAWN.Queue(), SPAWN.Event()
    servers = [SPAWN.Process(target=serve_limited_app, args=(storage_uri_for(path), ports, stop)) for _ in range(3)]
    try:
        for server in servers:
            server.start()
        server_ports = [ports.get(timeout=PROCESS_TIMEOUT) for _ in servers]
        before = [get_ping(port) for port in server_ports]
        damage(path)
        after = [get_ping(server_ports[i % 3]) for i in range(6)]
    finally:
        stop.set()
        stop_processes(servers)
        ports.close()
        ports.join_thread()
    assert [status for status, _ in before] == [200, 200, 200]
    assert [status for status, _ in after] == [200, 200, 200, 429, 429, 429]
    assert [headers["X-RateLimit-Remaining"] for _, headers in after] == ["2", "1", "0", "0", "0", "0"]


def stop_processes(processes) -> None:
    """Wait briefly for each started process, kill it if it hangs, and release its resources."""
    for process in processes:
        if process.pid is None:
            continue
        process.join(PROCESS_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
        process.close()
