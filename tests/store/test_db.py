"""Database: migrations from empty match schema.py, SQLite pragmas, write transactions, online backup.

The tests marked postgresql run on SQLite and again on a fresh PostgreSQL database.
"""
from __future__ import annotations

import sqlite3
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, inspect, text

from qrtrack.store import accounts as account_store
from qrtrack.store import codes as code_store
from qrtrack.store import keys as key_store
from qrtrack.store import scans as scan_store
from qrtrack.store.db import (
    SCHEMA_REVISION,
    Database,
    backup_sqlite,
    ensure_schema,
    head_revision,
    is_schema_current,
    upgrade_schema,
)
from qrtrack.store.schema import metadata

from ..conftest import close_app, database_at, gen_code, gen_user


def fresh_db(tmp_path, url: str = "", **overrides) -> Database:
    """A Database with no tables: a new SQLite file in tmp_path, or url (an empty database)."""
    return database_at(url, INSTANCE_PATH=str(tmp_path), **overrides)


@pytest.mark.postgresql
def test_migrations_from_an_empty_database_build_exactly_the_schema(tmp_path, empty_database_url):
    db = fresh_db(tmp_path, empty_database_url)
    assert not is_schema_current(db)
    upgrade_schema(db)
    assert is_schema_current(db)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    db.dispose()


@pytest.mark.postgresql
def test_migrating_down_to_the_previous_version_and_up_again_gives_the_same_schema(tmp_path, empty_database_url):
    from alembic import command

    from qrtrack.store.db import _alembic_config

    db = fresh_db(tmp_path, empty_database_url)
    upgrade_schema(db)
    user_id = gen_user(db)
    gen_code(db, user_id)
    with db.engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0002")
    with db.engine.connect() as conn:
        assert "ix_scans_code_bot_ts" in {index["name"] for index in inspect(conn).get_indexes("scans")}
    upgrade_schema(db)
    with db.engine.connect() as conn:
        assert "ix_scans_code_bot_ts" not in {index["name"] for index in inspect(conn).get_indexes("scans")}
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert code_store.count_codes(conn, user_id) == 1
    db.dispose()


@pytest.mark.postgresql
def test_upgrading_from_0003_gives_keys_a_form_token_and_keeps_their_call_log(tmp_path, empty_database_url):
    """0004 adds api_keys.form_token in place: a copy of the table would unlink the call log from its keys."""
    from alembic import command

    from qrtrack.store.db import _alembic_config

    db = fresh_db(tmp_path, empty_database_url)
    with db.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0003")
    user_id = gen_user(db)
    with db.write() as conn:
        for number in (1, 2):
            conn.execute(text("INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) "
                              "VALUES (:user_id, 'old', 'qrt_', :hash, 1)"), {"user_id": user_id, "hash": str(number)})
        key_id = conn.execute(text("SELECT MIN(id) FROM api_keys")).scalar_one()
        key_store.insert_api_call(conn, {"user_id": user_id, "key_id": key_id, "ts": 1, "method": "GET",
                                         "path": "/api.php", "status": 200, "duration_ms": 1})

    def call_key_ids() -> list[int | None]:
        with db.read() as conn:
            return conn.execute(text("SELECT key_id FROM api_calls")).scalars().all()

    upgrade_schema(db)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        assert conn.execute(text("SELECT form_token FROM api_keys")).scalars().all() == [None, None]
    assert call_key_ids() == [key_id]
    with db.engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0003")
    with db.engine.connect() as conn:
        assert "form_token" not in {column["name"] for column in inspect(conn).get_columns("api_keys")}
    assert call_key_ids() == [key_id]
    db.dispose()


def test_start_up_revision_constant_names_the_newest_migration():
    assert SCHEMA_REVISION == head_revision()


@pytest.mark.postgresql
def test_app_start_creates_or_upgrades_the_schema(tmp_path, empty_database_url):
    from qrtrack import create_app

    app = create_app({"TESTING": True, "ENV_FILE": None, "INSTANCE_PATH": str(tmp_path),
                      "DATABASE_URL": empty_database_url})
    assert is_schema_current(app.extensions["qrtrack"].db)
    close_app(app)


