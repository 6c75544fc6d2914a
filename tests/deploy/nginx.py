"""The VPS guide as shipped: gunicorn started from deploy/qrtrack.service behind nginx with deploy/nginx.conf.

Both files are read as they are and adapted only where a test machine differs from a VPS: the folder
(/srv/qrtrack), the ports (gunicorn's 127.0.0.1:8000, nginx's 80 and the 443 that certbot adds, here all
on 127.0.0.1), and the user. nginx runs in the foreground from its own configuration, pid and logs;
/etc/nginx is only read for mime.types.
"""
from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .site import CLEAN_PATH, PROJECT_ROOT, WEB_USER, free_port, log_tail, wait_for_port

NGINX = "/usr/sbin/nginx"
OPENSSL = "/usr/bin/openssl"
SERVICE_FILE = PROJECT_ROOT / "deploy" / "qrtrack.service"
SITE_FILE = PROJECT_ROOT / "deploy" / "nginx.conf"
CERTBOT_MARK = "# certbot --nginx adds the listen 443 lines and the certificate here."
SUB_FOLDER_MARK = "# Mounted at https://example.com/qr/ instead"


@dataclass
class Unit:
    """What deploy/qrtrack.service says about running the app."""

    working_directory: str
    user: str
    exec_start: list[str]

    @property
    def bind(self) -> str:
        return self.exec_start[self.exec_start.index("--bind") + 1]


def read_unit(path: Path = SERVICE_FILE) -> Unit:
    service: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            service[key.strip()] = value.strip()
    return Unit(service["WorkingDirectory"], service["User"], shlex.split(service["ExecStart"]))


def replace_all(text: str, old: str, new: str) -> str:
    """text with every old replaced by new; old must be there, or the file no longer says what the test adapts."""
    assert old in text, f"{old!r} is no longer in the file: update the deploy test"
    return text.replace(old, new)


@dataclass
class Gunicorn:
    """gunicorn as the unit's ExecStart starts it, in folder, as the web user, on a free port of 127.0.0.1."""

    unit: Unit
    folder: Path
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        command = [arg.replace(self.unit.working_directory, str(self.folder)) for arg in self.unit.exec_start]
        return [f"127.0.0.1:{self.port}" if arg == self.unit.bind else arg for arg in command]

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                            env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}, user=WEB_USER,
                                            group=WEB_USER, extra_groups=[])
        wait_for_port(self.port, what=f"gunicorn (see {self.log})", process=self.process)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Nginx:
    """A foreground nginx in root serving the shipped site at the domain root (plain and TLS) and in a sub-folder.

    folder_port serves the sub-folder variant that deploy/nginx.conf documents in its closing comment.
    """

    root: Path
    app_folder: Path
    unit: Unit
    upstream_port: int
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    folder_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    def site_text(self) -> str:
        """deploy/nginx.conf with this machine's folder and ports, and the lines certbot would add for TLS."""
        text = SITE_FILE.read_text()
        text = replace_all(text, f"server {self.unit.bind} ", f"server 127.0.0.1:{self.upstream_port} ")
        text = replace_all(text, self.unit.working_directory + "/", f"{self.app_folder}/")
        text = replace_all(text, "listen [::]:80;", "")
        text = replace_all(text, "listen 80;", f"listen 127.0.0.1:{self.port};")
        return replace_all(text, CERTBOT_MARK, f"listen 127.0.0.1:{self.tls_port} ssl;\n"
                                               f"    ssl_certificate {self.root}/cert.pem;\n"
                                               f"    ssl_certificate_key {self.root}/key.pem;")

    def sub_folder_locations(self) -> str:
        """The commented locations for a sub-folder mount, uncommented, with this machine's folder."""
        _, mark, rest = self.site_text().partition(SUB_FOLDER_MARK)
        assert mark, "deploy/nginx.conf no longer documents a sub-folder mount: update the deploy test"
        return "\n".join(line[1:] for line in rest.splitlines() if line.startswith("#    "))

    def config_text(self) -> str:
        """A main configuration like Debian's /etc/nginx/nginx.conf, with the site included in http {}."""
        temp = "\n    ".join(f"{kind}_temp_path {self.root}/temp/{kind};"
                             for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return f"""\
user {WEB_USER};
worker_processes 1;
pid {self.root}/nginx.pid;
error_log {self.error_log};
events {{
    worker_connections 64;
}}
http {{
    sendfile on;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {self.root}/logs/access.log;
    {temp}
    include {self.root}/site.conf;
    server {{
        listen 127.0.0.1:{self.folder_port};
        server_name example.com;
{self.sub_folder_locations()}
    }}
}}
"""

    def start(self) -> None:
        for folder in ("logs", "temp"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=qr.example.com", "-keyout", self.root / "key.pem",
                        "-out", self.root / "cert.pem"], check=True, capture_output=True, timeout=60)
        (self.root / "site.conf").write_text(self.site_text())
        (self.root / "nginx.conf").write_text(self.config_text())
        command = [NGINX, "-p", f"{self.root}/", "-c", self.root / "nginx.conf", "-e", self.error_log,
                   "-g", "daemon off;"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env={"PATH": CLEAN_PATH, "LANG": "C"})
        for port in (self.port, self.tls_port, self.folder_port):
            wait_for_port(port, what=f"nginx (see {self.error_log})", process=self.process)

    def stop(self) -> None:
        stop_process(self.process)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.error_log, lines)


def stop_process(process: subprocess.Popen | None, *, seconds: float = 30) -> None:
    """SIGTERM (nginx: fast shutdown; gunicorn: graceful), then SIGKILL if it has not ended in time."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(seconds)
