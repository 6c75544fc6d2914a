"""Cases measured through HTTP besides the scan: image-warm, api-list, api-create, analytics (API and dashboard)."""
from __future__ import annotations

import http.client
import json
import re
import sqlite3
import time
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from .context import Bench, Row, met, ratio
from .data import CREATOR
from .load import BenchError, Response, alternate, fetch, median, run_wrk, time_call, time_requests
from .servers import WORKER_TIMEOUT_SECONDS

CSRF_FIELD = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"')
CREATOR_CODES_SQL = "SELECT COUNT(*) FROM codes JOIN users ON users.id = codes.owner_id WHERE users.username = ?"
NOT_THERE = {404, 405, 500, 501}
CATCH_UP_SECONDS = 900
CATCH_UP_READS = 50
ROLLUP_BEHIND_SQL = ("SELECT COUNT(*) FROM scans WHERE ts < ? AND id > "
                     "(SELECT COALESCE(MAX(last_scan_id), 0) FROM rollup_watermarks)")


def measure_image_warm(bench: Bench) -> list[Row]:
    ours, bare = bench.server("ours"), bench.server("bare")
    path = f"/img/{bench.data.image_slug}.png"
    first = _expect(fetch(ours.port, path), 200, path)  # renders and caches the image
    bench.static_image.write_bytes(first.body)
    time_requests(ours.port, path, count=20, expect=200, seconds=30)
    time_requests(bare.port, path, count=20, expect=200, seconds=30)
    runs = alternate(bench.rounds, {"bare": lambda: run_wrk(bare.url(path), bench.load),
                                    "ours": lambda: run_wrk(ours.url(path), bench.load)})
    ours_rps, bare_rps = (median([run.rps for run in runs[name]]) for name in ("ours", "bare"))
    etag = first.headers.get("ETag", "")
    revalidated = fetch(ours.port, path, headers={"If-None-Match": etag}).status
    bare_etag = fetch(bare.port, path).headers.get("ETag", "")
    bare_revalidated = fetch(bare.port, path, headers={"If-None-Match": bare_etag}).status
    return [
        Row("image-warm", "requests/s, cached PNG", f"{ours_rps:,.0f}", f"{bare_rps:,.0f} static file",
            ratio(ours_rps, bare_rps), "≥ 0.8×", met(ours_rps >= 0.8 * bare_rps),
            f"{len(first.body):,} bytes; p99 {median([run.p99_ms for run in runs['ours']]):.1f} ms"),
        Row("image-warm", "If-None-Match with the ETag", str(revalidated), str(bare_revalidated), None, "304",
            met(revalidated == 304), f"ETag {etag or '(none)'}"),
    ]


def measure_api_list(bench: Bench) -> list[Row]:
    port, headers = bench.server("ours").port, {"X-Api-Key": bench.data.api_key}
    payload = json.loads(_expect(fetch(port, "/api.php", headers=headers), 200, "/api.php").body)
    rounds = 2 if bench.quick else 7
    samples = alternate(rounds, {
        "ours": lambda: time_requests(port, "/api.php", count=1, expect=200, seconds=60, headers=headers)[0],
        "dumps": lambda: time_call(lambda: json.dumps(payload))})
    ours, dumps = median(samples["ours"]), median(samples["dumps"])
    listed = len(payload.get("codes", []))
    return [Row("api-list", f"GET /api.php, {bench.data.codes:,} codes", f"{ours:.1f} ms",
                f"{dumps:.1f} ms json.dumps", ratio(ours, dumps), "≤ 2×", met(ours <= 2 * dumps),
                f"{listed:,} codes in the response; median of {rounds}, one client")]


