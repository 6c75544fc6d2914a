"""Upgrades as users live them: a database the previous release (schema 0003) filled for months, opened by this one.

The old database is built the quick way: migrated to 0003, then filled with the rows the old code wrote (keys without
a form token, scans with the old HMAC-SHA256 visitor ids, rollups as its analytics left them). Then the current app
starts on it, as after "replace the files", and everything a user sees must be as before.
"""
from __future__ import annotations

import hashlib
import hmac
import random
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text

from qrtrack import accounts, analytics, codes, create_app, keys, rollups
from qrtrack.config import ConfigError
from qrtrack.images import qr
from qrtrack.store import keys as key_store
from qrtrack.store.db import SCHEMA_REVISION, Database, _alembic_config, ensure_schema, migrate_to_head, schema_revision

from ..conftest import PASSWORD, close_app, database_at
from ..dashboard_helpers import log_in
from ..dashboard_helpers import text as page_text
from ..web.dashboard.test_codes_pages import png_bytes

pytestmark = pytest.mark.postgresql

OLD_REVISION = "0003"
SECRET = "upgrade-test-secret"
OLD_KEY = keys.KEY_PREFIX + "0123456789abcdef" * 2 + "01234567"
DAY = 86400
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Version/17.0 Mobile/15E148 Safari/604.1"
ANDROID = "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120.0 Mobile Safari/537.36"
# (code, days ago, anonymised address, User-Agent, is_bot): two visitors, one twice on a day, one bot.
OLD_SCANS = [
    ("menu", 3, "81.2.69.0", IPHONE, False),
    ("menu", 3, "81.2.69.0", IPHONE, False),
    ("menu", 3, "2.16.1.0", ANDROID, False),
    ("menu", 2, "81.2.69.0", IPHONE, False),
    ("menu", 2, "", "facebookexternalhit/1.1", True),
    ("logo", 1, "2.16.1.0", ANDROID, False),
]
DATA_TABLES = ("users", "api_keys", "codes", "scans", "api_calls", "scan_rollup_days", "scan_rollup_values",
               "rollup_watermarks")


@dataclass
class OldInstance:
    instance: Path
    url: str
    user_id: int
    key_id: int
    uuids: dict[str, str]  # code name: uuid
    slugs: dict[str, str]


def old_visitor_id(anonymous_address: str, user_agent: str, ts: int) -> str:
    """The visitor id the previous release stored: HMAC-SHA256, keyed by a hash of SECRET_KEY."""
    key = hashlib.sha256(("visitor:" + SECRET).encode()).digest()
    message = f"{anonymous_address}|{user_agent}|{ts // DAY}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


@pytest.fixture
def old_instance(tmp_path: Path, empty_database_url: str) -> OldInstance:
    """An instance folder and a database as the previous release left them after some use."""
    from alembic import command

    instance = tmp_path / "instance"
    db = database_at(empty_database_url, INSTANCE_PATH=str(instance), SECRET_KEY=SECRET)
    with db.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), OLD_REVISION)
    user_id = accounts.create_user(db, username="alice", password=PASSWORD, is_admin=True)
    logo_dir = instance / "logos"
    made = {"menu": codes.create_code(db, owner_id=user_id, destination="https://example.com/menu",
                                      label="Spring menu", logo_dir=logo_dir),
            "logo": codes.create_code(db, owner_id=user_id, destination="https://example.com/ünï", label="Ümlaut ✓",
                                      logo=codes.save_logo(logo_dir, qr.sanitize_logo(png_bytes())),
                                      logo_dir=logo_dir)}
    today = analytics.today_utc()
    first_day = (today - analytics.EPOCH_DATE).days
    with db.write() as conn:
        key_id = _insert_old_key(conn, user_id)
        key_store.insert_api_call(conn, {"user_id": user_id, "key_id": key_id, "key_name": "laptop",
                                         "ts": first_day * DAY, "method": "GET", "path": "/api.php", "status": 200,
                                         "duration_ms": 3})
        for name, days_ago, address, user_agent, is_bot in OLD_SCANS:
            _insert_old_scan(conn, made[name].id, ts=(first_day - days_ago) * DAY + 43_200, address=address,
                             user_agent=user_agent, is_bot=is_bot)
    assert rollups.refresh_rollups(db) == len(OLD_SCANS)  # the old code's analytics pages did this
    db.dispose()
    return OldInstance(instance, empty_database_url, user_id, key_id, {name: code.uuid for name, code in made.items()},
                       {name: code.slug for name, code in made.items()})


