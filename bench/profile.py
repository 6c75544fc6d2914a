"""--profile: py-spy samples one QR Track worker during a scan load; the samples are summed by package and function.

The raw stacks go to bench/out/profile-scan.txt (collapsed format: flamegraph.pl and speedscope read it).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from .context import Bench
from .load import LoadSettings, run_wrk

OUT_DIR = Path(__file__).resolve().parent / "out"
PROFILE_SECONDS = 8
SAMPLE_RATE = 250
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::\d+)?\)$")
INSTALL_PY_SPY = "py-spy is not installed: `.venv/bin/pip install py-spy`"


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_scan(bench: Bench) -> str:
    """Markdown: where one worker's time goes while wrk drives the scan path."""
    tool = py_spy()
    if tool is None:
        return INSTALL_PY_SPY
    server = bench.server("ours")
    worker = server.worker_pids()[0]
    load = LoadSettings(bench.load.threads, bench.load.connections, seconds=PROFILE_SECONDS + 2)
    driver = threading.Thread(target=run_wrk, args=(server.url(f"/p/{bench.data.scan_slug}"), load), daemon=True)
    OUT_DIR.mkdir(exist_ok=True)
    raw = OUT_DIR / "profile-scan.txt"
    driver.start()
    try:
        completed = subprocess.run([tool, "record", "--pid", str(worker), "--duration", str(PROFILE_SECONDS),
                                    "--rate", str(SAMPLE_RATE), "--format", "raw", "--output", str(raw)],
                                   capture_output=True, text=True, timeout=PROFILE_SECONDS + 60)
    finally:
        driver.join(timeout=load.seconds + 90)
    if completed.returncode or not raw.exists():
        return f"py-spy failed ({completed.returncode}): {completed.stderr[-500:]}"
    summary = summarise(raw.read_text(), title=f"py-spy, {SAMPLE_RATE} Hz for {PROFILE_SECONDS} s on one worker "
                                               f"under {bench.load.describe()} of GET /p/<slug>")
    (OUT_DIR / "profile-scan.md").write_text(summary)
    return summary


def summarise(collapsed: str, *, title: str, top: int = 12) -> str:
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(text) for text in stack.split(";")]
        total += count
        function, file = frames[-1]
        by_package[_package(file)] += count
        by_function[f"{function} ({file})"] += count
        for name in {f"{function} ({file})" for function, file in frames if file.startswith("qrtrack/")}:
            inclusive[name] += count
    if not total:
        return f"{title}: no samples (was the worker busy?)"

    def table(heading: str, counter: Counter[str]) -> list[str]:
        lines = [f"| {heading} | share of samples |", "|---|---:|"]
        lines += [f"| `{name}` | {100 * count / total:.1f} % |" for name, count in counter.most_common(top)]
        return lines + [""]

    return "\n".join([f"{title}: {total:,} samples (active time only; time waiting in accept() is not sampled).",
                      "", *table("self time by package", by_package),
                      *table("self time by function", by_function),
                      *table("time inside QR Track functions (inclusive)", inclusive)])


def _frame(text: str) -> tuple[str, str]:
    match = FRAME.match(text)
    return (match["function"], match["file"]) if match else (text, "?")


def _package(file: str) -> str:
    if file.startswith("qrtrack/"):
        return file
    head = file.split("/", 1)[0]
    return head.removesuffix(".py")
