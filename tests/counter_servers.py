"""Throwaway redis and memcached servers for the rate-limit tests: Debian's own binaries, one process each on a
free port of 127.0.0.1, nothing written to disk, stopped (and startable again) at will.

RATELIMIT_STORAGE_URI may name either instead of the SQLite counters; the README tells big sites to.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

from .deploy.site import free_port, wait_for_port


class CounterServer:
    """One server process on 127.0.0.1:port; start() and stop() may be called again, on the same port."""

    program = ""
    scheme = ""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with tempfile.TemporaryFile() as output:
            self.process = subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT)
            try:
                wait_for_port(self.port, what=self.program, process=self.process)
            except RuntimeError as error:
                self.stop()
                output.seek(0)
                raise RuntimeError(f"{error}: {output.read().decode(errors='replace')[-2000:]}") from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    @classmethod
    def missing(cls) -> bool:
        return shutil.which(cls.program) is None


class RedisServer(CounterServer):
    """With a password, the server requires it and the URI carries it, as a hosted redis's would."""

    program = "redis-server"
    scheme = "redis"

    def __init__(self, *, password: str | None = None) -> None:
        super().__init__()
        self.password = password

    @property
    def uri(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"{self.scheme}://{credentials}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        password = ["--requirepass", self.password] if self.password else []
        return [self.program, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                *password]


class MemcachedServer(CounterServer):
    program = "memcached"
    scheme = "memcached"

    def command(self) -> list[str]:
        as_user = ["-u", "nobody"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # it refuses root
        return [self.program, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", *as_user]


class SilentServer:
    """A port that takes connections and never answers: a counter server that has hung, or whose answers a
    firewall drops. The kernel completes each handshake into the listen backlog; nothing ever reads."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()
