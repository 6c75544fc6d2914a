"""Case scan (GET /p/<slug> under load, unloaded, with SQLITE_SYNCHRONOUS=FULL, no lost scans) and case memory."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .context import Bench, Row, met, ratio
from .load import BenchError, LoadSettings, WrkResult, alternate, median, run_wrk, time_requests

SCAN_COUNT_SQL = "SELECT scan_count FROM codes WHERE id = ?"
UNLOADED_SECONDS = 3  # per round and server, for wrk's one connection
UNLOADED_REQUESTS = 500  # in all, per server, through http.client
UNLOADED_CLIENT_SECONDS = 60
MB = 1024 * 1024


@dataclass(frozen=True)
class ScanRun:
    wrk: WrkResult
    cpu_ms_per_request: float
    recorded: int | None  # scans the app stored during the run (None for the baseline, which stores nothing)


def measure_scan(bench: Bench) -> list[Row]:
    path = f"/p/{bench.data.scan_slug}"
    names = ("bare", "ours", "ours-full")
    for name in names:
        _warm_up(bench, name, path)
    runs = alternate(bench.rounds, {name: (lambda name=name: _scan_load(bench, name, path)) for name in names})
    bench.state["rss"] = {name: max(bench.server(name).worker_rss_bytes(), default=0) for name in ("bare", "ours")}
    unloaded = _unloaded(bench, path)
    bare, ours, full = (_medians(runs[name]) for name in names)
    connections = bench.load.connections
    capacity = 1000 * len(os.sched_getaffinity(0)) / ours["cpu"] if ours["cpu"] else 0
    return [
        Row("scan", "requests/s", f"{ours['rps']:,.0f}", f"{bare['rps']:,.0f} bare 302",
            ratio(ours["rps"], bare["rps"]), "≥ 0.5×", met(ours["rps"] >= 0.5 * bare["rps"]),
            f"median of {bench.rounds}, {bench.load.describe()}; bare ranged {_spread(runs['bare'])}, "
            f"ours {_spread(runs['ours'])}"),
        Row("scan", f"p99 latency, {connections} connections", f"{ours['p99']:.1f} ms", f"{bare['p99']:.1f} ms",
            ratio(ours["p99"], bare["p99"]), "≤ 20 ms", met(ours["p99"] <= 20),
            f"p50 {ours['p50']:.1f} ms (bare {bare['p50']:.1f} ms)"),
        Row("scan", "p50 unloaded, one client", f"{unloaded['ours']:.2f} ms", f"{unloaded['bare']:.2f} ms",
            ratio(unloaded["ours"], unloaded["bare"]), "≤ 0.5 ms", met(unloaded["ours"] <= 0.5),
            f"wrk -t 1 -c 1, {unloaded['requests']:,} requests each, " + (
                "a new TCP connection per request (sync workers close)" if bench.threads <= 1 else "keep-alive")
            + f"; through Python's http.client {unloaded['client_ours']:.2f} ms"
              f" (bare {unloaded['client_bare']:.2f} ms)"),
        Row("scan", "requests/s, SQLITE_SYNCHRONOUS=FULL", f"{full['rps']:,.0f}", f"{bare['rps']:,.0f} bare 302",
            ratio(full["rps"], bare["rps"]), "≥ 0.3×", met(full["rps"] >= 0.3 * bare["rps"]),
            f"p99 {full['p99']:.1f} ms"),
        Row("scan", "server CPU per request", f"{ours['cpu']:.3f} ms", f"{bare['cpu']:.3f} ms",
            ratio(ours["cpu"], bare["cpu"]), "report", "report",
            f"FULL {full['cpu']:.3f} ms; {capacity:,.0f} scans/s if the server had every core to itself"),
        _lost_scans_row(runs["ours"] + runs["ours-full"]),
    ]


def measure_scan_threads(bench: Bench) -> list[Row]:
    """The scan load again with gthread workers for both apps: group commit can put the scans of a
    worker's threads in one transaction, and connections are kept alive."""
    path = f"/p/{bench.data.scan_slug}"
    names = ("bare-threads", "ours-threads")
    for name in names:
        _warm_up(bench, name, path)
    runs = alternate(bench.rounds, {name: (lambda name=name: _scan_load(bench, name, path)) for name in names})
    bare, ours = (_medians(runs[name]) for name in names)
    return [
        Row("scan-threads", "requests/s, gthread workers for both", f"{ours['rps']:,.0f}",
            f"{bare['rps']:,.0f} bare 302",
            ratio(ours["rps"], bare["rps"]), "report", "report",
            f"median of {bench.rounds}; server CPU per request {ours['cpu']:.3f} ms (bare {bare['cpu']:.3f} ms); "
            f"p99 {ours['p99']:.1f} ms (bare {bare['p99']:.1f} ms)"),
        _lost_scans_row(runs["ours-threads"], case="scan-threads", runs_described="gthread workers"),
    ]


