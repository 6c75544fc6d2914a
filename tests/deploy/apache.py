"""A copy of the app served by a private Apache (CGI, FastCGI or Passenger) on 127.0.0.1, for the deploy tests.

Everything lives in one temporary folder that www-data can reach; /etc/apache2 is never touched.
The virtual environment is built once per requirements.txt from Debian's python (the web user cannot
reach a Python under /root) and kept in /tmp between runs.
"""
from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("cgi", "fastcgi", "passenger")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODULES = Path("/usr/lib/apache2/modules")
SYSTEM_PYTHON = "/usr/bin/python3"
WEB_USER = "www-data"
PASSENGER_ROOT = "/usr/lib/ruby/vendor_ruby/phusion_passenger/locations.ini"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NEVER_COPIED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}
SITE_DATA = {PROJECT_ROOT / "TiCore": {".env"}, PROJECT_ROOT / "tests": {"artifacts"}, PROJECT_ROOT / "bench": {"out"}}

PROBE_APP = '''"""A minimal Flask app behind the same entry scripts: echoes what reached it, and a bare redirect."""
from flask import Flask, jsonify, redirect, request, url_for

app = Flask(__name__)


@app.get("/echo")
def echo():
    return jsonify(authorization=request.headers.get("Authorization"), api_key=request.headers.get("X-Api-Key"),
                   script_root=request.script_root, link=url_for("scan", slug="x", _external=True))


@app.get("/p/<slug>")
def scan(slug):
    return redirect("https://example.com/" + slug, 302)
'''

PROBE_FASTPATH = '''"""The probe has no lean scan path: app.cgi always falls through to the app."""


def serve_cgi_scan():
    return False
'''


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def fetch(url: str, method: str = "GET", *, headers: dict[str, str] | None = None, body: bytes | None = None,
          timeout: float = 60) -> Response:
    """One request, redirects not followed; url is http://host:port/path."""
    hostport, _, path = url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.request(method, "/" + path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def requirements_digest() -> str:
    return hashlib.sha256((PROJECT_ROOT / "requirements.txt").read_bytes()).hexdigest()[:16]


def deploy_venv() -> Path:
    """A venv from Debian's python with requirements.txt installed, built once per requirements.txt content."""
    venv = Path(tempfile.gettempdir()) / f"qrtrack-deploy-venv-{requirements_digest()}"
    done = venv / ".complete"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", venv], check=True)
            subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "-r", PROJECT_ROOT / "requirements.txt"], check=True)
            done.touch()
    return venv


def copy_app(folder: Path, venv: Path) -> None:
    """What a user uploads: the working tree without history, venvs, caches or site data; .venv links to venv."""
    shutil.copytree(PROJECT_ROOT, folder, ignore=_not_uploaded)
    (folder / ".venv").symlink_to(venv)


def _not_uploaded(directory: str, names: list[str]) -> set[str]:
    here = Path(directory)
    if here == PROJECT_ROOT / "instance":
        return set(names) - {".htaccess"}
    return {name for name in names if name in NEVER_COPIED or name in SITE_DATA.get(here, ())}


def write_probe(folder: Path, venv: Path) -> None:
    """A folder with the shipped entries and .htaccess around the minimal app in PROBE_APP (no fast path)."""
    folder.mkdir(parents=True)
    for name in (".htaccess", "hosting.py", "passenger_wsgi.py", "app.cgi", "app.fcgi"):
        shutil.copy2(PROJECT_ROOT / name, folder / name)
    (folder / "app.py").write_text(PROBE_APP)
    (folder / "qrtrack").mkdir()
    (folder / "qrtrack" / "__init__.py").write_text("")
    (folder / "qrtrack" / "fastpath.py").write_text(PROBE_FASTPATH)
    (folder / ".venv").symlink_to(venv)


def run_flask(folder: Path, *args: str) -> str:
    """A `flask --app app` command in folder with its .venv, run as the web user, as the host's user would."""
    command = ["runuser", "-u", WEB_USER, "--", folder / ".venv" / "bin" / "python", "-m", "flask", "--app", "app",
               *args]
    result = subprocess.run(command, cwd=folder, env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}, capture_output=True,
                            text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass
