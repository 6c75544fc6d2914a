"""The shipped .htaccess and entries on a real Apache: the app in a sub-folder under CGI, FastCGI and Passenger.

Each mode gets a private Apache on 127.0.0.1 (tests/deploy/apache.py) serving a copy of the working tree at
/qr/, and a minimal app behind the same entries at the root of a second port. Needs the Debian packages
apache2, libapache2-mod-fcgid, libapache2-mod-passenger and python3-venv (manage.py test installs them).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

from .conftest import PASSWORD
from .deploy.apache import (
    MODES,
    WEB_USER,
    Apache,
    Response,
    copy_app,
    deploy_venv,
    fetch,
    give_to_web_user,
    make_web_root,
    missing_for,
    run_flask,
    write_probe,
)

pytestmark = pytest.mark.server
RATE_LIMIT = 5
CONCURRENT_SCANS = 40      # 8 at a time, so several CGI processes write at once
KEY_NAMES = ("contract", "scans", "limit", "load")
PRIVATE_PATHS = (
    "TiCore/.env", "TiCore/.env.example", "instance/qrtrack.db", "instance/.htaccess", "qrtrack/config.py",
    "app.py", "passenger_wsgi.py", "hosting.py", "manage.py", "requirements.txt", ".htaccess", ".venv/pyvenv.cfg",
    "templates/base.html", "tests/conftest.py", "deploy/nginx.conf",
)


@dataclass
class Seed:
    """A copy of the app with TiCore/.env and a database holding alice and one API key per test."""

    folder: Path
    keys: dict[str, str]


@dataclass
class Site:
    apache: Apache
    folder: Path
    keys: dict[str, str]

    def url(self, path: str = "") -> str:
        return self.apache.url("/qr/" + path)

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


def require(mode: str) -> None:
    missing = missing_for(mode)
    if not missing:
        return
    message = f"cannot serve the app under {mode}: missing {', '.join(missing)}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the deployment tests: manage.py test installs these)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def seed() -> Iterator[Seed]:
    require("cgi")
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
def site(request: pytest.FixtureRequest, seed: Seed) -> Iterator[Site]:
    require(request.param)
    apache = Apache(request.param, make_web_root())
    folder = apache.htdocs / "qr"
    try:
        shutil.copytree(seed.folder, folder, symlinks=True)
        write_probe(apache.probe_root, (seed.folder / ".venv").readlink())
        give_to_web_user(apache.htdocs, apache.probe_root)
        apache.start()
        yield Site(apache, folder, seed.keys)
    finally:
        apache.stop()
        shutil.rmtree(apache.root, ignore_errors=True)


def test_api_contract_holds_in_a_sub_folder(site: Site):
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


def test_rate_limit_answers_429_with_retry_after(site: Site):
    statuses = []
    for _ in range(RATE_LIMIT + 1):
        response = site.api(key="limit")
        statuses.append(response.status)
    assert statuses == [200] * RATE_LIMIT + [429], site.apache.log_tail()
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


def test_dashboard_sign_in_and_its_links_stay_in_the_sub_folder(site: Site):
    start = fetch(site.url())
    site.expect(start, 302)
    assert urlsplit(urljoin(site.url(), start.header("Location"))).path == "/qr/login"
    page = fetch(site.url("login"))
    html = page.body.decode()
    assert 'href="/qr/static/app.css"' in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    form = urlencode({"csrf_token": token, "username": "alice", "password": PASSWORD, "next": ""}).encode()
    signed_in = fetch(site.url("login"), "POST", body=form, headers={
        "Cookie": page.header("Set-Cookie").split(";")[0], "Content-Type": "application/x-www-form-urlencoded"})
    site.expect(signed_in, 302)
    cookie = {"Cookie": signed_in.header("Set-Cookie").split(";")[0]}
    listing = signed_in
    for _ in range(3):
        landing = urljoin(site.url("login"), listing.header("Location"))
        assert urlsplit(landing).path.startswith("/qr/")
        listing = fetch(landing, headers=cookie)
        if listing.status != 302:
            break
    site.expect(listing, 200)
    assert 'action="/qr/logout"' in listing.body.decode()

def test_authorization_and_api_key_reach_an_app_at_the_domain_root(site: Site):
    response = fetch(site.apache.probe_url("/echo"), headers={"Authorization": "Bearer t0k", "X-Api-Key": "k3y"})
    echoed = site.expect(response, 200)
    assert echoed == {"authorization": "Bearer t0k", "api_key": "k3y", "script_root": "",
                      "link": site.apache.probe_url("/p/x")}


def test_concurrent_scans_are_all_counted(site: Site):
    code = site.create_code("load", "https://example.com/load")
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: fetch(code["short_url"]).status, range(CONCURRENT_SCANS)))
    got = site.expect(site.api(query=f"?uuid={code['uuid']}", key="load"), 200)
    assert got["scan_count"] == statuses.count(302), statuses
    assert statuses == [302] * CONCURRENT_SCANS, site.apache.log_tail()


def test_backup_while_serving_gives_a_sound_copy(site: Site):
    code = site.create_code("load", "https://example.com/backup")
    backups = site.apache.root / "backups"
    backups.mkdir()
    give_to_web_user(backups)
    scanning = threading.Thread(target=lambda: [fetch(code["short_url"]) for _ in range(4)])
    scanning.start()
    try:
        run_flask(site.folder, "backup", str(backups / "copy.db"))
    finally:
        scanning.join()
    copy = sqlite3.connect(backups / "copy.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT COUNT(*) FROM codes WHERE uuid = ?", (code["uuid"],)).fetchone() == (1,)
    finally:
        copy.close()
    assert (backups / "copy.db").owner() == WEB_USER

