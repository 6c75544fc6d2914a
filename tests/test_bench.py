"""bench/run.py --quick runs every case and prints its results table, so the benchmark cannot rot unnoticed.

Only the shape of the table is checked (a row per case, a numeric ratio), never a timing: these
machines are shared and noisy, and bench/RESULTS.md is where the numbers live.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from bench import data as bench_data
from bench import hosting_cases
from bench import run as bench_run
from bench.load import has_wrk

from .conftest import PROJECT_ROOT, env_without_settings, require
from .deploy.site import deploy_venv

pytestmark = pytest.mark.server

RUN = PROJECT_ROOT / "bench" / "run.py"
CASES = tuple(bench_run.CASES)
NEEDS_WRK = {name for name, case in bench_run.CASES.items() if case.needs_wrk}
COLUMNS = ("case", "measure", "ours", "baseline", "ratio", "target", "result", "notes")
RATIO = re.compile(r"\d+(\.\d+)?×")
# A bound against a hung run: --quick takes about 45 s here alone, 19 of them case hosting, and up to 85 s
# beside the other pytest-xdist workers on two cores.
RUN_TIMEOUT_SECONDS = 300


def missing_for_case(case: str) -> list[str]:
    """What this machine lacks to run case; manage.py test installs all of it."""
    lacking = [] if case not in NEEDS_WRK or has_wrk() else ["wrk (apt-get install -y wrk)"]
    return lacking + (hosting_cases.missing() if case == "hosting" else [])


@pytest.fixture(scope="module")
def quick_run() -> subprocess.CompletedProcess:
    cases = [case for case in CASES if not missing_for_case(case)]  # each case's test reports the others
    if "hosting" in cases:
        deploy_venv()  # built once per requirements.txt and shared with the deploy tests; not part of the run
    return subprocess.run([sys.executable, str(RUN), "--quick", *cases], cwd=PROJECT_ROOT,
                          env=env_without_settings(), capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def table_rows(quick_run: subprocess.CompletedProcess) -> list[dict[str, str]]:
    lines = [line for line in quick_run.stdout.splitlines() if line.startswith("|")]
    assert lines, f"no results table; exit {quick_run.returncode}\n{quick_run.stderr[-3000:]}"
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert tuple(header) == COLUMNS
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]


def test_quick_run_finishes_without_errors(quick_run, table_rows):
    errors = [f"{row['case']}: {row['notes']}" for row in table_rows if row["result"] == "error"]
    assert not errors, "\n".join(errors)
    assert quick_run.returncode == 0, quick_run.stderr[-3000:]


@pytest.mark.parametrize("case", CASES)
def test_each_case_reports_a_ratio_against_its_baseline(case, table_rows):
    require(missing_for_case(case), f"run bench case {case!r}")
    rows = [row for row in table_rows if row["case"] == case]
    assert rows, f"no row for {case}"
    assert any(RATIO.fullmatch(row["ratio"]) for row in rows), rows
    assert all(row["result"] in {"met", "missed", "report", "n/a"} for row in rows), rows



def test_building_the_data_set_leaves_another_runs_build_alone_and_keeps_the_first_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_data, "CACHE_ROOT", tmp_path)
    older_schema = tmp_path / "0123456789abcdef"
    cut_short = tmp_path / f"{bench_data.BUILDING_PREFIX}cut-short"
    in_progress = tmp_path / f"{bench_data.BUILDING_PREFIX}in-progress"
    for folder in (older_schema, cut_short, in_progress):
        folder.mkdir()
    hours_ago = time.time() - (bench_data.BUILD_HOURS_AT_MOST + 1) * 3600
    os.utime(cut_short, (hours_ago, hours_ago))

    cached = tmp_path / "fedcba9876543210"
    bench_data._build_cache(cached, bench_data.QUICK_SIZE)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([cached.name, in_progress.name])
    first = (cached / "dataset.json").read_text()

    bench_data._build_cache(cached, bench_data.QUICK_SIZE)  # as a run that finished second would
    assert (cached / "dataset.json").read_text() == first
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([cached.name, in_progress.name])
