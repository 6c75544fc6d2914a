"""The README's VPS guide, black-box: gunicorn as deploy/qrtrack.service starts it, behind Debian's nginx with
deploy/nginx.conf, at a domain's root over TLS (as after certbot) and in the sub-folder the file documents.

tests/deploy/nginx.py adapts the two files only in folder, ports and user. Needs the Debian packages nginx,
openssl and python3-venv (manage.py test installs them), and root to run the servers as www-data.
"""
from __future__ import annotations

import http.client
import json
import re
import secrets
import shutil
import socket
import sqlite3
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

from ..conftest import PASSWORD, needs_tool, require
from ..web.test_public import decode_png
from .nginx import NGINX, OPENSSL, Gunicorn, Nginx, read_unit
from .site import Response, copy_app, deploy_venv, fetch, give_to_web_user, make_web_root, missing_basics, run_flask

pytestmark = [pytest.mark.server, needs_tool(NGINX, install="nginx"), needs_tool(OPENSSL, install="openssl")]
HOST = "qr.example.com"             # server_name in deploy/nginx.conf
FOLDER_HOST = "example.com"         # the site its sub-folder variant goes into
SITES = {"root": f"https://{HOST}", "sub-folder": f"http://{FOLDER_HOST}/qr"}  # as a visitor types them
DEFAULT_PORTS = {"https": 443, "http": 80}
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
        """A request to a public address (https://qr.example.com/…, http://example.com/qr/…) sent to our nginx.

        nginx's port for the address's scheme and host stands in for the standard 80 or 443. The address may
        name that port (a site on a port of its own) or the standard one; Host is its host and port as given.
        """
        parts = urlsplit(url)
        port = self.nginx_port(url)
        assert parts.port in (None, port, DEFAULT_PORTS[parts.scheme]), url
        local = f"{parts.scheme}://127.0.0.1:{port}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        return fetch(local, method, headers={"Host": parts.netloc, **(headers or {})}, body=body, source=source)

    def fetch_without_host(self, url: str, *, headers: dict[str, str]) -> Response:
        """A GET of url's path as an HTTP/1.0 client may send it: with no Host header (HTTP/1.1 requires one)."""
        parts = urlsplit(url)
        sock = socket.create_connection(("127.0.0.1", self.nginx_port(url)), timeout=60)
        if parts.scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        with sock:
            fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.0\r\n{fields}\r\n".encode())
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())

    def nginx_port(self, url: str) -> int:
        """The port our nginx serves url's scheme and host on: random, so never the standard one."""
        parts = urlsplit(url)
        return {("https", HOST): self.nginx.tls_port, ("http", HOST): self.nginx.port,
                ("http", FOLDER_HOST): self.nginx.folder_port}[parts.scheme, parts.hostname]

    def on_own_port(self, base: str) -> str:
        """base as on a site served on a port other than 80 and 443 (https://qr.example.com:8443/): nginx's."""
        parts = urlsplit(base)
        return parts._replace(netloc=f"{parts.hostname}:{self.nginx_port(base)}").geturl()

    def sign_in(self, base: str, path: str) -> Response:
        """Open base + path signed out and sign in as alice where it redirects to, as a browser would.

        The sign-in's reply; on the way, checks that the redirect to the login page stays on base.
        """
        to_login = self.fetch(base + path)
        self.expect(to_login, 302)
        login_url = urljoin(base + path, to_login.header("Location"))
        assert login_url.startswith(f"{base}/login?next="), login_url
        page = self.fetch(login_url)
        self.expect(page, 200)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.body.decode()).group(1)
        form = urlencode({"csrf_token": token, "username": "alice", "password": PASSWORD}).encode()
        # Over https Flask-WTF also checks that the Referer is this host, port included.
        return self.fetch(login_url, "POST", body=form, headers={
            "Cookie": page.header("Set-Cookie").split(";")[0], "Referer": login_url,
            "Content-Type": "application/x-www-form-urlencoded"})

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


@pytest.mark.parametrize("base", SITES.values(), ids=SITES.keys())
def test_static_files_are_served_by_nginx_and_cached_an_hour(vps: Vps, base: str):
    vps.expect(vps.fetch(f"{base}/api.php"), 401)
    response = vps.fetch(f"{base}/static/app.css")
    vps.expect(response, 200)
    assert response.body == (vps.folder / "qrtrack" / "static" / "app.css").read_bytes()
    assert response.header("Content-Type").startswith("text/css")
    assert response.header("Content-Security-Policy") is None, "the app answered, not nginx"
    assert response.header("Cache-Control") == "max-age=3600"
    assert response.header("Expires") is not None
    log = vps.gunicorn_log()
    assert "/api.php" in log, "gunicorn's access log is not where the test reads it"
    assert "/static/" not in log


