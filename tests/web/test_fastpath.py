"""The lean scan path: same scan rows as the full app, no Flask or SQLAlchemy in a CGI scan."""
from __future__ import annotations

import gc
import io
import sqlite3
import subprocess
import sys
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from qrtrack import codes
from qrtrack.store import scans as scan_store
from qrtrack.store.scans import SqlAlchemyScanStore
from qrtrack.web import fastpath
from qrtrack.web.fastpath import (
    LeanUntilLoaded,
    image_request,
    lean_until_loaded,
    location_header,
    scan_slug,
    serve_cgi,
)

from ..conftest import PROJECT_ROOT, env_without_settings, gen_code

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")


def cgi_environ(services, slug: str, **extra: str) -> dict[str, str]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": f"/p/{slug}", "REMOTE_ADDR": "8.8.8.8", "HTTP_USER_AGENT": IPHONE,
            "INSTANCE_PATH": str(services.settings.INSTANCE_PATH), "SECRET_KEY": services.settings.SECRET_KEY,
            **extra}


def test_scan_slug_matches_only_gets_of_scan_paths():
    assert scan_slug({"REQUEST_METHOD": "GET", "PATH_INFO": "/p/Ab3dE9x"}) == "Ab3dE9x"
    assert scan_slug({"REQUEST_METHOD": "HEAD", "PATH_INFO": "/p/Ab3dE9x"}) == "Ab3dE9x"
    for method, path in (("POST", "/p/Ab3dE9x"), ("GET", "/p/"), ("GET", "/p/a/b"), ("GET", "/p/a%20b"),
                         ("GET", "/img/Ab3dE9x.png"), ("GET", "/p/" + "a" * 17), ("GET", "/p/ab-c"), ("GET", "/P/abc"),
                         ("GET", "/p/\u00e9t\u00e9")):
        assert scan_slug({"REQUEST_METHOD": method, "PATH_INFO": path}) is None


@pytest.mark.parametrize("path, query, expected", [
    ("/img/Ab3dE9x.png", "", ("Ab3dE9x", "png", 400, None)),
    ("/img/Ab3dE9x.svg", "", ("Ab3dE9x", "svg", None, None)),
    ("/img/Ab3dE9x.png", "size=128", ("Ab3dE9x", "png", 128, None)),
    ("/img/Ab3dE9x.png", "size=99999", ("Ab3dE9x", "png", 2048, None)),
    ("/img/Ab3dE9x.png", "size=1", ("Ab3dE9x", "png", 64, None)),
    ("/img/Ab3dE9x.svg", "size=128", None),
    ("/img/Ab3dE9x.png", "size=128&x=1", None),
    ("/img/Ab3dE9x.png", "size=512&v=0123456789abcdef", ("Ab3dE9x", "png", 512, "0123456789abcdef")),
    ("/img/Ab3dE9x.png", "v=0123456789abcdef", ("Ab3dE9x", "png", 400, "0123456789abcdef")),
    ("/img/Ab3dE9x.svg", "v=0123456789abcdef", ("Ab3dE9x", "svg", None, "0123456789abcdef")),
    ("/img/Ab3dE9x.png", "v=0123456789ABCDEF", None),
    ("/img/Ab3dE9x.png", "v=0123456789abcde", None),
    ("/img/Ab3dE9x.png", "size=512&xv=0123456789abcdef", None),
    ("/img/Ab3dE9x.png", "v=0123456789abcdef&size=512", None),
    ("/img/Ab3dE9x.png", "size=", None),
    ("/img/Ab3dE9x.png", "size=123456", None),
    ("/img/Ab3dE9x.png", "size=\u0661\u0662\u0668", None),
    ("/img/Ab3dE9x.gif", "", None),
    ("/img/Ab3dE9x", "", None),
    ("/img/.png", "", None),
    ("/img/a.b.png", "", None),
    ("/img/" + "a" * 17 + ".png", "", None),
    ("/p/Ab3dE9x.png", "", None),
])
def test_image_request_answers_only_plain_image_paths(path, query, expected):
    assert image_request({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query}) == expected
    assert image_request({"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": query}) is None


