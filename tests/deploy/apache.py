"""A private Apache (CGI, FastCGI or Passenger) on 127.0.0.1 serving copies of the app, for the deploy tests.

One Apache per mode serves three sites, each on its own port: a copy of the app in the sub-folder /qr/,
another copy at the domain root, and a minimal probe app at the root behind the same entries. Everything
lives in one temporary folder that www-data can reach; /etc/apache2 is never touched.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .site import (
    CLEAN_PATH,
    PROJECT_ROOT,
    SYSTEM_PYTHON,
    WEB_USER,
    free_port,
    log_tail,
    missing_basics,
    wait_for_port,
    wait_until_port_is_free,
)

MODES = ("cgi", "fastcgi", "passenger")
SUB_FOLDER = "/qr"
MODULES = Path("/usr/lib/apache2/modules")
PASSENGER_ROOT = "/usr/lib/ruby/vendor_ruby/phusion_passenger/locations.ini"

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

PROBE_FASTPATH = '''"""No lean path in the probe: the shipped entries find no lean handlers, so the app answers."""


def serve_cgi(environ, **kwargs):
    return False


def lean_until_loaded(load_app):
    return load_app()
'''


def write_probe(folder: Path, venv: Path) -> None:
    """A folder with the shipped entries and .htaccess around the minimal app in PROBE_APP (no fast path)."""
    folder.mkdir(parents=True)
    for name in (".htaccess", "hosting.py", "passenger_wsgi.py", "app.cgi", "app.fcgi"):
        shutil.copy2(PROJECT_ROOT / name, folder / name)
    (folder / "app.py").write_text(PROBE_APP)
    (folder / "qrtrack").mkdir()
    (folder / "qrtrack" / "web").mkdir(parents=True)
    (folder / "qrtrack" / "__init__.py").write_text("")
    (folder / "qrtrack" / "web" / "__init__.py").write_text("")
    (folder / "qrtrack" / "web" / "fastpath.py").write_text(PROBE_FASTPATH)
    (folder / ".venv").symlink_to(venv)


@dataclass
class Apache:
    """A private Apache: the app at SUB_FOLDER on one port and at the root of another, the probe on a third."""

    mode: str
    root: Path
    folder_port: int = field(default_factory=free_port)
    root_port: int = field(default_factory=free_port)
    probe_port: int = field(default_factory=free_port)

    @property
    def htdocs(self) -> Path:
        """The document root of the sub-folder site; the app is its SUB_FOLDER."""
        return self.root / "htdocs"

    @property
    def root_site(self) -> Path:
        """The app folder that is itself the document root of the root site."""
        return self.root / "rootsite"

    @property
    def probe_root(self) -> Path:
        return self.root / "probe"

    @property
    def config_path(self) -> Path:
        return self.root / "httpd.conf"

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    def app_folder(self, mount: str) -> Path:
        """The uploaded folder served at mount: SUB_FOLDER or "" (the domain root)."""
        return self.htdocs / mount.strip("/") if mount else self.root_site

    def url(self, mount: str, path: str = "") -> str:
        """The address of path in the app mounted at mount (SUB_FOLDER or "")."""
        port = self.folder_port if mount else self.root_port
        return f"http://127.0.0.1:{port}{mount}/{path}"

    def probe_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.probe_port}{path}"

    def config_text(self) -> str:
        mode_config = {"cgi": self._cgi_config, "fastcgi": self._fastcgi_config,
                       "passenger": self._passenger_config}[self.mode]()
        modules = ["mpm_prefork", "authz_core", "authz_host", "access_compat", "mime", "dir", "rewrite", "env",
                   "setenvif", "alias", "headers"]
        loads = "\n".join(f"LoadModule {name}_module {MODULES}/mod_{name}.so" for name in modules)
        return f"""\
ServerRoot {self.root}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.folder_port}
Listen 127.0.0.1:{self.root_port}
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
{self._virtual_host(self.folder_port, self.htdocs, self.app_folder(SUB_FOLDER), SUB_FOLDER)}
{self._virtual_host(self.root_port, self.root_site, self.root_site, "/")}
{self._virtual_host(self.probe_port, self.probe_root, self.probe_root, "/")}
"""

    def _virtual_host(self, port: int, document_root: Path, app_folder: Path, base_uri: str) -> str:
        return f"""\
<VirtualHost 127.0.0.1:{port}>
    DocumentRoot {document_root}
    {self._passenger_app(app_folder, base_uri)}
    <Directory {document_root}>
        AllowOverride All
        Require all granted
    </Directory>