@pytest.mark.parametrize("site", SITES.values(), ids=SITES.keys())
def test_a_site_on_its_own_port_keeps_the_port_in_every_link(vps: Vps, site: str):
    base = vps.on_own_port(site)
    created = vps.expect(vps.api(base, "POST", body={"destination": "https://example.org/port"}), 201)
    assert created["short_url"] == f"{base}/p/{created['slug']}"
    assert created["qr_image_url"] == f"{base}/img/{created['slug']}.png"
    image = vps.fetch(created["qr_image_url"])
    vps.expect(image, 200)
    assert decode_png(image.body) == created["short_url"]
    page = f"/codes/{created['uuid']}"
    signed_in = vps.sign_in(base, page)
    vps.expect(signed_in, 302)
    assert urljoin(f"{base}/login", signed_in.header("Location")) == base + page
    detail = vps.fetch(base + page, headers={"Cookie": signed_in.header("Set-Cookie").split(";")[0]})
    vps.expect(detail, 200)
    assert f">{created['short_url']}</code>" in detail.body.decode()


@pytest.mark.parametrize("site", SITES.values(), ids=SITES.keys())
def test_a_body_the_size_of_the_largest_logo_reaches_the_app(vps: Vps, site: str):
    """nginx refuses bodies over 1 MB unless told; a logo may be MAX_LOGO_BYTES (2 MB by default).

    Sent to a form the app reads whole before refusing it (no CSRF token): an answer given without reading
    the body (the API's 401) makes gunicorn close the connection while nginx is still sending, a 502.
    """
    body = b"note=" + b"x" * (2_000_000 + 64 * 1024)
    response = vps.fetch(f"{site}/login", "POST", body=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": f"{site}/login"})
    assert response.status != 413, "nginx refused the body"
    assert response.status == 400 and "not sent from this site" in response.body.decode(), response.body[:300]


@pytest.mark.parametrize("site", SITES.values(), ids=SITES.keys())
def test_the_standard_port_named_in_host_is_left_out_of_links(vps: Vps, site: str):
    parts = urlsplit(site)
    named = parts._replace(netloc=f"{parts.hostname}:{DEFAULT_PORTS[parts.scheme]}").geturl()
    created = vps.expect(vps.api(named, "POST", body={"destination": "https://example.org/standard"}), 201)
    assert created["short_url"] == f"{site}/p/{created['slug']}"


@pytest.mark.parametrize("site", SITES.values(), ids=SITES.keys())
def test_a_request_without_host_gets_links_to_the_name_and_port_nginx_answered_on(vps: Vps, site: str):
    base = vps.on_own_port(site)
    created = vps.expect(vps.api(base, "POST", body={"destination": "https://example.org/no-host"}), 201)
    got = vps.expect(vps.fetch_without_host(f"{site}/api.php?uuid={created['uuid']}",
                                            headers={"X-Api-Key": vps.key}), 200)
    assert got["short_url"] == f"{base}/p/{created['slug']}"
    assert got["qr_image_url"] == f"{base}/img/{created['slug']}.png"


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


@pytest.mark.parametrize(("size", "keyed", "status", "code"), [
    (100 * 1024, True, 413, "payload_too_large"), (1_500_000, True, 413, "payload_too_large"),
    (1_500_000, False, 401, "missing_api_key"), (2_064_000, False, 401, "missing_api_key")])
def test_a_body_refused_unread_still_gets_the_apis_json_error(vps: Vps, size: int, keyed: bool, status: int,
                                                             code: str):
    """The API refuses an oversized body, or any body without a key, without needing to read it; nginx must pass
    on its JSON error, not a 502 for a connection closed while it was still sending (seen once in CI before the
    app read such bodies to the end: web.discard_unread_body)."""
    headers = {"Content-Type": "application/json", **({"X-Api-Key": vps.key} if keyed else {})}
    body = b'{"destination": "https://example.org/", "label": "' + b"x" * size + b'"}'
    for _ in range(3):
        response = vps.fetch(f"https://{HOST}/api.php", "POST", headers=headers, body=body)
        assert vps.expect(response, status)["error"]["code"] == code