def test_internationalised_destination_is_sent_as_an_ascii_uri():
    assert location_header("https://example.com/a") == "https://example.com/a"
    assert location_header("https://bücher.example/straße") == "https://xn--bcher-kva.example/stra%C3%9Fe"
    assert location_header("https://faß.de/") == "https://xn--fa-hia.de/"  # not fass.de, as IDNA 2003 had it


def test_post_to_a_scan_path_falls_through_to_flask(client, db, alice):
    code = gen_code(db, alice)
    assert client.post(f"/p/{code.slug}").status_code == 405
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 0


def test_cgi_scan_records_the_same_row_and_prints_a_302(services, db, alice):
    code = gen_code(db, alice, destination="https://example.com/cgi")
    out = io.BytesIO()
    assert serve_cgi(cgi_environ(services, code.slug), out=out) is True
    head = out.getvalue().decode()
    assert head.startswith("Status: 302 Found\r\nLocation: https://example.com/cgi\r\n")
    assert "Cache-Control: no-store\r\n" in head and head.endswith("\r\n\r\n")
    with db.read() as conn:
        [scan] = scan_store.list_scans(conn, code.id, limit=5)
    assert (scan.device, scan.country, scan.is_bot) == ("iPhone", "US", False)
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 1


def test_cgi_head_of_a_scan_address_redirects_without_recording(services, db, alice):
    code = gen_code(db, alice, destination="https://example.com/cgi")
    out = io.BytesIO()
    assert serve_cgi(cgi_environ(services, code.slug, REQUEST_METHOD="HEAD"), out=out) is True
    assert out.getvalue().startswith(b"Status: 302 Found\r\nLocation: https://example.com/cgi\r\n")
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 0


def test_cgi_scan_with_a_bad_setting_leaves_it_to_the_full_app_which_names_it(services, db, alice, tmp_path):
    """Not a traceback from the lean path: app.cgi then loads app.py, which stops with one line."""
    code = gen_code(db, alice)
    out = io.BytesIO()
    assert serve_cgi(cgi_environ(services, code.slug, API_RATE_LIMIT="0"), out=out) is False
    assert out.getvalue() == b""
    environ = {**env_without_settings(), **cgi_environ(services, code.slug, API_RATE_LIMIT="0"),
               "GATEWAY_INTERFACE": "CGI/1.1"}
    run = subprocess.run([sys.executable, str(PROJECT_ROOT / "app.cgi")], env=environ, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and "API_RATE_LIMIT" in run.stderr
    assert "Traceback" not in run.stderr


def test_cgi_scan_leaves_unknown_and_paused_codes_to_the_full_app(services, db, alice):
    code = gen_code(db, alice)
    codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(status="paused"),
                      logo_dir=services.logo_dir, images=services.images)
    for slug in ("nosuch1", code.slug):
        out = io.BytesIO()
        assert serve_cgi(cgi_environ(services, slug), out=out) is False
        assert out.getvalue() == b""
    assert serve_cgi({"REQUEST_METHOD": "GET", "PATH_INFO": "/api.php"}) is False


def test_cgi_scan_leaves_a_database_behind_the_code_to_the_full_app(services, db, alice):
    """New files on an old database: the full app migrates it first, where the lean path's insert could fail and
    the scan be lost."""
    code = gen_code(db, alice)
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    out = io.BytesIO()
    assert serve_cgi(cgi_environ(services, code.slug), out=out) is False
    assert out.getvalue() == b""


# --- a long-running entry's new process (app.fcgi, passenger_wsgi.py) ---------------------------------

def answer_of(wsgi_app, environ: dict[str, str]) -> tuple[str, bytes]:
    """(status, body) of one request, the body closed as a server closes it."""
    statuses = []
    body = wsgi_app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        content = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return statuses[0], content


PROCESS_SETTINGS = ("INSTANCE_PATH", "SECRET_KEY", "DATABASE_URL")


