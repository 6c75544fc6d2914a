"""What every deploy test shares: an uploaded copy of the app with its venv, run as the web user, and plain HTTP.

The virtual environment is built once per requirements.txt from Debian's python (the web user cannot
reach a Python under /root) and kept in /tmp between runs. Web roots live under /tmp too, where the
web user can reach them (pytest's tmp_path is private to root).
"""
from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
WEB_USER = "www-data"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NEVER_COPIED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}
PRIVATE_PORTS_FROM = 20000  # test servers listen from here up to the ephemeral range (see free_port)
SITE_DATA = {PROJECT_ROOT / "TiCore": {".env"}, PROJECT_ROOT / "tests": {"artifacts"}, PROJECT_ROOT / "bench": {"out"}}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def fetch(url: str, method: str = "GET", *, headers: dict[str, str] | None = None, body: bytes | None = None,
          timeout: float = 60, source: str | None = None) -> Response:
    """One request, redirects not followed; url is http(s)://host:port/path, certificates are not checked.

    source is the local address to send from (any of 127.0.0.0/8), so a proxy sees a client other than itself.
    """
    parts = urlsplit(url)
    source_address = (source, 0) if source else None
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=context,
                                           source_address=source_address)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout,
                                          source_address=source_address)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        reply = conn.getresponse()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
    finally:
        conn.close()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing is bound to now, for a server started right after.

    Taken below the kernel's ephemeral range, which bind(port 0) would pick from: the outgoing connections
    of a load test (wrk opens thousands a second) take their local ports there too, and one could take the
    port in the moment between this check and the server's bind.
    """
    ephemeral_low = _ephemeral_port_range()[0]
    lowest = PRIVATE_PORTS_FROM if ephemeral_low > PRIVATE_PORTS_FROM + 1000 else 1024
    for port in random.sample(range(lowest, ephemeral_low), k=min(200, ephemeral_low - lowest)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {lowest} and {ephemeral_low} on 127.0.0.1")


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def wait_for_port(port: int, *, what: str, process: subprocess.Popen | None = None, seconds: float = 30) -> None:
    """Return once something listens on 127.0.0.1:port; raise if process ends first or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def wait_until_port_is_free(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"something still listens on {port}")


def can_make_venvs() -> bool:
    """Whether Debian's python here can make a venv (deploy_venv): it needs the package python3-venv."""
    return Path(SYSTEM_PYTHON).exists() and subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip"],
                                                           capture_output=True).returncode == 0


def missing_basics() -> list[str]:
    """What every deploy test needs here: Debian's python with venv, and root to run servers as the web user."""
    needs = {"python3 -m venv (Debian package python3-venv)": can_make_venvs(),
             f"root, to run servers as {WEB_USER}": os.geteuid() == 0}
    return [what for what, present in needs.items() if not present]


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
    """What a user uploads: the working tree without history, venvs, caches or site data; .venv links to venv.

    Then the README's set-up step that compiles the app's bytecode, which the web user could not write.
    """
    shutil.copytree(PROJECT_ROOT, folder, ignore=_not_uploaded)
    (folder / ".venv").symlink_to(venv)
    subprocess.run([folder / ".venv" / "bin" / "python", "-m", "compileall", "-q", "hosting.py", "app.py", "qrtrack"],
                   cwd=folder, env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}, check=True, capture_output=True,
                   timeout=120)


def _not_uploaded(directory: str, names: list[str]) -> set[str]:
    here = Path(directory)
    if here == PROJECT_ROOT / "instance":
        return set(names) - {".htaccess"}
    return {name for name in names if name in NEVER_COPIED or name in SITE_DATA.get(here, ())}


def run_flask(folder: Path, *args: str) -> str:
    """A `flask --app app` command in folder with its .venv, run as the web user, as the host's user would."""
    command = ["runuser", "-u", WEB_USER, "--", folder / ".venv" / "bin" / "python", "-m", "flask", "--app", "app",
               *args]
    result = subprocess.run(command, cwd=folder, env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}, capture_output=True,
                            text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def make_web_root() -> Path:
    """A fresh folder under /tmp that the web user can traverse (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="qrtrack-deploy-"))
    root.chmod(0o755)
    return root


def give_to_web_user(*folders: Path) -> None:
    """The host's user owns the uploaded files; the app writes instance/ and the rate-limit counters as that user."""
    for folder in folders:
        subprocess.run(["chown", "-R", "--no-dereference", f"{WEB_USER}:{WEB_USER}", folder], check=True)


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
