#!/usr/bin/env python3
"""QR Track's benchmarks (issue 6): the app measured through HTTP, against baselines measured in the same run.

    .venv/bin/python bench/run.py [case ...] [--quick] [--profile] [--rounds N] [--threads N] [--keep]

Cases, in the order they run (default: all):
  scan        GET /p/<slug> vs a bare WSGI 302: req/s, p99, unloaded p50, SQLITE_SYNCHRONOUS=FULL, no lost scans
  scan-threads  the scan's req/s again with gthread workers (4 threads) for both, for comparison
  memory      resident memory of one worker after the scan load, vs a bare worker
  image-warm  GET /img/<slug>.png of a cached image vs the same bytes as a static file; 304 on If-None-Match
  image-cold  render_png with a logo, in-process, vs qrcode.make
  api-list    GET /api.php for a user with 10,000 codes vs json.dumps of the same payload, in-process
  api-create  sustained POST /api.php creations/s, rate limit raised (reported, no target)
  analytics   API scan log (and the dashboard page, when it exists) of a code with 1,000,000 scans vs COUNT(*)
  cgi         app.cgi and python app.py as real CGI processes vs a minimal Flask CGI app, and a
              standard-library CGI scan (bench/baseline_cgi_scan.py) vs python -c pass as the floor, all on a
              venv of Debian's python3 as the README's CGI guide has hosts make (app.cgi also on this python)
  devices     what each speed device of the CGI scan path and the API list buys: each taken out of a copy of
              the project in turn (bench/devices_case.py), against the project as shipped
  hosting     a scan through a private Apache on 127.0.0.1 under FastCGI (app.fcgi, mod_fcgid) and Passenger
              (passenger_wsgi.py) vs a minimal Flask redirect behind the same entries and Apache; needs root
              and Debian's apache2, libapache2-mod-fcgid, libapache2-mod-passenger and python3-venv

Every run builds its data in a fresh temporary instance folder (the full data set is cached between runs),
starts gunicorn on 127.0.0.1 with the same settings for QR Track and the baselines (the worker type and
threads that gunicorn.conf.py ships, unless --threads says otherwise; --threads 1 means sync workers),
alternates baseline and subject (3 rounds; 1 with --quick) and takes medians. --quick uses tiny data and
1 s loads, to keep the benchmark from rotting in the test suite; it never writes RESULTS.md. A full run of
every case with the shipped threads and without errors rewrites the generated block of bench/RESULTS.md.
--profile adds a py-spy profile of one worker under the scan load. Needs wrk (`apt-get install -y wrk`)
for scan, scan-threads, memory, image-warm, api-create and hosting. With valgrind installed (`apt-get install
-y valgrind`), case cgi also counts a CGI scan's instructions, a figure the machine's load does not move.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Run as a script, Python puts bench/ itself first on the path; the project root holds `bench` and `qrtrack`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import devices_case, hosting_cases, http_cases, local_cases, profile, report, scan_cases  # noqa: E402
from bench.context import FULL_LOAD, QUICK_LOAD, RAISED_API_LIMIT, Bench, Row  # noqa: E402
from bench.data import app_settings, clean_environ, new_run_dir, prepare_dataset, remove_run_dir, secret_key  # noqa: E402
from bench.load import INSTALL_WRK, PHONE_ADDRESS, PHONE_USER_AGENT, LoadSettings, has_wrk  # noqa: E402
from bench.servers import PROJECT_CONFIG, Server, gunicorn_settings, start_all  # noqa: E402

FULL_ROUNDS = 3
MAX_ROUNDS = 15
MAX_THREADS = 64
SHIPPED_THREADS = int(runpy.run_path(str(PROJECT_CONFIG)).get("threads", 1))  # what users run, so what we measure
COMPARED_THREADS = 4  # case scan-threads: gthread workers with this many threads


@dataclass(frozen=True)
class Case:
    measure: Callable[[Bench], list[Row]]
    servers: tuple[str, ...]
    needs_wrk: bool


CASES = {
    "scan": Case(scan_cases.measure_scan, ("bare", "ours", "ours-full"), needs_wrk=True),
    "scan-threads": Case(scan_cases.measure_scan_threads, ("bare-threads", "ours-threads"), needs_wrk=True),
    "memory": Case(scan_cases.measure_memory, ("bare", "ours"), needs_wrk=True),
    "image-warm": Case(http_cases.measure_image_warm, ("bare", "ours"), needs_wrk=True),
    "image-cold": Case(local_cases.measure_image_cold, (), needs_wrk=False),
    "api-list": Case(http_cases.measure_api_list, ("ours",), needs_wrk=False),
    "api-create": Case(http_cases.measure_api_create, ("bare", "ours"), needs_wrk=True),
    "analytics": Case(http_cases.measure_analytics, ("ours",), needs_wrk=False),
    "cgi": Case(local_cases.measure_cgi, (), needs_wrk=False),
    "devices": Case(devices_case.measure_devices, (), needs_wrk=False),
    "hosting": Case(hosting_cases.measure_hosting, (), needs_wrk=True),
}


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", metavar="case", help=f"any of: {', '.join(CASES)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 s loads, one round; no RESULTS.md")
    parser.add_argument("--profile", action="store_true", help="py-spy profile of one worker under the scan load")
    parser.add_argument("--rounds", type=int, default=FULL_ROUNDS,
                        help=f"alternating rounds per comparison (default {FULL_ROUNDS}; --quick: 1)")
    parser.add_argument("--threads", type=int, default=SHIPPED_THREADS,
                        help="gthread workers with this many threads each, for every server alike; 1: sync workers "
                             f"(default {SHIPPED_THREADS}, as gunicorn.conf.py ships)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder (instance, logs)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    if not 1 <= args.threads <= MAX_THREADS:
        parser.error(f"--threads must be between 1 and {MAX_THREADS}")
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}; choose from {', '.join(CASES)}")
    return args


def make_servers(bench: Bench, names: set[str]) -> dict[str, Server]:
    environ = clean_environ()
    ours = {**environ, **app_settings(bench.data.instance, secret_key=bench.secret_key,
                                      API_RATE_LIMIT=RAISED_API_LIMIT, TRUST_PROXY="1")}
    environments = {
        "bare": ("bench.baseline_apps:bare_app", {**environ, "BENCH_STATIC_FILE": str(bench.static_image)}),
        "ours": ("app:app", ours),
        "ours-full": ("app:app", {**ours, "SQLITE_SYNCHRONOUS": "FULL"}),
    }
    environments.update({f"{name}-threads": environments[name] for name in ("bare", "ours")})
    return {name: Server(name, target, env, log_path=bench.run_dir / f"{name}.log",
                         threads=COMPARED_THREADS if name.endswith("-threads") else bench.threads)
            for name, (target, env) in environments.items() if name in names}


def run_cases(bench: Bench, selected: list[str]) -> list[Row]:
    rows: list[Row] = []
    for name in selected:
        say(f"case {name}")
        started = time.monotonic()
        try:
            rows += CASES[name].measure(bench)
        except Exception as error:  # one broken case must not hide the others' numbers; its row says what broke
            traceback.print_exc()
            rows.append(Row(name, "error", "", "", None, "", "error", f"{type(error).__name__}: {error}"))
        say(f"case {name} took {time.monotonic() - started:.1f} s")
    return rows


def measure(args: argparse.Namespace, selected: list[str], run_dir: Path, load: LoadSettings,
            rounds: int) -> tuple[list[Row], str]:
    """The table's rows and the profile (empty unless asked for); every server is stopped before returning."""
    say(f"preparing data in {run_dir}")
    started = time.monotonic()
    data = prepare_dataset(run_dir, quick=args.quick, say=say)
    say(f"data ready in {time.monotonic() - started:.1f} s")
    bench = Bench(quick=args.quick, run_dir=run_dir, data=data, load=load, rounds=rounds, servers={},
                  secret_key=secret_key(), threads=args.threads)
    needed = {server for name in selected for server in CASES[name].servers} | ({"ours"} if args.profile else set())
    bench.servers.update(make_servers(bench, needed))
    try:
        say(f"starting {', '.join(sorted(needed)) or 'no servers'}")
        started = time.monotonic()
        start_all(list(bench.servers.values()))
        say(f"servers ready in {time.monotonic() - started:.1f} s")
        rows = run_cases(bench, selected)
        if not args.profile:
            return rows, ""
        say("profiling one worker under the scan load")
        return rows, profile.profile_scan(bench)
    finally:
        for server in bench.servers.values():
            server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [name for name in CASES if not args.cases or name in args.cases]
    if not has_wrk() and (args.profile or any(CASES[name].needs_wrk for name in selected)):
        say(INSTALL_WRK)
        return 2
    load, rounds = (QUICK_LOAD, 1) if args.quick else (FULL_LOAD, args.rounds)
    load_average = os.getloadavg()
    run_dir = new_run_dir()
    try:
        rows, profile_text = measure(args, selected, run_dir, load, rounds)
    finally:
        if args.keep:
            say(f"kept {run_dir}")
        else:
            remove_run_dir(run_dir)
    print(report.table(rows))
    if profile_text:
        print("\n" + profile_text)
    failed = any(row.result == "error" for row in rows)
    if not args.quick and not args.cases and args.threads == SHIPPED_THREADS and not failed:
        settings = {**run_settings(load, rounds, args.threads),
                    "Machine load": _load_averages(load_average, os.getloadavg())}
        report.write_results(rows, settings, extra=_profile_section(profile_text))
        say(f"wrote {report.RESULTS_PATH}")
    return 1 if failed else 0


