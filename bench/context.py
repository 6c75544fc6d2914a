"""What every case gets: the data, the running servers, the load settings, and what earlier cases left behind."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import Dataset
from .load import LoadSettings
from .servers import Server

FULL_LOAD = LoadSettings(threads=2, connections=50, seconds=5)
QUICK_LOAD = LoadSettings(threads=2, connections=4, seconds=1)
SETTLE_SECONDS = 5
RAISED_API_LIMIT = "1000000 per minute"  # what QR Track runs with in every case, so no load meets its 429


@dataclass(frozen=True)
class Row:
    """One line of the results table; ratio is ours / baseline (None when there is nothing to divide)."""

    case: str
    measure: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    result: str  # met, missed, report, n/a, error
    note: str = ""


@dataclass
class Bench:
    quick: bool
    run_dir: Path
    data: Dataset
    load: LoadSettings
    rounds: int
    servers: dict[str, Server]
    secret_key: str
    threads: int
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def static_image(self) -> Path:
        """The file the bare server sends for /img/...; image-warm writes our cached PNG there."""
        return self.run_dir / "static-image.png"

    def server(self, name: str) -> Server:
        return self.servers[name]

    def count(self, sql: str, *params: object, database: Path | None = None) -> int:
        """One integer from the instance database (or another), read-only: for checking what the app recorded."""
        connection = sqlite3.connect(f"file:{database or self.data.database}?mode=ro", uri=True, timeout=30)
        try:
            return connection.execute(sql, params).fetchone()[0]
        finally:
            connection.close()

    def settled_count(self, sql: str, *params: object) -> int:
        """The count once it stops changing (writes still finishing when the load ends), within SETTLE_SECONDS."""
        deadline = time.monotonic() + SETTLE_SECONDS
        previous = self.count(sql, *params)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            current = self.count(sql, *params)
            if current == previous:
                return current
            previous = current
        return previous


def met(condition: bool) -> str:
    return "met" if condition else "missed"


def ratio(ours: float, baseline: float) -> float | None:
    return ours / baseline if baseline else None