</VirtualHost>"""

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
        """Start Apache; a start that dies of a signal is tried once more.

        Debian's mod_passenger 6.0.17 once crashed Apache's start in CI ("double free or corruption" right
        after "Passenger core online", SIGABRT), before any request or app process: not ours to fix, and not
        a reason for the suite to fail.
        """
        for folder in ("run", "run/passenger", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        try:
            self._apache_command("start")
        except subprocess.CalledProcessError as error:
            if error.returncode >= 0:
                raise
            self.stop()
            self._end_leftovers()
            self._apache_command("start")
        wait_for_port(self.folder_port, what=f"Apache (see {self.error_log})")
        deadline = time.monotonic() + 30
        while self._parent_pid() is None and time.monotonic() < deadline:  # written just after the ports open
            time.sleep(0.05)

    def _apache_command(self, action: str) -> None:
        subprocess.run(["apache2", "-f", self.config_path, "-k", action], check=True, capture_output=True,
                       env={"PATH": CLEAN_PATH, "LANG": "C"}, timeout=60)

    def restart(self) -> None:
        """Apache's own restart: its children and every app process they started end, and the next request
        starts new ones. Returns once Apache has restarted: `-k restart` only signals it, and until the signal
        is handled, which on a busy machine takes a while, old children still answer and are then ended mid-request.

        Debian's mod_passenger 6.0.17 has also crashed Apache's parent process on a restart ("double free or
        corruption (fasttop)" right after the SIGHUP, in the bench's quick hosting case in CI). Then what it left
        is ended and Apache is started afresh, once, as start() does for a start that crashes.
        """
        logged_before = self.error_log.stat().st_size if self.error_log.exists() else 0
        parent = self._parent_pid()
        self._apache_command("restart")
        deadline = time.monotonic() + 60
        while not self._restart_logged_since(logged_before):
            if parent is not None and not _running(parent):
                self._end_leftovers()
                self.start()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Apache did not restart within 60 s (see {self.error_log})")
            time.sleep(0.05)

    def _parent_pid(self) -> int | None:
        try:
            return int((self.root / "run" / "httpd.pid").read_text())
        except (OSError, ValueError):
            return None

    def _end_leftovers(self) -> None:
        """End what an Apache whose parent process crashed left: its children, found by this server's config file
        on their command line (they still hold its ports), and its pid file."""
        marker = str(self.config_path).encode()
        for process in Path("/proc").iterdir():
            try:
                if process.name.isdigit() and marker in (process / "cmdline").read_bytes().split(b"\0"):
                    os.kill(int(process.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue  # ended meanwhile
        (self.root / "run" / "httpd.pid").unlink(missing_ok=True)
        for port in (self.folder_port, self.root_port, self.probe_port):
            wait_until_port_is_free(port)

    def _restart_logged_since(self, offset: int) -> bool:
        """Whether Apache has logged past offset that it (re)started: AH00163, "... resuming normal operations".
        Only what was written since is read: Passenger's lines make the whole log long."""
        if not self.error_log.exists():
            return False
        with self.error_log.open("rb") as log:
            log.seek(offset)
            return b"AH00163" in log.read()

    def stop(self) -> None:
        """Stop Apache and wait for its pid file to go; a parent that crashed leaves the file (see _end_leftovers)."""
        pid_file = self.root / "run" / "httpd.pid"
        if not pid_file.exists():
            return
        parent = self._parent_pid()
        try:
            self._apache_command("stop")
        except subprocess.CalledProcessError:
            pass  # already gone: the pid file is all it left
        deadline = time.monotonic() + 30
        while pid_file.exists() and time.monotonic() < deadline:
            if parent is not None and not _running(parent):
                return
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.error_log, lines)


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a crashed daemon's parent may not have reaped it yet)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def missing_for(mode: str) -> list[str]:
    """What this machine lacks to serve the app in mode; the Debian package to install is named."""
    missing = missing_basics()
    needs = {"apache2 (Debian package apache2)": shutil.which("apache2") or Path("/usr/sbin/apache2").exists()}
    if mode == "fastcgi":
        needs["mod_fcgid (libapache2-mod-fcgid)"] = (MODULES / "mod_fcgid.so").exists()
    if mode == "passenger":
        needs["mod_passenger (libapache2-mod-passenger)"] = (MODULES / "mod_passenger.so").exists()
    return missing + [what for what, present in needs.items() if not present]
