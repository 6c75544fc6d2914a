"""Operator commands: they work on a fresh instance folder and fail with one clear line."""
from __future__ import annotations

import os
import re
import sqlite3
import time

import pytest

from qrtrack import accounts, keys


def cli_app(tmp_path):
    from qrtrack import create_app

    return create_app({"TESTING": True, "ENV_FILE": None, "INSTANCE_PATH": str(tmp_path / "fresh")})


def test_init_db_creates_the_schema_on_a_fresh_instance(tmp_path):
    app = cli_app(tmp_path)
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fresh" / "qrtrack.db").is_file()
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    app.extensions["qrtrack"].db.dispose()


def test_init_db_on_a_fresh_instance_says_the_start_created_the_schema(tmp_path):
    from qrtrack.store.db import SCHEMA_REVISION

    app = cli_app(tmp_path)
    output = app.test_cli_runner().invoke(args=["init-db"]).output
    assert output == f"Database ready: sqlite schema is current ({SCHEMA_REVISION}): created it.\n"
    app.extensions["qrtrack"].db.dispose()


def test_create_user_then_api_key_prints_the_key_alone_on_the_last_line(tmp_path):
    app = cli_app(tmp_path)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-user", "alice", "--password", "long enough pw", "--admin"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["create-api-key", "alice", "--label", "laptop"])
    assert result.exit_code == 0, result.output
    last_line = result.output.strip().splitlines()[-1]
    assert re.fullmatch(r"qrt_[0-9a-f]{32,}", last_line)
    db = app.extensions["qrtrack"].db
    assert keys.authenticate_api_key(db, last_line).key_name == "laptop"
    assert accounts.find_user(db, "alice").is_admin
    db.dispose()


def test_errors_exit_non_zero_with_one_clear_line(tmp_path):
    app = cli_app(tmp_path)
    runner = app.test_cli_runner()
    runner.invoke(args=["create-user", "alice", "--password", "long enough pw"])
    for args, message in ((["create-user", "alice", "--password", "long enough pw"], "already exists"),
                          (["create-user", "Alice", "--password", "long enough pw"], "user names ignore case"),
                          (["create-user", "bob", "--password", "short"], "at least 8"),
                          (["create-api-key", "nobody"], "no user named 'nobody'")):
        result = runner.invoke(args=args)
        assert result.exit_code != 0
        assert message in result.output and "Traceback" not in result.output
    app.extensions["qrtrack"].db.dispose()


def printed_admin_password(result) -> str:
    assert result.exit_code == 0, result.output
    match = re.search(r"password '([^']+)'", result.output)
    assert match, result.output
    return match.group(1)


def test_ensure_admin_creates_one_with_a_random_password_once(tmp_path):
    first_app, again_app, other_app = cli_app(tmp_path), cli_app(tmp_path), cli_app(tmp_path / "other")
    password = printed_admin_password(first_app.test_cli_runner().invoke(args=["ensure-admin"]))
    db = first_app.extensions["qrtrack"].db
    assert accounts.authenticate_user(db, username="admin", password=password)

    again = again_app.test_cli_runner().invoke(args=["ensure-admin"])
    assert again.exit_code == 0 and "Users exist already" in again.output and "password '" not in again.output
    assert accounts.count_users(db) == 1
    assert accounts.authenticate_user(db, username="admin", password=password)

    assert printed_admin_password(other_app.test_cli_runner().invoke(args=["ensure-admin"])) != password
    for app in (first_app, again_app, other_app):
        app.extensions["qrtrack"].db.dispose()


def test_backup_writes_a_readable_copy(tmp_path):
    app = cli_app(tmp_path)
    runner = app.test_cli_runner()
    runner.invoke(args=["create-user", "alice", "--password", "long enough pw"])
    result = runner.invoke(args=["backup", str(tmp_path / "copy.db")])
    assert result.exit_code == 0, result.output
    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert copy.execute("SELECT username FROM users").fetchall() == [("alice",)]
    finally:
        copy.close()


def test_remove_unused_logos_reports_what_it_removed(tmp_path):
    from qrtrack import codes

    app = cli_app(tmp_path)
    services = app.extensions["qrtrack"]
    logo = codes.save_logo(services.logo_dir, b"nobody's logo")
    runner = app.test_cli_runner()
    kept = runner.invoke(args=["remove-unused-logos"])
    assert kept.exit_code == 0 and "Removed 0 unused logo files." in kept.output
    removed = runner.invoke(args=["remove-unused-logos", "--older-than-hours", "0"])
    assert removed.exit_code == 0 and "Removed 1 unused logo file." in removed.output
    assert not codes.logo_path(services.logo_dir, logo).exists()
    services.db.dispose()


def test_backup_to_a_folder_that_does_not_exist_fails_with_one_clear_line(tmp_path):
    app = cli_app(tmp_path)
    missing = tmp_path / "nonexistent"
    result = app.test_cli_runner().invoke(args=["backup", str(missing / "copy.db")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"Error: cannot back up to {missing / 'copy.db'}: there is no folder {missing}"]
    app.extensions["qrtrack"].db.dispose()


@pytest.mark.parametrize("target", ["fresh/qrtrack.db", "fresh/../fresh/qrtrack.db", "link-to-instance/qrtrack.db",
                                    "hard-link.db", "fresh/qrtrack.db-wal", "fresh/qrtrack.db-shm",
                                    "fresh/qrtrack.db-journal", "fresh/qrtrack.db-writer.lock"])
def test_backup_refuses_to_write_over_the_live_database_or_the_files_beside_it(tmp_path, target):
    app = cli_app(tmp_path)
    runner = app.test_cli_runner()
    runner.invoke(args=["create-user", "alice", "--password", "long enough pw"])
    live = tmp_path / "fresh" / "qrtrack.db"
    (tmp_path / "link-to-instance").symlink_to(tmp_path / "fresh")
    os.link(live, tmp_path / "hard-link.db")
    result = runner.invoke(args=["backup", str(tmp_path / target)])
    assert result.exit_code != 0
    [line] = result.output.strip().splitlines()
    assert "is the live database" in line and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a clean exit, not an uncaught error
    assert accounts.find_user(app.extensions["qrtrack"].db, "alice")
    app.extensions["qrtrack"].db.dispose()
    check = sqlite3.connect(live)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        check.close()


def test_refresh_analytics_counts_the_settled_scans_once(tmp_path):
    from qrtrack import rollups
    from qrtrack.store import analytics as analytics_store
    from qrtrack.store import scans as scan_store

    from .conftest import gen_code, gen_user

    app = cli_app(tmp_path)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["init-db"]).exit_code == 0
    db = app.extensions["qrtrack"].db
    code = gen_code(db, gen_user(db))
    settled, recent = time.time() - 10 * rollups.SETTLE_SECONDS, time.time()
    with db.write() as conn:
        scan_store.insert_scans(conn, [{"code_id": code.id, "ts": int(ts), "device": "iPhone", "os": "", "browser": "",
                                        "is_bot": False, "user_agent": "", "visitor": "v"}
                                  for ts in (settled, settled, recent)])
    first = runner.invoke(args=["refresh-analytics"])
    assert first.exit_code == 0 and first.output == "Counted 2 new scans into the analytics.\n"
    again = runner.invoke(args=["refresh-analytics"])
    assert again.output == "Counted 0 new scans into the analytics.\n"
    with db.read() as conn:
        assert analytics_store.count_scans_after(conn, after_id=analytics_store.get_rollup_watermark(conn)) == 1
    db.dispose()
