"""The shipped .htaccess and entries on a real Apache: the app in a sub-folder and at a domain's root, under CGI,
FastCGI and Passenger.

Each mode gets a private Apache on 127.0.0.1 (tests/deploy/apache.py) serving one copy of the working tree at
/qr/ and another at the root of a second port, and a minimal app behind the same entries at the root of a third.
Checks that do not depend on where the app is mounted run in the sub-folder only. Needs the Debian packages
apache2, libapache2-mod-fcgid, libapache2-mod-passenger and python3-venv (manage.py test installs them).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

from ..conftest import PASSWORD, require
from .apache import MODES, SUB_FOLDER, Apache, missing_for, write_probe
from .site import WEB_USER, Response, copy_app, deploy_venv, fetch, give_to_web_user, make_web_root, run_flask

pytestmark = pytest.mark.server
MOUNTS = {"sub-folder": SUB_FOLDER, "root": ""}
RATE_LIMIT = 5
CONCURRENT_SCANS = 40      # 8 at a time, so several CGI processes write at once
KEY_NAMES = ("contract", "scans", "limit", "load")
PRIVATE_PATHS = (
    "TiCore/.env", "TiCore/.env.example", "instance/qrtrack.db", "instance/.htaccess", "qrtrack/config.py",
    "app.py", "passenger_wsgi.py", "hosting.py", "manage.py", "requirements.txt", ".htaccess", ".venv/pyvenv.cfg",
    "templates/base.html", "tests/conftest.py", "deploy/nginx.conf",
)
ENTRY_SCRIPT = re.compile(r"app\.f?cgi")


@dataclass
class Seed:
    """A copy of the app with TiCore/.env and a database holding alice and one API key per test."""

    folder: Path
    keys: dict[str, str]


@dataclass
class Site:
    """The app as a client sees it, mounted at SUB_FOLDER or at the root ("") of its Apache."""

    apache: Apache
    mount: str
    keys: dict[str, str]

    @property
    def folder(self) -> Path:
        return self.apache.app_folder(self.mount)

    def url(self, path: str = "") -> str:
        return self.apache.url(self.mount, path)

    def api(self, method: str = "GET", query: str = "", *, key: str | None = None,
            body: dict[str, Any] | None = None) -> Response:
        headers = {"X-Api-Key": self.keys[key]} if key else {}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        return fetch(self.url("api.php" + query), method, headers=headers, body=data)

    def expect(self, response: Response, status: int) -> Any:
        """response's JSON body, after checking its status; Apache's error log tail in the message if not."""
        assert response.status == status, (f"{response.status} {response.body[:500]!r}\n"
                                           f"--- Apache error log ---\n{self.apache.log_tail()}")
        return json.loads(response.body) if response.header("Content-Type") == "application/json" else None

    def create_code(self, key: str, destination: str) -> dict[str, Any]:
        return self.expect(self.api("POST", key=key, body={"destination": destination}), 201)

    def assert_own_link(self, link: str) -> None:
        """link (from a page or a Location header) leads into this site: under its mount, not via an entry script."""
        target = urlsplit(urljoin(self.url(), link))
        assert target.netloc == urlsplit(self.url()).netloc, f"{link} leads to another site"
        assert target.path.startswith(self.mount + "/"), f"{link} is outside {self.mount}/"
        assert not ENTRY_SCRIPT.search(link), f"{link} names the entry script"


@pytest.fixture(scope="module")
def seed() -> Iterator[Seed]:
    require(missing_for("cgi"), "serve the app under cgi")
    venv = deploy_venv()
    root = make_web_root()
    folder = root / "qr"
    try:
        copy_app(folder, venv)
        (folder / "TiCore" / ".env").write_text(
            f"SECRET_KEY={secrets.token_urlsafe(32)}\nBASE_URL=\nAPI_RATE_LIMIT={RATE_LIMIT}\n")
        give_to_web_user(folder)
        run_flask(folder, "init-db")
        run_flask(folder, "create-user", "alice", "--password", PASSWORD)
        keys = {name: run_flask(folder, "create-api-key", "alice", "--label", name).strip().splitlines()[-1]
                for name in KEY_NAMES}
        yield Seed(folder, keys)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=MODES)
def apache(request: pytest.FixtureRequest, seed: Seed) -> Iterator[Apache]:
    """Apache in one mode serving a copy of the seed at each mount, and the probe."""
    require(missing_for(request.param), f"serve the app under {request.param}")
    apache = Apache(request.param, make_web_root())
    try:
        for mount in MOUNTS.values():
            shutil.copytree(seed.folder, apache.app_folder(mount), symlinks=True)
        write_probe(apache.probe_root, (seed.folder / ".venv").readlink())
        give_to_web_user(apache.htdocs, apache.root_site, apache.probe_root)
        apache.start()
        yield apache
    finally:
        apache.stop()
        shutil.rmtree(apache.root, ignore_errors=True)


@pytest.fixture(params=MOUNTS.values(), ids=MOUNTS.keys())
def site(request: pytest.FixtureRequest, apache: Apache, seed: Seed) -> Site:
    return Site(apache, request.param, seed.keys)


@pytest.fixture
def folder_site(apache: Apache, seed: Seed) -> Site:
    """The sub-folder site alone, for checks that do not depend on where the app is mounted."""
    return Site(apache, SUB_FOLDER, seed.keys)


def test_api_contract_holds_where_the_app_is_mounted(site: Site):
    error = site.expect(site.api(), 401)
    assert error["error"]["code"] == "missing_api_key"
    created = site.create_code("contract", "https://example.com/first")
    assert created["short_url"] == site.url(f"p/{created['slug']}")
    assert created["qr_image_url"] == site.url(f"img/{created['slug']}.png")
    listed = site.expect(site.api(key="contract"), 200)
    assert created["uuid"] in [code["uuid"] for code in listed["codes"]]
    got = site.expect(site.api(query=f"?uuid={created['uuid']}", key="contract"), 200)
    assert got["destination"] == "https://example.com/first"
    updated = site.expect(site.api("POST", f"?uuid={created['uuid']}", key="contract",
                                   body={"destination": "https://example.com/second"}), 200)
    assert updated["destination"] == "https://example.com/second"


def test_short_url_redirects_with_302_and_counts_the_scan(site: Site):
    code = site.create_code("scans", "https://example.com/landing")
    response = fetch(code["short_url"], headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"})
    site.expect(response, 302)
    assert response.header("Location") == "https://example.com/landing"
    assert response.header("Cache-Control") == "no-store"
    got = site.expect(site.api(query=f"?uuid={code['uuid']}", key="scans"), 200)
    assert got["scan_count"] == 1


def test_qr_image_url_serves_a_png(site: Site):
    code = site.create_code("scans", "https://example.com/image")
    response = fetch(code["qr_image_url"])
    site.expect(response, 200)
    assert response.header("Content-Type") == "image/png"
    assert response.body.startswith(b"\x89PNG\r\n\x1a\n")


def test_rate_limit_answers_429_with_retry_after(folder_site: Site):
    statuses = []
    for _ in range(RATE_LIMIT + 1):
        response = folder_site.api(key="limit")
        statuses.append(response.status)
    assert statuses == [200] * RATE_LIMIT + [429], folder_site.apache.log_tail()
    assert response.header("Retry-After").isdigit()
    assert json.loads(response.body)["error"]["code"] == "rate_limited"


@pytest.mark.parametrize("path", PRIVATE_PATHS)
def test_private_files_are_not_served(site: Site, path: str):
    assert (site.folder / path).is_file(), f"{path} is not in the uploaded folder, so this proves nothing"
    response = fetch(site.url(path))
    assert response.status in (403, 404)
    assert (site.folder / path).read_bytes()[:64] not in response.body


def test_static_files_are_served_by_apache_from_qrtrack_static(site: Site):
    response = fetch(site.url("static/app.css"))
    site.expect(response, 200)
    assert response.body == (site.folder / "qrtrack" / "static" / "app.css").read_bytes()
    assert response.header("Content-Type").startswith("text/css")
    assert response.header("Content-Security-Policy") is None, "the app answered, not Apache"


def test_dashboard_sign_in_and_its_links_stay_where_the_app_is_mounted(site: Site):
    start = fetch(site.url())
    site.expect(start, 302)
    assert urlsplit(urljoin(site.url(), start.header("Location"))).path == f"{site.mount}/login"
    page = fetch(site.url("login"))
    html = page.body.decode()
    assert f'href="{site.mount}/static/app.css"' in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    form = urlencode({"csrf_token": token, "username": "alice", "password": PASSWORD, "next": ""}).encode()
    signed_in = fetch(site.url("login"), "POST", body=form, headers={
        "Cookie": page.header("Set-Cookie").split(";")[0], "Content-Type": "application/x-www-form-urlencoded"})
    site.expect(signed_in, 302)
    cookie = {"Cookie": signed_in.header("Set-Cookie").split(";")[0]}
    listing = signed_in
    for _ in range(3):
        site.assert_own_link(listing.header("Location"))
        listing = fetch(urljoin(site.url("login"), listing.header("Location")), headers=cookie)
        if listing.status != 302:
            break
    site.expect(listing, 200)
    html = listing.body.decode()
    assert f'action="{site.mount}/logout"' in html
    assert not ENTRY_SCRIPT.search(html)
    links = re.findall(r'(?:href|src|action)="(/[^"]*)"', html)
    assert len(links) > 5, html[:2000]
    for link in links:
        site.assert_own_link(link)


def test_authorization_and_api_key_reach_an_app_at_the_domain_root(folder_site: Site):
    response = fetch(folder_site.apache.probe_url("/echo"),
                     headers={"Authorization": "Bearer t0k", "X-Api-Key": "k3y"})
    echoed = folder_site.expect(response, 200)
    assert echoed == {"authorization": "Bearer t0k", "api_key": "k3y", "script_root": "",
                      "link": folder_site.apache.probe_url("/p/x")}


def test_concurrent_scans_are_all_counted(folder_site: Site):
    code = folder_site.create_code("load", "https://example.com/load")
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: fetch(code["short_url"]).status, range(CONCURRENT_SCANS)))
    got = folder_site.expect(folder_site.api(query=f"?uuid={code['uuid']}", key="load"), 200)
    assert got["scan_count"] == statuses.count(302), statuses
    assert statuses == [302] * CONCURRENT_SCANS, folder_site.apache.log_tail()


def test_backup_while_serving_gives_a_sound_copy(folder_site: Site):
    code = folder_site.create_code("load", "https://example.com/backup")
    backups = folder_site.apache.root / "backups"
    backups.mkdir()
    give_to_web_user(backups)
    scanning = threading.Thread(target=lambda: [fetch(code["short_url"]) for _ in range(4)])
    scanning.start()
    try:
        run_flask(folder_site.folder, "backup", str(backups / "copy.db"))
    finally:
        scanning.join()
    copy = sqlite3.connect(backups / "copy.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT COUNT(*) FROM codes WHERE uuid = ?", (code["uuid"],)).fetchone() == (1,)
    finally:
        copy.close()
    assert (backups / "copy.db").owner() == WEB_USER


def test_an_apache_start_that_dies_of_a_signal_is_tried_once_more(tmp_path, monkeypatch):
    """What the harness does for the crash in Apache.start's docstring; a start that fails otherwise still fails."""
    import subprocess

    from . import apache as apache_module

    actions = []

    def run(command, **kwargs):
        action = command[-1]
        actions.append(action)
        if action == "start" and actions.count("start") == 1:
            raise subprocess.CalledProcessError(-6, command)  # SIGABRT
        if action == "start":
            (tmp_path / "run" / "httpd.pid").write_text("4243")  # as Apache does once it listens
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(apache_module.subprocess, "run", run)
    monkeypatch.setattr(apache_module, "wait_for_port", lambda port, what: None)
    server = Apache("cgi", tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "httpd.pid").write_text("4242")  # as a start that got that far leaves it
    monkeypatch.setattr(apache_module.time, "sleep", lambda seconds: (tmp_path / "run" / "httpd.pid").unlink())
    server.start()
    assert actions == ["start", "stop", "start"]

    actions.clear()
    monkeypatch.setattr(apache_module.subprocess, "run", lambda command, **kwargs: (
        actions.append(command[-1]), (_ for _ in ()).throw(subprocess.CalledProcessError(1, command)))[1])
    with pytest.raises(subprocess.CalledProcessError):
        server.start()
    assert actions == ["start"]


def test_an_apache_whose_parent_crashes_on_restart_is_started_afresh(monkeypatch):
    """What the harness does for the crash in Apache.restart's docstring, on a real Apache: its parent process dies
    where the restart would have signalled it, while its children still hold the ports."""
    require(missing_for("cgi"), "serve the app under cgi")
    apache = Apache("cgi", make_web_root())
    try:
        apache.htdocs.mkdir()
        apache.root_site.mkdir()
        write_probe(apache.probe_root, deploy_venv())
        give_to_web_user(apache.htdocs, apache.root_site, apache.probe_root)
        apache.start()
        crashed = apache._parent_pid()
        signal_apache = apache._apache_command
        monkeypatch.setattr(apache, "_apache_command", lambda action: os.kill(crashed, signal.SIGKILL)
                            if action == "restart" else signal_apache(action))
        apache.restart()
        assert apache._parent_pid() not in (None, crashed)
        assert fetch(apache.probe_url("/p/after-the-crash")).header("Location") == "https://example.com/after-the-crash"
    finally:
        apache.stop()
        shutil.rmtree(apache.root, ignore_errors=True)