def run_settings(load: LoadSettings, rounds: int, threads: int) -> dict[str, str]:
    return {
        "Server": f"`{gunicorn_settings(threads)}` for QR Track (`app:app`) and the baseline "
                  "(`bench.baseline_apps:bare_app`) alike; wrk runs on the same machine",
        "QR Track settings": f"defaults in a fresh instance folder, `API_RATE_LIMIT={RAISED_API_LIMIT}`, "
                             "`TRUST_PROXY=1` (as behind nginx); the FULL row adds `SQLITE_SYNCHRONOUS=FULL`",
        "Load": f"`{load.describe()}` with phone.lua (User-Agent: {PHONE_USER_AGENT}; X-Forwarded-For: "
                f"{PHONE_ADDRESS}, so every scan is placed in a country); baseline and subject "
                f"alternate, {rounds} rounds, medians",
        "Data": "10,000 codes for one user, one of them with 1,000,000 scans over 90 days",
    }


def _load_averages(start: tuple[float, ...], end: tuple[float, ...]) -> str:
    return (f"1-minute load average {start[0]:.1f} at the start, {end[0]:.1f} at the end; other work on this "
            "machine shares its CPUs, which is why every figure is read against a baseline from the same run")


def _profile_section(text: str) -> str:
    return f"### Profile of the scan path\n\n{text}\n" if text else ""


if __name__ == "__main__":
    sys.exit(main())