def _insert_old_key(conn, user_id: int) -> int:
    conn.execute(text("INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) "
                      "VALUES (:user_id, 'laptop', :prefix, :hash, 1)"),
                 {"user_id": user_id, "prefix": OLD_KEY[:keys.DISPLAY_PREFIX_LENGTH],
                  "hash": keys.hash_api_key(OLD_KEY)})
    return conn.execute(text("SELECT id FROM api_keys")).scalar_one()


def _insert_old_scan(conn, code_id: int, *, ts: int, address: str, user_agent: str, is_bot: bool) -> None:
    device = "bot" if is_bot else "mobile"
    conn.execute(text("INSERT INTO scans (code_id, ts, country, city, device, os, browser, is_bot, referrer_host, "
                      "user_agent, visitor) VALUES (:code_id, :ts, 'GB', '', :device, 'iOS', 'Safari', :is_bot, '', "
                      ":user_agent, :visitor)"),
                 {"code_id": code_id, "ts": ts, "device": device, "is_bot": is_bot, "user_agent": user_agent,
                  "visitor": old_visitor_id(address, user_agent, ts)})
    conn.execute(text("UPDATE codes SET scan_count = scan_count + 1 WHERE id = :code_id"), {"code_id": code_id})


def start_app(old: OldInstance) -> Flask:
    """The current release started on the old instance, as after replacing the files."""
    return create_app({"TESTING": True, "ENV_FILE": None, "INSTANCE_PATH": str(old.instance),
                       "DATABASE_URL": old.url, "SECRET_KEY": SECRET})


@pytest.fixture
def upgraded_app(old_instance: OldInstance):
    app = start_app(old_instance)
    yield app
    close_app(app)


def old_database(old: OldInstance) -> Database:
    return database_at(old.url, INSTANCE_PATH=str(old.instance), SECRET_KEY=SECRET)


def all_rows(db: Database) -> dict[str, list[tuple]]:
    """Every row of the tables users' data lives in, in a stable order."""
    with db.read() as conn:
        return {table: sorted((tuple(row) for row in conn.execute(text(f"SELECT * FROM {table}"))), key=repr)
                for table in DATA_TABLES}


def reports(db: Database, old: OldInstance) -> dict[tuple, analytics.Report]:
    """The analytics of the last 30 days, of each code and of all of them, with and without bots."""
    period = analytics.parse_period(None, None, today=analytics.today_utc())
    with db.read() as conn:
        code_ids = [conn.execute(text("SELECT id FROM codes WHERE uuid = :uuid"), {"uuid": uuid}).scalar_one()
                    for uuid in old.uuids.values()]
    found = {}
    for include_bots in (False, True):
        found[("owner", include_bots)] = analytics.build_report(db, owner_id=old.user_id, period=period,
                                                                include_bots=include_bots)
        for code_id in code_ids:
            found[(code_id, include_bots)] = analytics.build_report(db, code_id=code_id, period=period,
                                                                    include_bots=include_bots)
    return found


def test_start_up_upgrades_the_old_database_and_keeps_every_row_and_figure(old_instance):
    before_db = old_database(old_instance)
    rows_before, reports_before = all_rows(before_db), reports(before_db, old_instance)
    before_db.dispose()

    app = start_app(old_instance)
    db = app.extensions["qrtrack"].db
    assert schema_revision(db) == SCHEMA_REVISION
    assert reports(db, old_instance) == reports_before
    assert all_rows(db) == {**rows_before, "api_keys": [(*row, None) for row in rows_before["api_keys"]]}
    owner = reports_before[("owner", False)]
    assert (owner.scans, owner.unique_scans, owner.bot_scans) == (5, 4, 1)
    close_app(app)


def test_after_the_upgrade_the_old_key_lists_the_codes_with_their_scan_logs(upgraded_app, old_instance):
    client = upgraded_app.test_client()
    headers = {"X-Api-Key": OLD_KEY}
    listed = client.get("/api.php", headers=headers)
    assert listed.status_code == 200
    assert {code["uuid"]: code["scans"] for code in listed.get_json()["codes"]} == {
        old_instance.uuids["menu"]: 5, old_instance.uuids["logo"]: 1}
    detail = client.get(f"/api.php?uuid={old_instance.uuids['menu']}", headers=headers).get_json()
    assert detail["scan_count"] == 5
    assert len(detail["scans"]) == 5


