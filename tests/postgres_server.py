"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary folder, one server on 127.0.0.1.

Debian's postgresql package puts the server binaries in /usr/lib/postgresql/<major>/bin and does not
put them on PATH. The system service is never used: the cluster lives and dies with the test session.
PostgreSQL refuses to run as root, so under root (CI) every server command runs as the postgres user.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .deploy.site import free_port

DEBIAN_SERVER_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
# Durability buys nothing in a cluster thrown away at the end of the run, and costs time on every commit.
SERVER_OPTIONS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                  "-c max_connections=200")


def server_bin() -> Path:
    """The newest Debian-installed major version's bin folder (a path that may not exist)."""
    versions = [path for path in DEBIAN_SERVER_ROOT.glob("*/bin") if path.parent.name.isdigit()]
    if not versions:
        return DEBIAN_SERVER_ROOT / "15" / "bin"
    return max(versions, key=lambda path: int(path.parent.name))


INITDB = server_bin() / "initdb"


class PostgresServer:
    """One cluster: start() it, create_database() per test from a template, stop() it."""

    def __init__(self) -> None:
        self.bin = INITDB.parent
        self.folder = Path(tempfile.mkdtemp(prefix="qrtrack-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_postgres_user = hasattr(os, "geteuid") and os.geteuid() == 0
        self._names = itertools.count(1)
        self._admin = None

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_postgres_user:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if result.returncode != 0:
            log = self.folder / "server.log"
            raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}"
                               f"{log.read_text() if log.exists() else ''}")

    def start(self) -> None:
        if self.as_postgres_user:
            shutil.chown(self.folder, user=SUPERUSER, group=SUPERUSER)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} {SERVER_OPTIONS}"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.folder / "server.log"),
                  "-o", options)

    def stop(self) -> None:
        try:
            if self._admin is not None:
                self._admin.close()
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str) -> str:
        """The URL a user would put in DATABASE_URL, in the form the README documents."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement as the superuser in the maintenance database, outside a transaction."""
        import psycopg

        if self._admin is None:
            self._admin = psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                                          autocommit=True)
        self._admin.execute(sql)

    def create_database(self, name: str | None = None, *, template: str = "template0") -> str:
        """A new empty database, or a copy of template; returns its URL."""
        name = name or f"qrtrack_test_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database, ending any session a test left open on it."""
        name = url.rsplit("/", 1)[1]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