class Apache:
    """A private Apache serving htdocs on one port and probe_root (a minimal app at the root) on another."""

    mode: str
    root: Path
    port: int = field(default_factory=free_port)
    probe_port: int = field(default_factory=free_port)

    @property
    def htdocs(self) -> Path:
        return self.root / "htdocs"

    @property
    def probe_root(self) -> Path:
        return self.root / "probe"

    @property
    def config_path(self) -> Path:
        return self.root / "httpd.conf"

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def probe_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.probe_port}{path}"

    def _passenger_app(self, folder: Path, base_uri: str) -> str:
        """What the host writes for a Passenger app (cPanel writes the same lines into the folder's .htaccess).

        PassengerPython is the system python, so passenger_wsgi.py has to re-exec into .venv.
        """
        if self.mode != "passenger":
            return ""
        lines = [f"PassengerAppRoot {folder}", f"PassengerPython {SYSTEM_PYTHON}"]
        if base_uri == "/":
            return "\n    ".join(lines)
        return f"<Location {base_uri}>\n        PassengerBaseURI {base_uri}\n        " + "\n        ".join(lines) + \
            "\n    </Location>"

    def config_text(self) -> str:
        mode_config = {"cgi": self._cgi_config, "fastcgi": self._fastcgi_config,
                       "passenger": self._passenger_config}[self.mode]()
        modules = ["mpm_prefork", "authz_core", "authz_host", "access_compat", "mime", "dir", "rewrite", "env",
                   "setenvif", "alias", "headers"]
        loads = "\n".join(f"LoadModule {name}_module {MODULES}/mod_{name}.so" for name in modules)
        return f"""\
ServerRoot {self.root}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
Listen 127.0.0.1:{self.probe_port}
PidFile {self.root}/run/httpd.pid
DefaultRuntimeDir {self.root}/run
Mutex file:{self.root}/run default
ErrorLog {self.error_log}
LogLevel warn
LogFormat "%h %t \\"%r\\" %>s %b %D" timed
CustomLog {self.root}/logs/access.log timed
User {WEB_USER}
Group {WEB_USER}
{loads}
TypesConfig /etc/mime.types
StartServers 2
MinSpareServers 2
MaxSpareServers 8
MaxRequestWorkers 24
Timeout 60
{mode_config}
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<VirtualHost 127.0.0.1:{self.port}>
    DocumentRoot {self.htdocs}
    {self._passenger_app(self.htdocs / "qr", "/qr")}
    <Directory {self.htdocs}>
        AllowOverride All
        Require all granted
    </Directory>
</VirtualHost>
<VirtualHost 127.0.0.1:{self.probe_port}>
    DocumentRoot {self.probe_root}
    {self._passenger_app(self.probe_root, "/")}
    <Directory {self.probe_root}>
        AllowOverride All
        Require all granted
    </Directory>
</VirtualHost>
"""

    def _cgi_config(self) -> str:
        return f"LoadModule cgi_module {MODULES}/mod_cgi.so"

    def _fastcgi_config(self) -> str:
        return f"""\
LoadModule fcgid_module {MODULES}/mod_fcgid.so
FcgidIPCDir {self.root}/run/fcgid
FcgidProcessTableFile {self.root}/run/fcgid_shm
FcgidMaxProcessesPerClass 4
FcgidConnectTimeout 20"""

    def _passenger_config(self) -> str:
        return f"""\
LoadModule passenger_module {MODULES}/mod_passenger.so
PassengerRoot {PASSENGER_ROOT}
PassengerDefaultRuby /usr/bin/ruby
PassengerInstanceRegistryDir {self.root}/run/passenger
PassengerDisableAnonymousTelemetry on
PassengerDisableSecurityUpdateCheck on
PassengerMaxPoolSize 4"""

    def start(self) -> None:
        for folder in ("run", "run/passenger", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        subprocess.run(["apache2", "-f", self.config_path, "-k", "start"], check=True, capture_output=True,
                       env={"PATH": CLEAN_PATH, "LANG": "C"}, timeout=60)
        self._wait_for_port()

    def stop(self) -> None:
        pid_file = self.root / "run" / "httpd.pid"
        if not pid_file.exists():
            return
        subprocess.run(["apache2", "-f", self.config_path, "-k", "stop"], capture_output=True,
                       env={"PATH": CLEAN_PATH, "LANG": "C"}, timeout=60)
        deadline = time.monotonic() + 30
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Apache did not listen on {self.port}; see {self.error_log}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.error_log.exists():
            return "(no error log)"
        return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])


def make_web_root() -> Path:
    """A fresh folder under /tmp that the web user can traverse (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="qrtrack-deploy-"))
    root.chmod(0o755)
    return root


def give_to_web_user(*folders: Path) -> None:
    """The host's user owns the uploaded files; the app writes instance/ and the rate-limit counters as that user."""
    for folder in folders:
        subprocess.run(["chown", "-R", "--no-dereference", f"{WEB_USER}:{WEB_USER}", folder], check=True)


def missing_for(mode: str) -> list[str]:
    """What this machine lacks to serve the app in mode; the Debian package to install is named."""
    needs = {"apache2 (Debian package apache2)": shutil.which("apache2") or Path("/usr/sbin/apache2").exists(),
             "python3 -m venv (python3-venv)": Path(SYSTEM_PYTHON).exists()
             and subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip"], capture_output=True).returncode == 0,
             "root, to run Apache as www-data": os.geteuid() == 0}
    if mode == "fastcgi":
        needs["mod_fcgid (libapache2-mod-fcgid)"] = (MODULES / "mod_fcgid.so").exists()
    if mode == "passenger":
        needs["mod_passenger (libapache2-mod-passenger)"] = (MODULES / "mod_passenger.so").exists()
    return [what for what, present in needs.items() if not present]
