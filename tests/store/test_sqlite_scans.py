"""The scan path's store: group commit hands every caller its own batch's outcome, and nothing is lost."""
from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest
from sqlalchemy import text

from qrtrack.store.sqlite_scans import GroupCommit, SqliteScanStore, sqlite_primary_code

from ..conftest import gen_code


def run_threads(count: int, target) -> None:
    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_group_commit_returns_only_after_the_callers_rows_are_committed():
    committed: list[int] = []
    batch_sizes: list[int] = []
    violations: list[int] = []

    def write_batch(rows):
        time.sleep(0.002)
        batch_sizes.append(len(rows))
        committed.extend(row["n"] for row in rows)

    group = GroupCommit(write_batch)

    def writer(index: int) -> None:
        for step in range(25):
            number = index * 1000 + step
            group.write([{"n": number}])
            if number not in committed:
                violations.append(number)

    run_threads(12, writer)
    assert violations == []
    assert sorted(committed) == sorted(index * 1000 + step for index in range(12) for step in range(25))
    assert max(batch_sizes) > 1, "concurrent writers should share transactions"


def test_group_commit_gives_a_failed_batch_error_to_its_callers_only():
    calls = {"count": 0}

    def write_batch(rows):
        calls["count"] += 1
        if calls["count"] == 1:
            raise RuntimeError("disk full")

    group = GroupCommit(write_batch)
    with pytest.raises(RuntimeError, match="disk full"):
        group.write([{"n": 1}])
    group.write([{"n": 2}])


def test_threaded_scans_through_sqlite_all_arrive(services, db, alice):
    code = gen_code(db, alice)
    scan_store = SqliteScanStore(services.settings.sqlite_path)
    row = {"code_id": code.id, "ts": 1, "country": None, "city": None, "device": "Mac", "os": "", "browser": "",
           "is_bot": False, "referrer_host": None, "user_agent": "", "visitor": ""}

    def writer(_index: int) -> None:
        for _ in range(40):
            scan_store.write([row])
        scan_store.close()

    run_threads(8, writer)
    found = scan_store.find_target(code.slug)
    assert found[0] == code.id
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*), MAX(c.scan_count) FROM scans JOIN codes c ON c.id = code_id"
                                    ).one() == (320, 320)
    scan_store.close()