def test_after_the_upgrade_the_old_password_opens_the_dashboard_with_the_same_figures(upgraded_app, old_instance):
    client = upgraded_app.test_client()
    assert log_in(client).status_code == 302
    overview = page_text(client.get("/analytics"))
    assert re.findall(r'<div class="stat-value">([\d,]+)</div>', overview)[:3] == ["5", "4", "1"]
    menu = old_instance.uuids["menu"]
    assert re.findall(r'<div class="stat-value">([\d,]+)</div>', page_text(client.get(f"/codes/{menu}")))[:3] == [
        "4", "3", "1"]
    export = client.get(f"/codes/{menu}/scans.csv?bots=1")
    assert export.status_code == 200
    assert len(export.get_data(as_text=True).splitlines()) == 1 + 5  # the header, then every scan, bots too
    assert OLD_KEY[:keys.DISPLAY_PREFIX_LENGTH] in page_text(client.get("/settings/api-keys"))
    assert client.get("/console/history").status_code == 200


def test_after_the_upgrade_the_old_codes_images_are_served(upgraded_app, old_instance):
    client = upgraded_app.test_client()
    for slug in old_instance.slugs.values():
        for path in (f"/img/{slug}.png", f"/img/{slug}.svg", f"/img/{slug}.png?size=800"):
            assert client.get(path).status_code == 200, path
    log_in(client)
    page = page_text(client.get(f"/codes/{old_instance.uuids['logo']}")).replace("&amp;", "&")
    versioned = re.search(r'/img/\w+\.svg\?v=[0-9a-f]+', page).group(0)
    image = client.get(versioned)
    assert image.status_code == 200
    assert "immutable" in image.headers["Cache-Control"]


def test_after_the_upgrade_a_key_form_sent_twice_makes_one_key(upgraded_app):
    client = upgraded_app.test_client()
    log_in(client)
    page = page_text(client.get("/settings/api-keys"))
    form = {**dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page)), "name": "new"}
    assert client.post("/settings/api-keys", data=form).status_code == 201
    again = client.post("/settings/api-keys", data=form)
    assert again.status_code == 200
    assert "already generated by this form" in page_text(again)
    with upgraded_app.extensions["qrtrack"].db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM api_keys")).scalar_one() == 2


def test_starting_again_and_the_operator_commands_after_the_upgrade_change_nothing(upgraded_app, old_instance):
    db = upgraded_app.extensions["qrtrack"].db
    rows = all_rows(db)
    again = start_app(old_instance)
    runner = upgraded_app.test_cli_runner()
    assert "schema is current" in runner.invoke(args=["init-db"]).output
    assert "Counted 0 new scans" in runner.invoke(args=["refresh-analytics"]).output
    assert schema_revision(db) == SCHEMA_REVISION
    assert all_rows(db) == rows
    close_app(again)


def test_a_backup_of_the_upgraded_database_holds_everything(upgraded_app, tmp_path, backend):
    result = upgraded_app.test_cli_runner().invoke(args=["backup", str(tmp_path / "backup.db")])
    if backend != "sqlite":
        assert result.exit_code != 0 and "backup works on SQLite" in result.output
        return
    assert result.exit_code == 0, result.output
    copy = sqlite3.connect(tmp_path / "backup.db")
    assert copy.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_REVISION,)]
    assert copy.execute("SELECT COUNT(*) FROM scans").fetchone() == (len(OLD_SCANS),)
    copy.close()
    backup = database_at(f"sqlite:///{tmp_path / 'backup.db'}")
    assert all_rows(backup) == all_rows(upgraded_app.extensions["qrtrack"].db)
    backup.dispose()


def test_a_database_a_newer_release_upgraded_stops_start_up_with_one_line_and_stays_as_it_is(upgraded_app,
                                                                                            old_instance):
    """A user going back to an older release after upgrading: refused by name, not an Alembic traceback."""
    db = upgraded_app.extensions["qrtrack"].db
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9001'"))
    rows = all_rows(db)
    with pytest.raises(ConfigError, match=r"upgraded by a newer version of QR Track \(schema 9001; this version "
                                          rf"knows up to {SCHEMA_REVISION}\)"):
        start_app(old_instance)
    assert schema_revision(db) == "9001"
    assert all_rows(db) == rows


