"""The results table (printed, and in bench/RESULTS.md with the machine, interpreter, date and settings)."""
from __future__ import annotations

import datetime
import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .context import Row

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN = "<!-- bench/run.py rewrites everything from here to the end marker on each full run; edit outside it. -->"
END = "<!-- end of bench/run.py output -->"
HEADER = ("case", "measure", "ours", "baseline", "ratio", "target", "result", "notes")


def format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * len(HEADER)) + "|"]
    for row in rows:
        cells = (row.case, row.measure, row.ours, row.baseline, format_ratio(row.ratio), row.target, row.result,
                 row.note)
        lines.append("| " + " | ".join(str(cell).replace("|", "/").replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines)


def environment(settings: dict[str, str]) -> list[str]:
    """Bullet lines: when, on what, with which interpreter and tools, under which settings."""
    return [
        f"- **Date:** {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- **Machine:** {len(os.sched_getaffinity(0))} CPUs ({_cpu_model()}), {_memory_gb():.1f} GB RAM, "
        f"{platform.system()} {platform.release()}",
        f"- **Interpreter:** Python {sys.version.replace(chr(10), ' ')} at `{sys.executable}`",
        f"- **Code:** {_git_revision()}",
        f"- **Tools:** gunicorn {_version('gunicorn')}, {_wrk_version()}, SQLite {sqlite3.sqlite_version}",
        *(f"- **{name}:** {value}" for name, value in settings.items()),
    ]


def write_results(rows: list[Row], settings: dict[str, str], extra: str = "") -> None:
    """Replace the generated block of RESULTS.md, keeping what people wrote around it."""
    block = "\n".join([BEGIN, "## Latest full run", "", *environment(settings), "", table(rows), "", extra, END])
    text = RESULTS_PATH.read_text() if RESULTS_PATH.exists() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = f"# Benchmark results\n\n{block}\n\n## What limits us\n\n(to be written from the numbers above)\n"
    RESULTS_PATH.write_text(text)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _git_revision() -> str:
    root = RESULTS_PATH.parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"commit {commit}" + (" plus uncommitted changes in the working tree" if dirty else "")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _wrk_version() -> str:
    try:
        output = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "wrk (not installed)"
    first = (output.stdout or output.stderr).splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk"
