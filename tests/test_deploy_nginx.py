"""The README's VPS guide, black-box: gunicorn as deploy/qrtrack.service starts it, behind Debian's nginx with
deploy/nginx.conf, at a domain's root over TLS (as after certbot) and in the sub-folder the file documents.

tests/deploy/nginx.py adapts the two files only in folder, ports and user. Needs the Debian packages nginx,
openssl and python3-venv (manage.py test installs them), and root to run the servers as www-data.
"""
from __future__ import annotations

import json
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from .conftest import PASSWORD, needs_tool
from .deploy.nginx import NGINX, OPENSSL, Gunicorn, Nginx, read_unit
from .deploy.site import (
    Response,
    copy_app,
    deploy_venv,
    fetch,
    give_to_web_user,
    make_web_root,
    missing_basics,
    require,
    run_flask,
)

pytestmark = [pytest.mark.server, needs_tool(NGINX, install="nginx"), needs_tool(OPENSSL, install="openssl")]
HOST = "qr.example.com"             # server_name in deploy/nginx.conf
FOLDER_HOST = "example.com"         # the site its sub-folder variant goes into
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
PRIVATE_PATHS = ("/TiCore/.env", "/instance/qrtrack.db", "/app.py", "/gunicorn.conf.py", "/static/../TiCore/.env",
                 "/static/..%2fTiCore/.env", "/static../TiCore/.env", "/qrtrack/static/../../TiCore/.env")


@dataclass
class Vps:
    nginx: Nginx
    gunicorn: Gunicorn
    folder: Path
    key: str

    def fetch(self, url: str, method: str = "GET", *, headers: dict[str, str] | None = None,
              body: bytes | None = None, source: str | None = None) -> Response:
        """A request to a public address (https://qr.example.com/…, http://example.com/qr/…) sent to our nginx."""
        parts = urlsplit(url)
        port = {("https", HOST): self.nginx.tls_port, ("http", HOST): self.nginx.port,
                ("http", FOLDER_HOST): self.nginx.folder_port}[parts.scheme, parts.hostname]
        local = f"{parts.scheme}://127.0.0.1:{port}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        return fetch(local, method, headers={"Host": parts.hostname, **(headers or {})}, body=body, source=source)

    def api(self, base: str, method: str = "GET", query: str = "", *,
            body: dict[str, Any] | None = None) -> Response:
        headers = {"X-Api-Key": self.key}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self.fetch(f"{base}/api.php{query}", method, headers=headers,
                          body=None if body is None else json.dumps(body).encode())

    def expect(self, response: Response, status: int) -> Any:
        """response's JSON body, after checking its status; both servers' log tails in the message if not."""
        assert response.status == status, (f"{response.status} {response.body[:500]!r}\n"
                                           f"--- nginx error log ---\n{self.nginx.log_tail()}\n"
                                           f"--- gunicorn log ---\n{self.gunicorn_log()[-3000:]}")
        return json.loads(response.body) if response.header("Content-Type") == "application/json" else None

    def gunicorn_log(self) -> str:
        return self.gunicorn.log.read_text(errors="replace")

    def visitors(self, uuid: str) -> tuple[int, int]:
        """(scans, distinct visitors) of a code, read from the database the app wrote."""
        database = sqlite3.connect(f"file:{self.folder / 'instance' / 'qrtrack.db'}?mode=ro", uri=True)
        try:
            return database.execute("SELECT COUNT(*), COUNT(DISTINCT visitor) FROM scans JOIN codes"
                                    " ON codes.id = scans.code_id WHERE codes.uuid = ?", (uuid,)).fetchone()
        finally:
            database.close()


def write_env_file(folder: Path) -> None:
    """As the guide says: TiCore/.env from the example, the three lines set and TRUST_PROXY=1 (BASE_URL left empty)."""
    values = {"SECRET_KEY": secrets.token_urlsafe(32), "BASE_URL": "", "API_RATE_LIMIT": "1000", "TRUST_PROXY": "1"}
    lines = (folder / "TiCore" / ".env.example").read_text().splitlines()
    for name, value in values.items():
        assert sum(line.startswith(f"{name}=") for line in lines) == 1, f"{name} is not in .env.example once"
        lines = [f"{name}={value}" if line.startswith(f"{name}=") else line for line in lines]
    (folder / "TiCore" / ".env").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def vps() -> Iterator[Vps]:
    require(missing_basics(), "run the VPS guide")
    unit = read_unit()
    root = make_web_root()
    folder = root / "qrtrack"
    servers: list[Gunicorn | Nginx] = []
    try:
        copy_app(folder, deploy_venv())
        write_env_file(folder)
        # The unit's ProtectSystem=strict and ReadWritePaths: the app may write instance/ and nothing else.
        give_to_web_user(folder / "instance")
        run_flask(folder, "init-db")
        run_flask(folder, "create-user", "alice", "--admin", "--password", PASSWORD)
        key = run_flask(folder, "create-api-key", "alice", "--label", "vps").strip().splitlines()[-1]
        gunicorn = Gunicorn(unit, folder, root / "gunicorn.log")
        servers.append(gunicorn)
        gunicorn.start()
        nginx = Nginx(root / "nginx", folder, unit, gunicorn.port)
        servers.append(nginx)
        nginx.start()
        yield Vps(nginx, gunicorn, folder, key)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_gunicorn_from_the_unit_runs_its_workers_with_gunicorn_conf_py(vps: Vps):
    vps.expect(vps.fetch(f"https://{HOST}/login"), 200)
    workers = int(vps.gunicorn.unit.exec_start[vps.gunicorn.unit.exec_start.index("--workers") + 1])
    deadline = time.monotonic() + 30
    while vps.gunicorn_log().count("ready (gunicorn.conf.py)") < workers and time.monotonic() < deadline:
        time.sleep(0.2)  # post_worker_init of gunicorn.conf.py logs each worker once it has warmed up
    log = vps.gunicorn_log()
    assert "Using worker: sync" in log and "[ERROR]" not in log, log[-3000:]
    assert log.count("Booting worker with pid") == log.count("ready (gunicorn.conf.py)") == workers, log[-3000:]


