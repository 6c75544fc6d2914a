"""Case hosting: a scan under FastCGI (app.fcgi on mod_fcgid) and under Passenger (passenger_wsgi.py), each
against a minimal Flask redirect served the same way through the same Apache (issue 5's start-up target).

The Apache is the deployment tests' (tests/deploy/apache.py): the uploaded app at the root of one port and,
at the root of another, the probe, a minimal Flask app behind the same shipped entries and .htaccess. Both
run from one venv built from Debian's python, as a host's would be. Needs root (Apache runs the apps as
www-data) and Debian's apache2, libapache2-mod-fcgid, libapache2-mod-passenger and python3-venv.
"""
from __future__ import annotations

import http.client
import json
import secrets
import shutil
import sqlite3
import time
from pathlib import Path

from tests.deploy.apache import Apache, missing_for, write_probe
from tests.deploy.site import copy_app, deploy_venv, fetch, give_to_web_user, make_web_root, run_flask

from .context import RAISED_API_LIMIT, Bench, Row, met, ratio
from .load import PHONE_HEADERS, BenchError, LoadSettings, WrkResult, alternate, median, run_wrk

HOSTED_MODES = {"fastcgi": "app.fcgi under mod_fcgid", "passenger": "passenger_wsgi.py under Passenger"}
PROBE_PATH = "/p/probe"  # the probe's bare redirect
DESTINATION = "https://example.com/landing"
USER = "bench"
PROCESSES = 4  # FcgidMaxProcessesPerClass and PassengerMaxPoolSize in tests/deploy/apache.py
WARM_UP = LoadSettings(threads=1, connections=PROCESSES, seconds=3)
QUICK_WARM_UP = LoadSettings(threads=1, connections=PROCESSES, seconds=1)
ONE_CLIENT_SECONDS = 3
LOADED = LoadSettings(threads=2, connections=PROCESSES, seconds=3)
SCAN_COUNT_SQL = "SELECT scan_count FROM codes WHERE slug = ?"
STATIC_FILE = "static/app.css"  # served by Apache itself, through the shipped .htaccess
RESTART_SECONDS = 30
LoadRuns = dict[str, list[WrkResult]]  # each url's name: its wrk runs, one per round
LoadTimes = dict[str, list[float]]  # each url's name: milliseconds, one per round


def missing() -> list[str]:
    """What this machine lacks for the case: root, and the Debian packages (named) of every mode."""
    return sorted({what for mode in HOSTED_MODES for what in missing_for(mode)})


def measure_hosting(bench: Bench) -> list[Row]:
    lacking = missing()
    if lacking:
        raise BenchError(f"case hosting needs {', '.join(lacking)}")
    venv = deploy_venv()
    seed_root = make_web_root()
    try:
        seed = seed_site(seed_root / "site", venv, bench.secret_key)
        return [row for mode in HOSTED_MODES for row in _measure_mode(bench, mode, seed, venv)]
    finally:
        shutil.rmtree(seed_root, ignore_errors=True)


def seed_site(folder: Path, venv: Path, secret_key: str) -> Path:
    """An uploaded copy of the app with its settings and database, a user and an API key (in api-key.txt)."""
    copy_app(folder, venv)
    # TRUST_PROXY=1 makes the app place the X-Forwarded-For address phone.lua sends, as the gunicorn cases do,
    # so each scan pays for a country lookup as a real visitor's does (Apache's REMOTE_ADDR is 127.0.0.1 here).
    (folder / "TiCore" / ".env").write_text(
        f"SECRET_KEY={secret_key}\nBASE_URL=\nAPI_RATE_LIMIT={RAISED_API_LIMIT}\nTRUST_PROXY=1\n")
    give_to_web_user(folder)
    run_flask(folder, "init-db")
    run_flask(folder, "create-user", USER, "--password", secrets.token_urlsafe(16))
    key = run_flask(folder, "create-api-key", USER, "--label", "bench").strip().splitlines()[-1]
    (folder / "api-key.txt").write_text(key)
    return folder


def _measure_mode(bench: Bench, mode: str, seed: Path, venv: Path) -> list[Row]:
    apache = Apache(mode, make_web_root())
    try:
        shutil.copytree(seed, apache.root_site, symlinks=True)
        write_probe(apache.probe_root, venv)
        give_to_web_user(apache.root_site, apache.probe_root)
        apache.start()
        slug = _create_code(apache, (seed / "api-key.txt").read_text())
        urls = {"ours": apache.url("", f"p/{slug}"), "probe": apache.probe_url(PROBE_PATH)}
        for url in urls.values():  # the first requests start the processes, about a second each for the app
            run_wrk(url, QUICK_WARM_UP if bench.quick else WARM_UP)
        database = apache.root_site / "instance" / "qrtrack.db"
        before = _scan_count(database, slug)
        loads = _alternate_loads(bench, urls)
        recorded = _scan_count(database, slug) - before
        cold = alternate(bench.rounds, {name: (lambda url=url: _first_request_ms(apache, url))
                                        for name, url in urls.items()})
    except Exception as error:
        raise BenchError(f"{mode}: {error}\n--- Apache error log ---\n{apache.log_tail()}") from error
    finally:
        apache.stop()
        shutil.rmtree(apache.root, ignore_errors=True)
    return _rows(bench, mode, *loads, recorded) + [_cold_row(bench, mode, cold)]