@pytest.mark.parametrize("group_commit", [True, False], ids=["group-commit", "one-shot"])
def test_writers_in_other_processes_wait_for_the_lock_file_and_go_as_soon_as_it_is_free(services, db, alice,
                                                                                       group_commit):
    """Another process holding the writer lock (flock) holds back this store's writes until it lets go,
    whether they go through a GroupCommit or straight to the database as a CGI scan's do."""
    import fcntl
    import os

    from qrtrack.store.sqlite_scans import WRITER_LOCK_SUFFIX

    code = gen_code(db, alice)
    scan_store = SqliteScanStore(services.settings.sqlite_path, group_commit=group_commit)
    row = {"code_id": code.id, "ts": 1, "country": None, "city": None, "device": "Mac", "os": "", "browser": "",
           "is_bot": False, "referrer_host": None, "user_agent": "", "visitor": ""}
    other_process = os.open(services.settings.sqlite_path + WRITER_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        writer = threading.Thread(target=scan_store.write, args=([row],))
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive()
        assert code_scan_count(db, code.id) == 0
        fcntl.flock(other_process, fcntl.LOCK_UN)
        writer.join(timeout=10)
        assert not writer.is_alive()
        assert code_scan_count(db, code.id) == 1
    finally:
        os.close(other_process)
        scan_store.close()


def code_scan_count(db, code_id: int) -> int:
    with db.read() as conn:
        return conn.exec_driver_sql("SELECT scan_count FROM codes WHERE id = ?", (code_id,)).scalar_one()


SCAN_ROW = {"ts": 1, "country": None, "city": None, "device": "Mac", "os": "", "browser": "", "is_bot": False,
            "referrer_host": None, "user_agent": "", "visitor": ""}


def test_under_full_with_wal_a_write_returns_only_after_it_synced_the_wal_itself(services, db, alice,
                                                                                  monkeypatch):
    """SQLite's FULL adds one thing to NORMAL in WAL mode, a sync of the WAL after each commit; the store
    does that sync itself, after the writer lock is released, and before the write is acknowledged."""
    import os

    code = gen_code(db, alice)
    scan_store = SqliteScanStore(services.settings.sqlite_path, synchronous="FULL")
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    try:
        scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        assert scan_store._connection().execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        wal = services.settings.sqlite_path + "-wal"
        assert synced == [wal, os.path.dirname(wal)]  # the folder once per process, for a WAL made since
        scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        assert synced == [wal, os.path.dirname(wal), wal]
        assert code_scan_count(db, code.id) == 2
    finally:
        scan_store.close()


def test_under_full_without_wal_sqlite_syncs_as_it_does(tmp_path):
    scan_store = SqliteScanStore(str(tmp_path / "rollback-journal.db"), wal=False, synchronous="FULL")
    try:
        assert not scan_store.syncs_wal_itself
        assert scan_store._connection().execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        scan_store.close()


def test_the_scan_paths_column_lengths_are_the_schemas():
    from sqlalchemy import String

    from qrtrack.store.schema import scans
    from qrtrack.store.sqlite_scans import SCAN_TEXT_LENGTHS

    assert SCAN_TEXT_LENGTHS == {column.name: column.type.length for column in scans.c
                                 if isinstance(column.type, String) and column.type.length}


def test_sqlite_scan_rows_are_fitted_as_on_every_database(services, db, alice):
    code = gen_code(db, alice)
    scan_store = SqliteScanStore(services.settings.sqlite_path)
    try:
        scan_store.write([{**SCAN_ROW, "code_id": code.id, "os": "Android " + "9" * 200, "city": "Par\x00is"}])
    finally:
        scan_store.close()
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT os, city FROM scans").one() == ("Android " + "9" * 56, "Paris")


def test_the_store_knows_whether_the_database_is_at_the_schema_its_sql_is_for(services, db, tmp_path):
    """A lean handler writes only then (fastpath.lean_fast_path); behind the code, the full app migrates first."""
    scan_store = SqliteScanStore(services.settings.sqlite_path, group_commit=False)
    assert scan_store.has_current_schema()
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    assert not scan_store.has_current_schema()
    assert not SqliteScanStore(str(tmp_path / "empty.db"), group_commit=False).has_current_schema()


@pytest.mark.parametrize("group_commit", [True, False], ids=["group-commit", "one-shot"])
def test_a_failed_write_is_rolled_back_whole_and_the_next_one_goes_through(services, db, alice, group_commit):
    """A row the database refuses (here a scan of a code deleted meanwhile) takes its batch's other rows with it
    and leaves neither a transaction open nor the writer lock held, or every later scan would fail too."""
    code = gen_code(db, alice)
    scan_store = SqliteScanStore(services.settings.sqlite_path, group_commit=group_commit)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            scan_store.write([{**SCAN_ROW, "code_id": code.id}, {**SCAN_ROW, "code_id": code.id + 1000}])
        scan_store.write([{**SCAN_ROW, "code_id": code.id}])
    finally:
        scan_store.close()
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM scans").scalar_one() == 1
        assert conn.exec_driver_sql("SELECT scan_count FROM codes WHERE id = ?", (code.id,)).scalar_one() == 1


def test_trim_wal_empties_a_long_wal_but_never_waits_for_a_reader(services, db, alice, monkeypatch):
    """A reader on an older snapshot (a backup, a long report) would hold an emptying checkpoint, and every writer
    behind it, for the busy timeout: trim_wal gives up at once instead, and empties the WAL once it is alone."""
    monkeypatch.setattr("qrtrack.store.sqlite_scans.WAL_TRIM_BYTES", 16 * 1024)
    code = gen_code(db, alice)
    path = services.settings.sqlite_path
    scan_store = SqliteScanStore(path, group_commit=False)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM scans").fetchone() == (0,)  # holds this snapshot
        for _ in range(20):
            scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        started = time.monotonic()
        scan_store.trim_wal()
        assert time.monotonic() - started < 5  # not the busy timeout, 10 s
        assert os.path.getsize(path + "-wal") > 16 * 1024
        reader.execute("COMMIT")
        scan_store.trim_wal()
        assert os.path.getsize(path + "-wal") == 0
        scan_store.write([{**SCAN_ROW, "code_id": code.id}])  # the connection still waits for others as before
        assert scan_store._connection().execute("PRAGMA busy_timeout").fetchone() == (10_000,)
    finally:
        reader.close()
        scan_store.close()
    assert code_scan_count(db, code.id) == 21


def wal_starts(path: str) -> int:
    """How many times the WAL has been started over: the checkpoint sequence number in its header."""
    with open(path + "-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_a_long_running_store_copies_the_wal_once_answered_not_inside_a_commit(services, db, alice, monkeypatch):
    """SQLite would copy the WAL inside the commit that takes it past 1,000 pages, and so the WAL would start over."""
    monkeypatch.setattr("qrtrack.store.sqlite_scans.CHECKPOINT_AFTER_ROWS", 500)
    code = gen_code(db, alice)
    path = services.settings.sqlite_path
    scan_store = SqliteScanStore(path)  # with group commit: a long-running process's
    try:
        scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        starts = wal_starts(path)
        for _ in range(499):  # well past 1,000 pages: three or so a scan
            assert scan_store.after_answer() is None
            scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        assert wal_starts(path) == starts
        after_answer = scan_store.after_answer()
        assert after_answer == scan_store.checkpoint_wal
        after_answer()
        assert scan_store.after_answer() is None
        scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        assert wal_starts(path) == starts + 1
    finally:
        scan_store.close()
    assert code_scan_count(db, code.id) == 501
    one_shot = SqliteScanStore(path, group_commit=False)  # a CGI scan's: SQLite's own checkpoints, and trim_wal
    assert one_shot.after_answer() == one_shot.trim_wal
    assert one_shot._connection().execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    one_shot.close()


def test_checkpoint_wal_takes_the_writers_turn_only_for_what_was_added_meanwhile(services, db, alice, monkeypatch):
    import fcntl

    code = gen_code(db, alice)
    scan_store = SqliteScanStore(services.settings.sqlite_path)
    events = []

    class RecordingConnection:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            events.append(sql)
            return self.conn.execute(sql, *args)

    real_flock = fcntl.flock
    monkeypatch.setattr("qrtrack.store.sqlite_scans.fcntl.flock", lambda fd, operation: (
        events.append("turn taken" if operation & fcntl.LOCK_EX else "turn ended"), real_flock(fd, operation))[1])
    try:
        scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        scan_store._local.conn = RecordingConnection(scan_store._local.conn)
        events.clear()
        scan_store.checkpoint_wal()
    finally:
        scan_store._local.conn = scan_store._local.conn.conn
        scan_store.close()
    assert events == ["PRAGMA wal_checkpoint(PASSIVE)", "turn taken", "PRAGMA wal_checkpoint(PASSIVE)", "turn ended"]


def test_should_processes_end_before_they_copy_the_wal_sqlite_still_does(services, db, alice, monkeypatch):
    monkeypatch.setattr("qrtrack.store.sqlite_scans.CHECKPOINT_AFTER_ROWS", 10_000)
    monkeypatch.setattr("qrtrack.store.sqlite_scans.CHECKPOINT_BACKSTOP_PAGES", 60)
    code = gen_code(db, alice)
    path = services.settings.sqlite_path
    scan_store = SqliteScanStore(path)
    try:
        scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        starts = wal_starts(path)
        for _ in range(40):  # over 60 pages, then some
            scan_store.write([{**SCAN_ROW, "code_id": code.id}])
        assert scan_store.after_answer() is None
        assert wal_starts(path) > starts
    finally:
        scan_store.close()


def test_sqlite_primary_code_reads_the_low_byte_of_an_extended_code(tmp_path):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as duplicate:
        conn.execute("INSERT INTO t VALUES (1)")
    assert duplicate.value.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_UNIQUE  # extended: 2067
    assert sqlite_primary_code(duplicate.value) == sqlite3.SQLITE_CONSTRAINT
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, " * 512)
    with pytest.raises(sqlite3.DatabaseError) as damaged:
        sqlite3.connect(garbage).execute("SELECT * FROM sqlite_master")
    assert sqlite_primary_code(damaged.value) == sqlite3.SQLITE_NOTADB
    assert sqlite_primary_code(ValueError("not SQLite's")) is None
    conn.close()
