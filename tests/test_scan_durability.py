"""Kill the workers mid-load: every scan a visitor was redirected for is in the database."""
from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from qrtrack import codes

from .conftest import PROJECT_ROOT, env_without_settings, gen_code
from .test_quickstart import free_port

pytestmark = pytest.mark.server


def worker_pids(master_pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in children]


def wait_until_serving(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/login")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    raise AssertionError("server did not start")


def hammer(port: int, slug: str, until: float, acknowledged: list[int]) -> None:
    """Scan in a loop until the deadline, counting the 302s this client received."""
    count = 0
    connection = None
    while time.monotonic() < until:
        try:
            connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/p/{slug}", headers={"User-Agent": "Mozilla/5.0 (iPhone)"})
            response = connection.getresponse()
            response.read()
            if response.status == 302:
                count += 1
        except (OSError, http.client.HTTPException):
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.02)
    if connection is not None:
        connection.close()
    acknowledged.append(count)


@pytest.mark.parametrize("threads, synchronous", [
    ("1", "NORMAL"),  # what gunicorn.conf.py ships: sync workers
    ("4", "NORMAL"),  # gthread: group commit shares transactions among a worker's threads
    ("1", "FULL"),    # the store syncs the WAL itself, after the writer lock
])
def test_no_acknowledged_scan_is_lost_when_workers_are_killed(services, db, alice, threads, synchronous):
    code = gen_code(db, alice)
    port = free_port()
    env = {**env_without_settings(), "INSTANCE_PATH": str(services.settings.INSTANCE_PATH),
           "SECRET_KEY": services.settings.SECRET_KEY, "SQLITE_SYNCHRONOUS": synchronous}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                               "--threads", threads, "--graceful-timeout", "1", "app:app"],
                              env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    acknowledged: list[int] = []
    try:
        wait_until_serving(port)
        for _ in range(20):
            hammer(port, code.slug, time.monotonic() + 0.05, [])
        until = time.monotonic() + 3.0
        clients = [threading.Thread(target=hammer, args=(port, code.slug, until, acknowledged)) for _ in range(6)]
        for client in clients:
            client.start()
        for kill_at in (0.8, 1.8):
            time.sleep(max(0.0, until - 3.0 + kill_at - time.monotonic()))
            for pid in worker_pids(server.pid):
                os.kill(pid, signal.SIGKILL)
        for client in clients:
            client.join(timeout=30)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    stored = codes.get_code(db, owner_id=alice, uuid=code.uuid).scan_count
    with db.read() as conn:
        rows = conn.exec_driver_sql("SELECT COUNT(*) FROM scans").scalar_one()
    assert sum(acknowledged) > 20
    assert stored == rows
    assert stored >= sum(acknowledged)