def measure_api_create(bench: Bench) -> list[Row]:
    ours, bare = bench.server("ours"), bench.server("bare")
    body = json.dumps({"destination": "https://example.com/spring-campaign", "label": "made by bench"})
    headers = {"X-Api-Key": bench.data.creator_key, "Content-Type": "application/json"}
    _expect(fetch(ours.port, "/api.php", method="POST", headers=headers, body=body.encode()), 201, "POST /api.php")
    before = bench.count(CREATOR_CODES_SQL, CREATOR)
    runs = alternate(bench.rounds, {
        "bare": lambda: run_wrk(bare.url("/api.php"), bench.load, method="POST", body=body, headers=headers),
        "ours": lambda: run_wrk(ours.url("/api.php"), bench.load, method="POST", body=body, headers=headers)})
    created = bench.settled_count(CREATOR_CODES_SQL, CREATOR) - before
    ours_rps, bare_rps = (median([run.rps for run in runs[name]]) for name in ("ours", "bare"))
    failed = sum(run.status_errors + run.socket_errors for run in runs["ours"])
    return [Row("api-create", "creations/s, POST /api.php", f"{ours_rps:,.0f}", f"{bare_rps:,.0f} bare 201",
                ratio(ours_rps, bare_rps), "report", "report",
                f"{created:,} codes created, {sum(run.acknowledged for run in runs['ours']):,} acknowledged, "
                f"{failed:,} failed; API_RATE_LIMIT raised; p99 {median([r.p99_ms for r in runs['ours']]):.1f} ms")]


def measure_analytics(bench: Bench) -> list[Row]:
    port = bench.server("ours").port
    rounds = 2 if bench.quick else 5
    counter = _count_scans_timer(bench)
    rows = [_analytics_api_row(bench, port, rounds, counter)]
    try:
        rows += _dashboard_rows(bench, port, rounds, counter)
    except (BenchError, OSError) as error:  # the API row above stands on its own
        rows.append(Row("analytics", "dashboard code page", "", "", None, "< 1 s", "error",
                        f"{type(error).__name__}: {error}"))
    return rows


def _analytics_api_row(bench: Bench, port: int, rounds: int, counter) -> Row:
    path, headers = f"/api.php?uuid={bench.data.big_uuid}", {"X-Api-Key": bench.data.api_key}
    first = time_requests(port, path, count=1, expect=200, seconds=60, headers=headers)[0]
    payload = json.loads(fetch(port, path, headers=headers).body)
    samples = alternate(rounds, {
        "ours": lambda: time_requests(port, path, count=1, expect=200, seconds=60, headers=headers)[0],
        "count": counter})
    ours, count = median(samples["ours"]), median(samples["count"])
    return Row("analytics", f"API scan log, {bench.data.big_scans:,} scans", f"{ours:.1f} ms",
               f"{count:.1f} ms COUNT(*)", ratio(ours, count), "< 1 s", met(ours < 1000),
               f"first read {first:.0f} ms; scans_total {payload.get('scans_total')}; median of {rounds}")


def _dashboard_rows(bench: Bench, port: int, rounds: int, counter) -> list[Row]:
    """The code's dashboard page. The data set put its scans in behind the app's back, so the first reads
    roll them up (the app may spread that over several reports): those are reported on their own, and the
    reads once the rollups are current are held to the target."""
    path = f"/codes/{bench.data.big_uuid}"
    measure = f"dashboard code page, {bench.data.big_scans:,} scans"
    cookie = dashboard_login(port, bench.data.username, bench.data.password)
    status, catch_up_seconds, reads = _catch_up(bench, port, path, {"Cookie": cookie})
    if status in NOT_THERE:
        return [Row("analytics", measure, "not available", "", None, "< 1 s", "n/a",
                    f"GET /codes/<uuid> answers {status}: not built yet")]
    if status != 200:
        raise BenchError(f"GET {path} answered {status}")
    samples = alternate(rounds, {
        "ours": lambda: time_requests(port, path, count=1, expect=200, seconds=60, headers={"Cookie": cookie})[0],
        "count": counter})
    ours, count = median(samples["ours"]), median(samples["count"])
    behind = _scans_not_rolled_up(bench)
    return [
        Row("analytics", f"{measure}, first reads (roll-up catch-up)", f"{catch_up_seconds:,.1f} s",
            f"{count:.1f} ms COUNT(*)", ratio(catch_up_seconds * 1000, count), "report", "report",
            f"{reads} read(s) until the rollups were current ({'unknown' if behind is None else behind} settled "
            f"scans behind after); a worker is killed after {WORKER_TIMEOUT_SECONDS} s"),
        Row("analytics", measure, f"{ours:.1f} ms", f"{count:.1f} ms COUNT(*)", ratio(ours, count), "< 1 s",
            met(ours < 1000), f"median of {rounds} reads after the catch-up, logged in"),
    ]