@pytest.mark.postgresql
def test_start_up_on_an_empty_database_runs_no_failing_statement(tmp_path, empty_database_url):
    """PostgreSQL logs every failed statement as an ERROR: a first start must not leave one in the server's log
    (it looked for alembic_version before the table existed)."""
    db = fresh_db(tmp_path, empty_database_url)
    failed = []
    event.listen(db.engine, "handle_error", lambda context: failed.append(context.statement))
    ensure_schema(db)
    ensure_schema(db)  # and again, now current
    assert failed == [] and is_schema_current(db)
    db.dispose()


@pytest.mark.postgresql
def test_upgrade_is_idempotent(tmp_path, empty_database_url):
    db = fresh_db(tmp_path, empty_database_url)
    upgrade_schema(db)
    upgrade_schema(db)
    with db.read() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
    db.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys_and_busy_timeout(tmp_path):
    db = fresh_db(tmp_path)
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
    db.dispose()


def test_wal_can_be_turned_off_and_full_sync_turned_on_for_network_filesystems(tmp_path):
    db = fresh_db(tmp_path, SQLITE_WAL="false", SQLITE_SYNCHRONOUS="FULL")
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "delete"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2
    db.dispose()


@pytest.mark.postgresql
def test_a_failed_write_transaction_leaves_nothing_behind(tmp_path, empty_database_url):
    db = fresh_db(tmp_path, empty_database_url)
    upgrade_schema(db)
    with pytest.raises(RuntimeError, match="boom"), db.write() as conn:
        account_store.insert_user(conn, username="ghost", password_hash="x", is_admin=False, now=1)
        raise RuntimeError("boom")
    with db.read() as conn:
        assert account_store.list_users_by_lowercase_username(conn, "ghost") == []
    db.dispose()


@pytest.mark.postgresql
def test_concurrent_writers_queue_instead_of_failing(tmp_path, empty_database_url):
    db = fresh_db(tmp_path, empty_database_url)
    upgrade_schema(db)
    user_id = gen_user(db)
    errors: list[Exception] = []

    def create_many() -> None:
        try:
            for _ in range(15):
                gen_code(db, user_id)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=create_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with db.read() as conn:
        assert code_store.count_codes(conn, user_id) == 60
    db.dispose()


@pytest.mark.postgresql
def test_scan_and_api_call_ids_go_past_32_bits(tmp_path, empty_database_url, backend):
    """PostgreSQL's integer ids end at 2**31 - 1, where scans would stop being recorded (0005 widens them)."""
    from qrtrack.store.scans import SqlAlchemyScanStore

    if backend == "sqlite":
        pytest.skip("SQLite's row ids are 64-bit whatever the schema says: nothing here could fail")
    db = fresh_db(tmp_path, empty_database_url)
    upgrade_schema(db)
    user_id = gen_user(db)
    code = gen_code(db, user_id)
    last_id = 2**31 + 5
    with db.write() as conn:
        for table in ("scans", "api_calls"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {last_id})"))
        key_store.insert_api_call(conn, {"user_id": user_id, "key_id": None, "ts": 2, "method": "GET",
                                         "path": "/api.php", "status": 200, "duration_ms": 1})
    SqlAlchemyScanStore(db.engine).write([{"code_id": code.id, "ts": 2, "device": "iPhone", "os": "iOS",
                                           "browser": "Safari", "is_bot": False, "user_agent": "", "visitor": ""}])
    with db.read() as conn:
        assert conn.execute(text("SELECT MAX(id) FROM scans WHERE ts = 2")).scalar_one() == last_id + 1
        assert conn.execute(text("SELECT MAX(id) FROM api_calls WHERE ts = 2")).scalar_one() == last_id + 1
    db.dispose()


@pytest.mark.postgresql
def test_deleting_a_user_removes_their_codes_and_scans(tmp_path, empty_database_url):
    db = fresh_db(tmp_path, empty_database_url)
    upgrade_schema(db)
    user_id = gen_user(db)
    code = gen_code(db, user_id)
    with db.write() as conn:
        scan_store.insert_scans(conn, [{"code_id": code.id, "ts": 1, "device": "iPhone", "os": "", "browser": "",
                                        "is_bot": False, "user_agent": "", "visitor": "v"}])
        account_store.delete_user(conn, user_id)
    with db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM scans")).scalar_one() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM codes")).scalar_one() == 0
    db.dispose()


def test_backup_copies_a_consistent_database(tmp_path):
    db = fresh_db(tmp_path)
    upgrade_schema(db)
    gen_user(db, "bob")
    target = tmp_path / "backup.db"
    backup_sqlite(db, target)
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("SELECT username FROM users").fetchall() == [("bob",)]
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        copy.close()
    db.dispose()