class FakeFullApp:
    """Stands for app.py's app: counts its loads and answers every request with 200 "full app"."""

    def __init__(self):
        self.loads = 0

    def load(self):
        self.loads += 1
        return self

    def __call__(self, environ, start_response):
        start_response("200 OK", [])
        return [b"full app"]


@pytest.fixture
def process_settings(services, monkeypatch):
    """The test app's settings as a new process of a long-running entry reads them: from its environment."""
    for name in PROCESS_SETTINGS:
        monkeypatch.setenv(name, str(getattr(services.settings, name)))


def test_a_new_process_answers_scans_lean_and_loads_the_full_app_after_its_first_answer(
        services, db, alice, process_settings):
    code = gen_code(db, alice, destination="https://example.com/first")
    full = FakeFullApp()
    entry = lean_until_loaded(full.load)
    assert isinstance(entry, LeanUntilLoaded) and full.loads == 0
    statuses = []
    body = entry(cgi_environ(services, code.slug), lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["302 Found"] and full.loads == 0  # answered before the full app was even asked for
    body.close()
    deadline = time.monotonic() + 30
    while full.loads == 0 and time.monotonic() < deadline:  # loading in the background, asked for by nothing else
        time.sleep(0.01)
    assert full.loads == 1
    lean_store = weakref.ref(entry.lean.recorder.scan_store)
    assert answer_of(entry, {"REQUEST_METHOD": "GET", "PATH_INFO": "/api.php"}) == ("200 OK", b"full app")
    assert answer_of(entry, cgi_environ(services, code.slug)) == ("200 OK", b"full app")  # the full app's from now
    assert full.loads == 1
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 1
    gc.collect()  # the store and its GroupCommit refer to each other
    assert entry.lean is None and lean_store() is None  # and with it its idle connection to the database


def test_requests_the_lean_handlers_leave_wait_for_one_load_of_the_full_app(services, db, alice, process_settings):
    code = gen_code(db, alice)
    codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(status="paused"),
                      logo_dir=services.logo_dir, images=services.images)
    full = FakeFullApp()
    entry = lean_until_loaded(full.load)
    requests = [{"REQUEST_METHOD": "GET", "PATH_INFO": "/login"}, cgi_environ(services, code.slug),
                cgi_environ(services, "nosuch1")] * 4
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda environ: answer_of(entry, environ), requests))
    assert answers == [("200 OK", b"full app")] * len(requests)
    assert full.loads == 1


def test_when_the_full_app_fails_to_load_scans_still_redirect_and_other_requests_fail_with_its_error(
        services, db, alice, process_settings, caplog):
    code = gen_code(db, alice)

    def broken_load():
        raise ImportError("no module named 'flask'")

    entry = lean_until_loaded(broken_load)
    with pytest.raises(RuntimeError, match="could not be loaded") as caught:
        answer_of(entry, {"REQUEST_METHOD": "GET", "PATH_INFO": "/login"})
    assert isinstance(caught.value.__cause__, ImportError)
    assert "no module named 'flask'" in caplog.text  # in the server's error log, with its traceback
    assert answer_of(entry, cgi_environ(services, code.slug))[0] == "302 Found"
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 1


def test_a_new_process_on_a_database_behind_the_code_loads_the_full_app_first(services, db, process_settings):
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    full = FakeFullApp()
    assert lean_until_loaded(full.load) is full and full.loads == 1


@pytest.mark.parametrize("setting", [{"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"},
                                     {"API_RATE_LIMIT": "0"}], ids=["not SQLite", "a bad setting"])
def test_a_new_process_loads_the_full_app_first_off_sqlite_or_with_a_bad_setting(process_settings, monkeypatch,
                                                                                   setting):
    """Off SQLite the lean store would import SQLAlchemy, most of the load; a bad setting is for app.py to name.
    No lean handlers are even built: with an unreachable database they would also give way, so that alone
    would prove nothing."""
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(fastpath, "make_recorder", lambda *args, **kwargs: pytest.fail("lean handlers were built"))
    full = FakeFullApp()
    assert lean_until_loaded(full.load) is full and full.loads == 1


