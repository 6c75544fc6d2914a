"""Load and timing: wrk runs (through phone.lua), sequential requests, alternating rounds, medians."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

PHONE_USER_AGENT = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
# A public address (Google's resolver), sent as X-Forwarded-For as nginx would: QR Track trusts one proxy
# in the bench (TRUST_PROXY=1), so every scan pays for placing a routable address, as a real visitor's does.
PHONE_ADDRESS = "8.8.8.8"
PHONE_HEADERS = {"User-Agent": PHONE_USER_AGENT, "X-Forwarded-For": PHONE_ADDRESS}
LUA_SCRIPT = Path(__file__).resolve().with_name("phone.lua")
INSTALL_WRK = "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), then run again"
WRK_GRACE_SECONDS = 60
REQUEST_TIMEOUT_SECONDS = 30
T = TypeVar("T")


class BenchError(RuntimeError):
    """Something the benchmark needs did not work (a status, a tool); the message says what."""


@dataclass(frozen=True)
class LoadSettings:
    threads: int
    connections: int
    seconds: int

    def flags(self) -> list[str]:
        return ["-t", str(self.threads), "-c", str(self.connections), "-d", f"{self.seconds}s", "--timeout", "10s"]

    def describe(self) -> str:
        return "wrk " + " ".join(self.flags())


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def acknowledged(self) -> int:
        """Responses with a 2xx or 3xx status: for a scan, each one promises a recorded scan."""
        return self.requests - self.status_errors


def has_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, load: LoadSettings, *, method: str = "GET", body: str = "",
            headers: Mapping[str, str] | None = None) -> WrkResult:
    if not has_wrk():
        raise BenchError(INSTALL_WRK)
    header_flags = [part for name, value in (headers or {}).items() for part in ("-H", f"{name}: {value}")]
    command = ["wrk", *load.flags(), "-s", str(LUA_SCRIPT), *header_flags, url]
    env = {**os.environ, "BENCH_USER_AGENT": PHONE_USER_AGENT, "BENCH_FORWARDED_FOR": PHONE_ADDRESS,
           "BENCH_METHOD": method, "BENCH_BODY": body}
    completed = subprocess.run(command, env=env, capture_output=True, text=True,
                               timeout=load.seconds + WRK_GRACE_SECONDS)
    line = next((line for line in completed.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if completed.returncode or line is None:
        raise BenchError(f"wrk failed ({completed.returncode}): {completed.stderr or completed.stdout}")
    data = json.loads(line.split(" ", 1)[1])
    return WrkResult(
        requests=data["requests"], duration_s=data["duration_us"] / 1e6, status_errors=data["status_errors"],
        socket_errors=sum(data[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts")),
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, max_ms=data["max_us"] / 1000)


@dataclass(frozen=True)
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def fetch(port: int, path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
          body: bytes | None = None, timeout: float = REQUEST_TIMEOUT_SECONDS) -> Response:
    """One request on a fresh connection; redirects are not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={**PHONE_HEADERS, **(headers or {})})
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        connection.close()


def time_requests(port: int, path: str, *, count: int, expect: int, seconds: float,
                  headers: Mapping[str, str] | None = None) -> list[float]:
    """Milliseconds for up to `count` sequential GETs through one http.client connection, stopping after `seconds`.

    http.client keeps the connection alive when the server allows it and reconnects when the server
    closes it (gunicorn's sync workers close after every response), so the time includes what a
    client pays either way.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
    request_headers = {**PHONE_HEADERS, **(headers or {})}
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            connection.request("GET", path, headers=request_headers)
            response = connection.getresponse()
            response.read()
            samples.append((time.perf_counter() - started) * 1000)
            if response.status != expect:
                raise BenchError(f"GET {path} answered {response.status}, expected {expect}")
    finally:
        connection.close()
    return samples


def time_call(function: Callable[[], object]) -> float:
    """Milliseconds one call of function takes."""
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000


def alternate(rounds: int, measures: Mapping[str, Callable[[], T]]) -> dict[str, list[T]]:
    """Run every measure once per round, in turn, so slow drifts of the machine hit them all alike."""
    results: dict[str, list[T]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
    return results


def median(values: list[float]) -> float:
    return statistics.median(values)