def measure_memory(bench: Bench) -> list[Row]:
    if "rss" not in bench.state:  # run alone: put the scan load through both servers first
        path = f"/p/{bench.data.scan_slug}"
        for name in ("bare", "ours"):
            _scan_load(bench, name, path)
        bench.state["rss"] = {name: max(bench.server(name).worker_rss_bytes(), default=0)
                              for name in ("bare", "ours")}
    ours, bare = bench.state["rss"]["ours"] / MB, bench.state["rss"]["bare"] / MB
    return [Row("memory", "resident memory of one worker after the scan load", f"{ours:.1f} MB",
                f"{bare:.1f} MB bare worker", ratio(ours, bare), "< 80 MB", met(ours < 80),
                "the larger of the two workers' VmRSS")]


def _warm_up(bench: Bench, name: str, path: str) -> None:
    """First requests load lazily imported code and fill caches; they are not what a burst of scans meets."""
    time_requests(bench.server(name).port, path, count=20, expect=302, seconds=30)


def _scan_load(bench: Bench, name: str, path: str) -> ScanRun:
    server = bench.server(name)
    counts = name.startswith("ours")
    before = bench.count(SCAN_COUNT_SQL, bench.data.scan_code_id) if counts else 0
    cpu_before = server.cpu_seconds()
    result = run_wrk(server.url(path), bench.load)
    cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / max(result.requests, 1)
    recorded = bench.settled_count(SCAN_COUNT_SQL, bench.data.scan_code_id) - before if counts else None
    return ScanRun(wrk=result, cpu_ms_per_request=cpu_ms, recorded=recorded)


def _medians(runs: list[ScanRun]) -> dict[str, float]:
    return {"rps": median([run.wrk.rps for run in runs]), "p99": median([run.wrk.p99_ms for run in runs]),
            "p50": median([run.wrk.p50_ms for run in runs]), "cpu": median([run.cpu_ms_per_request for run in runs])}


def _spread(runs: list[ScanRun]) -> str:
    values = [run.wrk.rps for run in runs]
    return f"{min(values):,.0f}–{max(values):,.0f}"


def _unloaded(bench: Bench, path: str) -> dict[str, float]:
    """One connection sending requests one after another, alternating rounds between the bare server and ours.

    The figure is wrk's, as under load: a C client whose own time per request is a few microseconds. The same
    requests through Python's http.client are reported beside it; that client spends about 0.3 ms of its own
    on each request, the same for both servers, which hid most of the difference between them.
    """
    rounds = max(bench.rounds, 1)
    one_client = LoadSettings(threads=1, connections=1, seconds=1 if bench.quick else UNLOADED_SECONDS)
    runs = alternate(rounds, {name: (lambda name=name: run_wrk(bench.server(name).url(path), one_client))
                              for name in ("bare", "ours")})
    failed = [name for name, named_runs in runs.items() if any(run.status_errors or run.socket_errors
                                                                   for run in named_runs)]
    if failed:
        raise BenchError(f"GET {path} failed under one client on: {', '.join(failed)}")
    count = 50 if bench.quick else UNLOADED_REQUESTS
    samples = alternate(rounds, {
        name: (lambda name=name: time_requests(bench.server(name).port, path, count=max(count // rounds, 1),
                                               expect=302, seconds=UNLOADED_CLIENT_SECONDS / rounds))
        for name in ("bare", "ours")})
    client = {name: median([sample for part in parts for sample in part]) for name, parts in samples.items()}
    return {"bare": median([run.p50_ms for run in runs["bare"]]), "ours": median([run.p50_ms for run in runs["ours"]]),
            "requests": min(sum(run.requests for run in runs[name]) for name in runs),
            "client_bare": client["bare"], "client_ours": client["ours"]}


def _lost_scans_row(runs: list[ScanRun], *, case: str = "scan",
                    runs_described: str = "NORMAL and FULL runs together") -> Row:
    """Every 2xx/3xx wrk counted promised a stored scan. The app may have stored a few more: requests still
    in flight when wrk stopped, whose responses wrk never read."""
    acknowledged = sum(run.wrk.acknowledged for run in runs)
    recorded = sum(run.recorded or 0 for run in runs)
    errors = sum(run.wrk.status_errors + run.wrk.socket_errors for run in runs)
    lost = max(acknowledged - recorded, 0)
    return Row(case, "scans stored / redirects acknowledged", f"{recorded:,}", f"{acknowledged:,}",
               ratio(recorded, acknowledged), "none lost", met(lost == 0),
               f"{lost:,} lost; {max(recorded - acknowledged, 0):,} stored beyond acknowledged (in flight when wrk "
               f"stopped); {errors:,} non-2xx/3xx or socket errors; {runs_described}")