def test_a_new_process_answers_its_first_scan_without_importing_the_full_app(services, db, alice):
    """In a fresh interpreter, as app.fcgi starts: the scan is answered and recorded without Flask or SQLAlchemy
    (the User-Agent parsers load for a browser the instance has not seen yet); once that answer is closed, the
    full app loads in the background and answers the rest."""
    code = gen_code(db, alice)
    program = (
        "import sys\n"
        "from qrtrack.web.fastpath import lean_until_loaded\n"
        "def load_app():\n"
        "    from app import app\n"
        "    return app\n"
        "entry = lean_until_loaded(load_app)\n"
        "def call(environ):\n"
        "    statuses = []\n"
        "    body = entry(environ, lambda status, headers, exc_info=None: statuses.append(status))\n"
        "    b''.join(body)\n"
        "    loaded = [name for name in ('flask', 'sqlalchemy') if name in sys.modules]\n"
        "    body.close()\n"
        "    print(statuses[0], loaded)\n"
        f"call({cgi_environ(services, code.slug, SERVER_NAME='localhost', SERVER_PORT='80')!r})\n"
        "call({'REQUEST_METHOD': 'GET', 'PATH_INFO': '/api.php', 'SERVER_NAME': 'localhost', 'SERVER_PORT': '80', "
        "'wsgi.url_scheme': 'http', 'wsgi.input': sys.stdin.buffer, 'wsgi.errors': sys.stderr})\n"
    )
    settings = {name: str(getattr(services.settings, name)) for name in PROCESS_SETTINGS}
    run = subprocess.run([sys.executable, "-c", program], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env={**env_without_settings(), **settings, "PYTHONPATH": str(PROJECT_ROOT)}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["302 Found []", "401 UNAUTHORIZED ['flask', 'sqlalchemy']"]
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 1


def test_a_scan_is_answered_before_the_wal_checkpoint_that_falls_due_with_it(app, services, db, alice, monkeypatch):
    monkeypatch.setattr("qrtrack.store.sqlite_scans.CHECKPOINT_AFTER_ROWS", 3)
    code = gen_code(db, alice)
    checkpoints = []
    monkeypatch.setattr(services.recorder.scan_store, "checkpoint_wal", lambda: checkpoints.append("copied"))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/p/{code.slug}", "REMOTE_ADDR": "8.8.8.8",
               "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
    answers = []
    bodies = [app.wsgi_app(dict(environ), lambda status, headers: answers.append(status)) for _ in range(3)]
    assert answers == ["302 Found"] * 3 and checkpoints == []
    for body in bodies:
        assert b"".join(body) == b""
        getattr(body, "close", lambda: None)()  # what the server does once it has sent the answer
    assert checkpoints == ["copied"]
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 3


def test_sqlalchemy_scan_store_writes_the_same_rows(services, db, alice):
    code = gen_code(db, alice)
    sql_store = SqlAlchemyScanStore(db.engine)
    assert sql_store.after_answer() is None  # the database server keeps its own log
    assert sql_store.find_target(code.slug) == (code.id, code.destination, "active")
    assert sql_store.find_target("nosuch1") is None
    row = {"code_id": code.id, "ts": 5, "country": "US", "city": None, "device": "Mac", "os": "", "browser": "",
           "is_bot": False, "referrer_host": None, "user_agent": "ua", "visitor": "v"}
    sql_store.write([row, row])
    with db.read() as conn:
        assert conn.execute(text("SELECT scan_count FROM codes WHERE id = :id"), {"id": code.id}).scalar_one() == 2


# Under CGI import time is request time: a scan must not load the app's libraries, nor the standard
# modules that cost it most (typing, re, pathlib and enum together were about a third of a scan here;
# hashlib with OpenSSL and threading another ~6 ms of CPU; the sqlite3 package's datetime adapters ~3 ms;
# functools and collections ~4 ms, see hosting.import_sqlite_without_functools). A cached image needs hashlib
# for its ETag.
NOT_IMPORTED_BY_A_CGI_REQUEST = ("flask", "sqlalchemy", "werkzeug", "user_agents", "crawlerdetect", "limits", "dotenv",
                                 "typing", "re", "pathlib", "enum", "urllib.parse", "dataclasses", "logging",
                                 "tempfile", "threading", "sqlite3.dbapi2", "datetime", "functools", "collections")
NOT_IMPORTED_BY_A_CGI_SCAN = (*NOT_IMPORTED_BY_A_CGI_REQUEST, "hashlib", "_hashlib", "hmac",
                              "ipaddress")  # for an IPv4 client, as cgi_environ's


def run_cgi_in_a_new_process(environ: dict[str, str], *, not_imported: tuple[str, ...] = NOT_IMPORTED_BY_A_CGI_SCAN,
                             first: str = "") -> subprocess.CompletedProcess:
    """serve_cgi as app.cgi calls it, in a fresh interpreter under -S with app.cgi's set-up (then the Python line
    first); prints what it wrote, then the costly modules loaded. The process ends with os._exit, as app.cgi's
    does."""
    program = (
        "import os, sys, io\n"
        "import hosting\n"
        "hosting.add_venv_packages()\n"
        "hosting.import_sqlite_without_functools()\n"
        f"{first}\n"
        "from qrtrack.web.fastpath import serve_cgi\n"
        f"os.environ.update({environ!r})\n"
        "out = io.BytesIO()\n"
        "assert serve_cgi(hosting.cgi_wsgi_environ(), out=out)\n"
        "print(out.getvalue().split(b'\\r\\n')[0].decode())\n"
        f"print(','.join(m for m in {not_imported!r} if m in sys.modules))\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    env = {**env_without_settings(), "PYTHONPATH": str(PROJECT_ROOT)}
    run = subprocess.run([sys.executable, "-S", "-c", program], env=env, cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run


def test_cgi_scan_imports_none_of_the_costly_modules_on_a_cache_hit(services, db, alice):
    code = gen_code(db, alice)
    environ = cgi_environ(services, code.slug)
    runs = [run_cgi_in_a_new_process(environ) for _ in range(2)]  # the first fills the User-Agent cache
    assert runs[1].stdout.splitlines() == ["Status: 302 Found", ""]
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 2


def test_app_cgi_under_python_s_answers_scans_lean_and_everything_else_with_the_full_app(services, db, alice):
    code = gen_code(db, alice)

    def run_app_cgi(**extra: str) -> str:
        env = {**env_without_settings(), **cgi_environ(services, code.slug, **extra)}
        env.pop("QRTRACK_REEXECUTED_INTO", None)
        run = subprocess.run([sys.executable, "-S", str(PROJECT_ROOT / "app.cgi")], env=env, cwd=PROJECT_ROOT,
                             capture_output=True, timeout=60)
        assert run.returncode == 0, run.stderr.decode()
        return run.stdout.decode()

    assert run_app_cgi().startswith(f"Status: 302 Found\r\nLocation: {code.destination}\r\n")
    head, _, body = run_app_cgi(PATH_INFO="/api.php").partition("\r\n\r\n")  # no key: Flask's 401
    assert head.startswith("Status: 401 UNAUTHORIZED") and '"error"' in body
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 1


def test_app_cgi_itself_imports_none_of_the_costly_modules_for_a_scan(services, db, alice):
    """The shipped entry, not a copy of its steps: Python's own import log (-X importtime) of a scan with the
    User-Agent cache filled."""
    code = gen_code(db, alice)
    env = {**env_without_settings(), **cgi_environ(services, code.slug)}
    env.pop("QRTRACK_REEXECUTED_INTO", None)
    runs = [subprocess.run([sys.executable, "-S", "-X", "importtime", str(PROJECT_ROOT / "app.cgi")], env=env,
                           cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60) for _ in range(2)]
    assert all(run.stdout.startswith("Status: 302 Found") for run in runs), [run.stderr[-2000:] for run in runs]
    log = runs[1].stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in log if line.startswith("import time:")}
    assert "qrtrack.web.fastpath" in imported and "_sqlite3" in imported
    assert sorted(imported & set(NOT_IMPORTED_BY_A_CGI_SCAN)) == []


def test_cgi_scans_keep_the_wal_short(services, db, alice, tmp_path):
    """Processes that end without closing the database never let SQLite start the WAL over (see trim_wal)."""
    code = gen_code(db, alice)
    instance = tmp_path / "only-cgi"  # no connection of this process's: each CGI process is the database's only one
    instance.mkdir()
    with sqlite3.connect(services.settings.sqlite_path) as source, sqlite3.connect(instance / "qrtrack.db") as copy:
        source.backup(copy)
    environ = cgi_environ(services, code.slug, INSTANCE_PATH=str(instance))
    limit, scans = 40_000, 12
    lower_the_limit = f"import qrtrack.store.sqlite_scans; qrtrack.store.sqlite_scans.WAL_TRIM_BYTES = {limit}"
    sizes = []
    for _ in range(scans):
        run = run_cgi_in_a_new_process(environ, first=lower_the_limit)
        assert run.stdout.startswith("Status: 302 Found")
        sizes.append((instance / "qrtrack.db-wal").stat().st_size)
    assert scans * sizes[0] > 2 * limit  # left alone, the WAL would have grown well past the limit
    assert max(sizes) <= limit
    with sqlite3.connect(instance / "qrtrack.db") as copy:
        assert copy.execute("SELECT scan_count FROM codes WHERE id = ?", (code.id,)).fetchone() == (scans,)
        assert copy.execute("SELECT COUNT(*) FROM scans WHERE code_id = ?", (code.id,)).fetchone() == (scans,)


def test_cgi_cached_image_imports_none_of_the_costly_modules(client, services, db, alice):
    code = gen_code(db, alice)
    assert client.get(f"/img/{code.slug}.png?size=128").status_code == 200  # the full app renders and caches it
    environ = cgi_environ(services, code.slug, PATH_INFO=f"/img/{code.slug}.png", QUERY_STRING="size=128",
                          HTTP_HOST="localhost")
    run = run_cgi_in_a_new_process(environ, not_imported=NOT_IMPORTED_BY_A_CGI_REQUEST)
    assert run.stdout.splitlines() == ["Status: 200 OK", ""]


def test_cgi_serves_a_cached_image_with_its_etag_and_answers_304(client, services, db, alice):
    code = gen_code(db, alice)
    environ = cgi_environ(services, code.slug, PATH_INFO=f"/img/{code.slug}.png", HTTP_HOST="localhost",
                          SCRIPT_NAME="", **{"wsgi.url_scheme": "http"})
    out = io.BytesIO()
    assert serve_cgi(environ, out=out) is False and out.getvalue() == b""  # not rendered yet: the full app's job
    rendered = client.get(f"/img/{code.slug}.png")
    assert serve_cgi(environ, out=out) is True
    head, _, body = out.getvalue().partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200 OK\r\n") and body == rendered.data
    assert f"ETag: {rendered.headers['ETag']}".encode() in head and b"Content-Type: image/png" in head
    for extra, status in (({"HTTP_IF_NONE_MATCH": rendered.headers["ETag"]}, b"304 Not Modified"),
                          ({"REQUEST_METHOD": "HEAD"}, b"200 OK")):
        out = io.BytesIO()
        assert serve_cgi({**environ, **extra}, out=out) is True
        head, _, body = out.getvalue().partition(b"\r\n\r\n")
        assert head.startswith(b"Status: " + status) and body == b""
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count == 0


def test_cached_image_is_served_without_flask_with_etag_and_304(client, db, alice, monkeypatch):
    from qrtrack.web import public

    code = gen_code(db, alice)
    first = client.get(f"/img/{code.slug}.png?size=128")
    assert first.status_code == 200

    def flask_must_not_answer(*_args, **_kwargs):
        raise AssertionError("the lean path should have served the cached image")

    monkeypatch.setattr(public, "_qr_image", flask_must_not_answer)
    again = client.get(f"/img/{code.slug}.png?size=128")
    assert (again.status_code, again.data, again.headers["ETag"]) == (200, first.data, first.headers["ETag"])
    assert again.mimetype == "image/png" and "max-age" in again.headers["Cache-Control"]
    not_modified = client.get(f"/img/{code.slug}.png?size=128", headers={"If-None-Match": first.headers["ETag"]})
    assert not_modified.status_code == 304 and not_modified.data == b""
    any_version = client.get(f"/img/{code.slug}.png?size=128", headers={"If-None-Match": "*"})
    assert any_version.status_code == 304 and any_version.data == b""
    head = client.head(f"/img/{code.slug}.png?size=128")
    assert head.status_code == 200 and head.data == b""


def test_images_not_cached_yet_or_with_other_queries_fall_through_to_flask(client, db, alice):
    code = gen_code(db, alice)
    assert client.get(f"/img/{code.slug}.svg").status_code == 200
    assert client.get(f"/img/{code.slug}.png?size=abc").status_code == 200
    assert client.get(f"/img/{code.slug}.svg?size=100").status_code == 200
    assert client.get("/img/nosuch1.png").status_code == 404


def test_lean_base_url_matches_werkzeugs_url_root():
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from qrtrack.web.fastpath import request_base_url

    for base in ("http://localhost/", "https://qr.example.com/", "http://example.com:8080/qr/",
                 "https://example.com:443/sub/folder/", "http://127.0.0.1:8000/", "http://example.com/a_b.c-d~e/"):
        environ = EnvironBuilder(path="/img/x.png", base_url=base).get_environ()
        assert request_base_url(environ) == Request(environ).url_root.rstrip("/")
    for base in ("http://example.com/qr%20codes/", "http://example.com/caf%C3%A9/", "http://example.com/a%25b/"):
        assert request_base_url(EnvironBuilder(path="/img/x.png", base_url=base).get_environ()) is None


@pytest.mark.parametrize(("size", "kind", "expected_size"),
                         [(512, "png", 512), (None, "png", 400), (None, "svg", None)])
def test_the_dashboards_versioned_image_urls_take_the_lean_path(app, db, alice, size, kind, expected_size):
    """Under CGI an image Flask answers costs a whole app start (~1 s): a codes list shows one per code."""
    from urllib.parse import urlsplit

    from qrtrack.web.dashboard.codes_pages import qr_image_url

    code = gen_code(db, alice)
    with app.test_request_context():
        url = urlsplit(qr_image_url(code, size=size, kind=kind))
    request = {"REQUEST_METHOD": "GET", "PATH_INFO": url.path, "QUERY_STRING": url.query}
    assert "v=" in url.query and image_request(request)[:3] == (code.slug, kind, expected_size)


def test_an_image_url_naming_its_current_version_is_cached_for_good_by_flask_lean_path_and_cgi(app, client, services,
                                                                                                 db, alice):
    """The dashboard's image URLs carry ?v=<what the image shows>: a browser need not ask again until a logo
    change gives a new URL. Any other URL, a printed one or a stale version, is cached for five minutes."""
    from urllib.parse import urlsplit

    from qrtrack.images.cache import IMAGE_CACHE_CONTROL, VERSIONED_IMAGE_CACHE_CONTROL
    from qrtrack.web.dashboard.codes_pages import qr_image_url

    code = gen_code(db, alice)
    with app.test_request_context():
        current = urlsplit(qr_image_url(code, size=128))
    stale = current.query.replace(current.query[-16:], "0" * 16)
    for query, expected in ((current.query, VERSIONED_IMAGE_CACHE_CONTROL), (stale, IMAGE_CACHE_CONTROL),
                            ("size=128", IMAGE_CACHE_CONTROL)):
        services.images.discard_prefix(f"{code.slug}-")
        rendered_by_flask, from_the_cache = (client.get(f"{current.path}?{query}") for _ in range(2))
        assert rendered_by_flask.headers["Cache-Control"] == from_the_cache.headers["Cache-Control"] == expected
        assert rendered_by_flask.data == from_the_cache.data
        out = io.BytesIO()
        environ = cgi_environ(services, code.slug, PATH_INFO=current.path, QUERY_STRING=query, HTTP_HOST="localhost")
        assert serve_cgi(environ, out=out) is True
        assert f"\r\nCache-Control: {expected}\r\n".encode() in out.getvalue()