def _alternate_loads(bench: Bench, urls: dict[str, str]) -> tuple[LoadRuns, LoadRuns, LoadSettings, LoadSettings]:
    """wrk runs against each url, alternating: first one client, then PROCESSES connections."""
    one_client = LoadSettings(threads=1, connections=1, seconds=1 if bench.quick else ONE_CLIENT_SECONDS)
    loaded = LoadSettings(threads=2, connections=PROCESSES, seconds=1) if bench.quick else LOADED
    unloaded = alternate(bench.rounds, {name: (lambda url=url: run_wrk(url, one_client)) for name, url in urls.items()})
    busy = alternate(bench.rounds, {name: (lambda url=url: run_wrk(url, loaded)) for name, url in urls.items()})
    return unloaded, busy, one_client, loaded


def _rows(bench: Bench, mode: str, unloaded: LoadRuns, busy: LoadRuns, one_client: LoadSettings,
          loaded: LoadSettings, recorded: int) -> list[Row]:
    _check_answered(mode, {**unloaded, **{f"{name} loaded": runs for name, runs in busy.items()}})
    served = HOSTED_MODES[mode]
    p50 = {name: median([run.p50_ms for run in runs]) for name, runs in unloaded.items()}
    rps = {name: median([run.rps for run in runs]) for name, runs in busy.items()}
    acknowledged = sum(run.acknowledged for runs in (unloaded["ours"], busy["ours"]) for run in runs)
    rounds = f"median of {bench.rounds}, alternating with the probe"
    lost = max(acknowledged - recorded, 0)
    return [
        Row("hosting", f"scan p50 latency, one client, {served}", f"{p50['ours']:.2f} ms",
            f"{p50['probe']:.2f} ms minimal Flask redirect", ratio(p50["ours"], p50["probe"]), "≤ 1.5×",
            met(p50["ours"] <= 1.5 * p50["probe"]),
            f"{rounds}; {one_client.describe()}; Apache on 127.0.0.1, keep-alive; both apps are warm"),
        Row("hosting", f"scans/s, {PROCESSES} connections, {served}", f"{rps['ours']:,.0f}",
            f"{rps['probe']:,.0f} minimal Flask redirects/s", ratio(rps["ours"], rps["probe"]), "report", "report",
            f"{rounds}; {loaded.describe()}; at most {PROCESSES} app processes"),
        Row("hosting", f"scans stored / redirects acknowledged, {served}", f"{recorded:,}", f"{acknowledged:,}",
            ratio(recorded, acknowledged), "none lost", met(lost == 0),
            f"{lost:,} lost; one-client and loaded runs together; requests in flight when wrk stopped are stored "
            "but not acknowledged"),
    ]


def _first_request_ms(apache: Apache, url: str) -> float:
    """Milliseconds for the first request after Apache restarted, which ended every app process: the wait of
    a visitor whose scan finds no process running (mod_fcgid and Passenger end idle ones). Timed once Apache
    serves a static file again, so Apache's own restart is not in it."""
    apache.restart()
    deadline = time.monotonic() + RESTART_SECONDS
    while not _serves_static_file(apache):
        if time.monotonic() > deadline:
            raise BenchError(f"Apache did not serve {STATIC_FILE} within {RESTART_SECONDS} s of its restart")
        time.sleep(0.05)
    started = time.perf_counter()
    response = fetch(url, headers=PHONE_HEADERS)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 302:
        raise BenchError(f"the first request to {url} answered {response.status}: {response.body[:300]!r}")
    return elapsed


def _serves_static_file(apache: Apache) -> bool:
    """Whether Apache answers again: while it restarts, a connection may be refused or reset."""
    try:
        return fetch(apache.url("", STATIC_FILE), timeout=5).status == 200
    except (OSError, http.client.HTTPException):
        return False


def _cold_row(bench: Bench, mode: str, cold: LoadTimes) -> Row:
    ours, probe = median(cold["ours"]), median(cold["probe"])
    return Row("hosting", f"first scan of a new process, {HOSTED_MODES[mode]}", f"{ours:,.0f} ms",
               f"{probe:,.0f} ms minimal Flask redirect", ratio(ours, probe), "report", "report",
               f"median of {bench.rounds}, alternating, each after Apache restarted and served a static file again; "
               "the process's whole start (lean_until_loaded answers a scan before the full app loads)")


def _create_code(apache: Apache, key: str) -> str:
    response = fetch(apache.url("", "api.php"), "POST", body=json.dumps({"destination": DESTINATION}).encode(),
                     headers={"X-Api-Key": key, "Content-Type": "application/json"})
    if response.status != 201:
        raise BenchError(f"creating a code answered {response.status}: {response.body[:300]!r}")
    slug = json.loads(response.body)["slug"]
    scan = fetch(apache.url("", f"p/{slug}"), headers=PHONE_HEADERS)
    if scan.status != 302 or scan.header("Location") != DESTINATION:
        raise BenchError(f"the scan answered {scan.status} to {scan.header('Location')}")
    return slug


def _check_answered(mode: str, runs: LoadRuns) -> None:
    failed = {name: sum(run.status_errors + run.socket_errors for run in named) for name, named in runs.items()}
    failed = {name: count for name, count in failed.items() if count}
    if failed:
        raise BenchError(f"{mode}: requests failed: {failed}")


def _scan_count(database: Path, slug: str) -> int:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(SCAN_COUNT_SQL, (slug,)).fetchone()[0]
    finally:
        connection.close()
