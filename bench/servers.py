"""The servers a benchmark measures: gunicorn on 127.0.0.1, identical settings for QR Track and baselines.

Each server runs in its own process group and is stopped with it, so no worker outlives a run.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.site import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
WORKER_TIMEOUT_SECONDS = 60
COMMON_FLAGS = ("--backlog", "2048", "--timeout", str(WORKER_TIMEOUT_SECONDS), "--graceful-timeout", "5",
                "--log-level", "warning")
# gunicorn reads this file by itself when started in the project folder; naming it keeps that visible.
PROJECT_CONFIG = PROJECT_ROOT / "gunicorn.conf.py"
READY_SECONDS = 60
STOP_SECONDS = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_flags(threads: int) -> list[str]:
    """gunicorn's flags for every measured app alike: sync workers, or gthread workers with `threads` threads."""
    worker = ["--worker-class", "sync" if threads <= 1 else "gthread", "--threads", str(threads)]
    config = ["--config", str(PROJECT_CONFIG)] if PROJECT_CONFIG.is_file() else []
    return ["--workers", str(WORKERS), *worker, *COMMON_FLAGS, *config]


def gunicorn_settings(threads: int) -> str:
    """The server settings every measured app shares, as RESULTS.md records them."""
    flags = " ".join(server_flags(threads)).replace(str(PROJECT_ROOT) + "/", "")
    return f"gunicorn {flags} --bind 127.0.0.1:<free port>"


@dataclass
class Server:
    """One gunicorn master and its workers, serving `target` (module:object) with the given environment."""

    name: str
    target: str
    env: dict[str, str]
    log_path: Path
    threads: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "gunicorn", *server_flags(self.threads), "--chdir", str(PROJECT_ROOT),
                   "--bind", f"127.0.0.1:{self.port}", self.target]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        """Until the server answers any HTTP status, all its workers have booted, or READY_SECONDS pass."""
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited during start-up:\n{self.log_tail()}")
            if len(self.worker_pids()) >= WORKERS and self._answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} server did not answer within {READY_SECONDS} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"GET /bench-ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return sock.recv(12).startswith(b"HTTP/")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_SECONDS)
        except ProcessLookupError:
            pass

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def worker_pids(self) -> list[int]:
        return child_pids(self.process.pid) if self.process else []

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the master and its workers so far."""
        return sum(process_cpu_seconds(pid) for pid in [self.process.pid, *self.worker_pids()])

    def worker_rss_bytes(self) -> list[int]:
        return [rss for rss in (resident_bytes(pid) for pid in self.worker_pids()) if rss is not None]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_all(servers: list[Server]) -> None:
    """Start every server at once and wait for each, so start-up costs the slowest, not the sum."""
    for server in servers:
        server.start()
    for server in servers:
        server.wait_ready()


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and int(fields[1]) == parent:
            children.append(int(entry.name))
    return sorted(children)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): state, ppid, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def process_cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def resident_bytes(pid: int) -> int | None:
    """VmRSS from /proc/<pid>/status, or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