def _catch_up(bench: Bench, port: int, path: str, headers: dict[str, str]) -> tuple[int, float, int]:
    """(status, seconds, reads): read the page until the rollups hold every settled scan, within
    CATCH_UP_READS reads and CATCH_UP_SECONDS."""
    started = time.monotonic()
    reads = 0
    while True:
        status, attempts = _read_patiently(port, path, headers, deadline=started + CATCH_UP_SECONDS)
        reads += attempts
        behind = _scans_not_rolled_up(bench)
        if status != 200 or not behind or reads >= CATCH_UP_READS or time.monotonic() - started > CATCH_UP_SECONDS:
            return status, time.monotonic() - started, reads


def _read_patiently(port: int, path: str, headers: dict[str, str], *, deadline: float) -> tuple[int, int]:
    """(status, attempts) of one GET, repeated while the server drops the connection (a worker killed on its
    timeout: the next request goes on from the last batch the app committed), until the deadline."""
    for attempt in range(1, CATCH_UP_READS + 1):
        try:
            return fetch(port, path, headers=headers, timeout=max(deadline - time.monotonic(), 1)).status, attempt
        except (ConnectionError, http.client.HTTPException, TimeoutError) as error:
            if time.monotonic() > deadline:
                raise BenchError(f"GET {path} did not answer by the deadline: {error}") from error
    raise BenchError(f"GET {path} failed {CATCH_UP_READS} times in a row")


def _scans_not_rolled_up(bench: Bench) -> int | None:
    """Scans older than a minute (settled, by any measure the app may use) past the rollup watermark; None when
    the database has no watermark table (analytics without rollups)."""
    try:
        return bench.count(ROLLUP_BEHIND_SQL, int(time.time()) - 60)
    except sqlite3.OperationalError:
        return None


def _count_scans_timer(bench: Bench):
    """The baseline: milliseconds for a plain SELECT COUNT(*) of the code's scans, in-process."""
    def measure() -> float:
        connection = sqlite3.connect(f"file:{bench.data.database}?mode=ro", uri=True)
        try:
            return time_call(lambda: connection.execute("SELECT COUNT(*) FROM scans WHERE code_id = ?",
                                                        (bench.data.big_code_id,)).fetchone())
        finally:
            connection.close()
    return measure


def dashboard_login(port: int, username: str, password: str) -> str:
    """Log in through the /login form as a browser does; the Cookie header value of the signed-in session."""
    cookies: dict[str, str] = {}
    page = fetch(port, "/login")
    _keep_cookies(cookies, page)
    token = CSRF_FIELD.search(page.body.decode("utf-8", "replace"))
    if page.status != 200 or token is None:
        raise BenchError(f"no login form (GET /login answered {page.status})")
    form = urlencode({"username": username, "password": password, "csrf_token": token.group(1)}).encode()
    answer = fetch(port, "/login", method="POST", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": _cookie_header(cookies)})
    if answer.status not in (302, 303):
        raise BenchError(f"logging in failed (POST /login answered {answer.status})")
    _keep_cookies(cookies, answer)
    return _cookie_header(cookies)


def _keep_cookies(cookies: dict[str, str], response: Response) -> None:
    for header in response.headers.get_all("Set-Cookie") or []:
        cookies.update({name: morsel.value for name, morsel in SimpleCookie(header).items()})


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def _expect(response: Response, status: int, what: str) -> Response:
    if response.status != status:
        raise BenchError(f"{what} answered {response.status}, expected {status}: {response.body[:200]!r}")
    return response