def test_a_second_process_starting_while_the_first_upgrades_waits_and_then_finds_the_schema_current(old_instance,
                                                                                                  backend):
    """The workers of a server start together: on PostgreSQL all but one failed with "column already exists"."""
    first, second = old_database(old_instance), old_database(old_instance)
    outcome = []

    def start_second() -> None:
        try:
            ensure_schema(second)
        except Exception as error:  # the failure is what this test reports
            outcome.append(error)
        else:
            outcome.append("current")

    with first.engine.connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            migrate_to_head(conn)
            waiting = threading.Thread(target=start_second)
            waiting.start()
            _wait_until_blocked(first, backend)
    waiting.join(timeout=30)
    assert outcome == ["current"]
    assert schema_revision(second) == SCHEMA_REVISION
    first.dispose()
    second.dispose()


def _wait_until_blocked(db: Database, backend: str) -> None:
    """Until another connection waits for a lock (on SQLite, give the second start a moment to reach its BEGIN)."""
    if backend == "sqlite":
        time.sleep(0.3)
        return
    query = text("SELECT COUNT(*) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND wait_event_type = 'Lock'")
    deadline = time.monotonic() + 10
    with db.engine.connect() as watcher:
        while watcher.execute(query).scalar_one() == 0:
            watcher.rollback()  # pg_stat_activity holds still within a transaction
            assert time.monotonic() < deadline, "the second start never waited for the first"
            time.sleep(0.02)


def test_the_upgrade_to_0006_counts_the_scans_rollups_missed_and_the_scans_after_a_later_delete(tmp_path,
                                                                                               empty_database_url):
    """Under 0005 on SQLite, deleting the code with the newest scans let later scans take its ids, at or below the
    rollup watermark, where the analytics never counted them. The upgrade counts them, and from then on the
    scans after such a delete are counted too."""
    from alembic import command

    from ..test_rollups import NOW, gen_scans, random_scans, rollup_rows, rows_from_the_scan_log

    db = database_at(empty_database_url, INSTANCE_PATH=str(tmp_path / "instance"), SECRET_KEY=SECRET)
    with db.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0005")
    owner = accounts.create_user(db, username="alice", password=PASSWORD)

    def new_code() -> int:
        return codes.create_code(db, owner_id=owner, destination="https://example.com/", logo_dir=tmp_path).id

    def scan_then_delete_the_newest(kept: int, deleted: int) -> None:
        gen_scans(db, random_scans([kept], 3, rng=rng, first_day=today - 3, last_day=today - 2))
        gen_scans(db, random_scans([deleted], 4, rng=rng, first_day=today - 2, last_day=today - 1))
        rollups.refresh_rollups(db, now=NOW)
        with db.write() as conn:
            conn.execute(text("DELETE FROM codes WHERE id = :id"), {"id": deleted})
        gen_scans(db, random_scans([kept], 2, rng=rng, first_day=today - 1, last_day=today - 1))
        rollups.refresh_rollups(db, now=NOW)

    today, rng = NOW // DAY, random.Random(6)
    kept = new_code()
    scan_then_delete_the_newest(kept, new_code())
    ensure_schema(db)
    assert schema_revision(db) == SCHEMA_REVISION
    rollups.refresh_rollups(db, now=NOW)
    assert rollup_rows(db) == rows_from_the_scan_log(db)
    scan_then_delete_the_newest(kept, new_code())
    assert rollup_rows(db) == rows_from_the_scan_log(db)
    db.dispose()


def test_init_db_says_the_start_upgraded_the_schema_and_from_which_revision(upgraded_app, old_instance):
    """An outsider ran init-db on the start that upgraded 0005 and read only that the schema was current."""
    output = upgraded_app.test_cli_runner().invoke(args=["init-db"]).output
    assert f"schema is current ({SCHEMA_REVISION}): upgraded it from {OLD_REVISION}." in output
    again = start_app(old_instance)  # the next start finds it current
    assert again.test_cli_runner().invoke(args=["init-db"]).output.strip().endswith(
        f"schema is current ({SCHEMA_REVISION}).")
    close_app(again)