def test_api_contract_holds_behind_nginx_with_the_public_scheme_and_host(vps: Vps):
    base = f"https://{HOST}"
    error = vps.expect(vps.fetch(f"{base}/api.php"), 401)
    assert error["error"]["code"] == "missing_api_key"
    created = vps.expect(vps.api(base, "POST", body={"destination": "https://example.org/first"}), 201)
    assert created["short_url"] == f"{base}/p/{created['slug']}"
    assert created["qr_image_url"] == f"{base}/img/{created['slug']}.png"
    listed = vps.expect(vps.api(base), 200)
    assert created["uuid"] in [code["uuid"] for code in listed["codes"]]
    got = vps.expect(vps.api(base, query=f"?uuid={created['uuid']}"), 200)
    assert got["destination"] == "https://example.org/first"
    image = vps.fetch(created["qr_image_url"])
    vps.expect(image, 200)
    assert image.header("Content-Type") == "image/png"
    assert image.body.startswith(b"\x89PNG\r\n\x1a\n")


def test_scans_redirect_and_tell_visitors_apart_by_the_address_nginx_forwards(vps: Vps):
    code = vps.expect(vps.api(f"https://{HOST}", "POST", body={"destination": "https://example.org/landing"}), 201)
    # Two visitors in different /24 networks (the app anonymises to /24); the second one's own X-Forwarded-For
    # is a lie that nginx passes on and the app, trusting one proxy, must ignore.
    for source, extra in (("127.0.1.2", {}), ("127.0.2.2", {}), ("127.0.2.2", {"X-Forwarded-For": "192.0.2.9"})):
        response = vps.fetch(code["short_url"], headers={"User-Agent": FIREFOX, **extra}, source=source)
        vps.expect(response, 302)
        assert response.header("Location") == "https://example.org/landing"
        assert response.header("Cache-Control") == "no-store"
    got = vps.expect(vps.api(f"https://{HOST}", query=f"?uuid={code['uuid']}"), 200)
    assert got["scan_count"] == 3
    assert vps.visitors(code["uuid"]) == (3, 2)


@pytest.mark.parametrize("base", [f"https://{HOST}", f"http://{FOLDER_HOST}/qr"], ids=["root", "sub-folder"])
def test_static_files_are_served_by_nginx_not_gunicorn(vps: Vps, base: str):
    vps.expect(vps.fetch(f"{base}/api.php"), 401)
    response = vps.fetch(f"{base}/static/app.css")
    vps.expect(response, 200)
    assert response.body == (vps.folder / "qrtrack" / "static" / "app.css").read_bytes()
    assert response.header("Content-Type").startswith("text/css")
    assert response.header("Content-Security-Policy") is None, "the app answered, not nginx"
    log = vps.gunicorn_log()
    assert "/api.php" in log, "gunicorn's access log is not where the test reads it"
    assert "/static/" not in log


def test_static_files_at_the_root_are_cached_an_hour(vps: Vps):
    response = vps.fetch(f"https://{HOST}/static/app.css")
    vps.expect(response, 200)
    assert response.header("Cache-Control") == "max-age=3600"


def test_plain_http_gives_plain_http_links(vps: Vps):
    created = vps.expect(vps.api(f"http://{HOST}", "POST", body={"destination": "https://example.org/plain"}), 201)
    assert created["short_url"] == f"http://{HOST}/p/{created['slug']}"


def test_sub_folder_variant_keeps_links_and_redirects_in_the_folder(vps: Vps):
    base = f"http://{FOLDER_HOST}/qr"
    created = vps.expect(vps.api(base, "POST", body={"destination": "https://example.org/folder"}), 201)
    assert created["short_url"] == f"{base}/p/{created['slug']}"
    assert created["qr_image_url"] == f"{base}/img/{created['slug']}.png"
    scan = vps.fetch(created["short_url"], headers={"User-Agent": FIREFOX})
    vps.expect(scan, 302)
    assert scan.header("Location") == "https://example.org/folder"
    vps.expect(vps.fetch(created["qr_image_url"]), 200)
    start = vps.fetch(f"{base}/")
    vps.expect(start, 302)
    assert urlsplit(urljoin(f"{base}/", start.header("Location"))).path == "/qr/login"
    login = vps.fetch(f"{base}/login")
    vps.expect(login, 200)
    links = re.findall(r'(?:href|src|action)="(/[^"]*)"', login.body.decode())
    assert "/qr/static/app.css" in links
    assert all(link.startswith("/qr/") for link in links), links


@pytest.mark.parametrize("path", PRIVATE_PATHS)
def test_private_files_are_not_served(vps: Vps, path: str):
    secret = (vps.folder / "TiCore" / ".env").read_text().split("SECRET_KEY=")[1].split()[0]
    for base in (f"https://{HOST}", f"http://{FOLDER_HOST}/qr"):
        response = vps.fetch(base + path)
        assert response.status in (400, 403, 404), (base + path, response.status)
        assert secret.encode() not in response.body
        assert b"SQLite format" not in response.body
