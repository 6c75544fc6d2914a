"""Benchmark: the analytics of a code with a million scans, against plain GROUP BYs over the scan log.

    .venv/bin/python bench/bench_analytics.py [--scans 1000000] [--days 365]

Builds a throwaway instance under bench/out/, inserts the scans with one executemany, then times
(a) the plain queries a naive report would run, (b) rolling every scan up once, (c) reports,
(d) a report right after new scans arrive (read from the log until they settle), and (e) the code's
dashboard page and the analytics overview through the Flask test client. Prints each time and its
ratio to (a), measured in the same run.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from qrtrack import accounts, analytics, codes, create_app, rollups  # noqa: E402
from qrtrack.clock import now_epoch  # noqa: E402
from qrtrack.store import scans as scan_store  # noqa: E402
from qrtrack.store.db import upgrade_schema  # noqa: E402

OUT = ROOT / "bench" / "out" / "analytics"
COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "CA", "ES", "IT", "NL", "SE", "PL", "MX", "AU", None]
DEVICES = ["iPhone", "Android", "iPad", "Android tablet", "Windows PC", "Mac", "Linux PC", "Other"]
OSES = [f"iOS 17.{n}" for n in range(6)] + [f"Android {n}" for n in (12, 13, 14, 15)] + ["Windows 10", "Mac OS X", ""]
BROWSERS = [f"Mobile Safari 17.{n}" for n in range(6)] + [f"Chrome Mobile {n}" for n in range(118, 126)] + [
    "Firefox 125", "Samsung Internet 24", "Edge 123", ""]


def make_scans(code_id: int, count: int, days: int, now: int, rng: random.Random) -> list[tuple]:
    cities = {country: [f"City {country}{n}" for n in range(12)] + [None] for country in COUNTRIES if country}
    rows = []
    for _ in range(count):
        ts = now - 60 - int(rng.random() ** 0.7 * days * 86400)
        country = rng.choice(COUNTRIES)
        is_bot = rng.random() < 0.05
        rows.append((code_id, ts, country, rng.choice(cities[country]) if country else None, rng.choice(DEVICES),
                     rng.choice(OSES), rng.choice(BROWSERS), is_bot, rng.choice(["news.example", None, None]),
                     "bench", f"{ts // 86400}-{rng.randrange(3000)}"))
    # Live scans get ids in time order; inserting them so also keeps the insert from thrashing the indexes.
    return sorted(rows, key=lambda row: row[1])


def timed(action, repeat: int = 1) -> float:
    """Median seconds of repeat runs."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def naive_report(db, code_id: int, period: analytics.Period) -> None:
    where = "code_id = :code AND ts >= :start AND ts < :end AND is_bot = 0"
    params = {"code": code_id, "start": period.start, "end": period.end}
    with db.read() as conn:
        conn.execute(text(f"SELECT ts / 86400, COUNT(*), COUNT(DISTINCT visitor) FROM scans WHERE {where} "
                          "GROUP BY ts / 86400"), params).all()
        for column in ("country", "country, city", "device", "os", "browser"):
            conn.execute(text(f"SELECT {column}, COUNT(*) FROM scans WHERE {where} GROUP BY {column}"), params).all()
        conn.execute(text(f"SELECT id FROM scans WHERE {where} ORDER BY ts DESC LIMIT 20"), params).all()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scans", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    app = create_app({"TESTING": True, "ENV_FILE": None, "INSTANCE_PATH": str(OUT)})
    db = app.extensions["qrtrack"].db
    upgrade_schema(db)
    user_id = accounts.create_user(db, username="bench", password="bench-password")
    code = codes.create_code(db, owner_id=user_id, destination="https://example.com/", label="Busy code",
                             logo_dir=app.extensions["qrtrack"].logo_dir)
    now = now_epoch()
    started = time.perf_counter()
    rows = make_scans(code.id, args.scans, args.days, now, random.Random(1))
    with db.write() as conn:
        conn.connection.driver_connection.executemany(
            "INSERT INTO scans (code_id, ts, country, city, device, os, browser, is_bot, referrer_host, user_agent, "
            "visitor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute(text("UPDATE codes SET scan_count = :n WHERE id = :id"), {"n": args.scans, "id": code.id})
    print(f"inserted {args.scans:,} scans over {args.days} days in {time.perf_counter() - started:.1f} s")

    today = analytics.today_utc(now)
    month = analytics.parse_period(None, None, today=today)
    year = analytics.parse_period(str(today.replace(year=today.year - 1)), None, today=today)
    results = {}
    for name, period in (("30 days", month), ("365 days", year)):
        results[f"naive queries, {name}"] = timed(lambda p=period: naive_report(db, code.id, p), repeat=3)
    results["rolling up every scan, once (rollups.refresh_rollups)"] = timed(lambda: rollups.refresh_rollups(db))
    for name, period in (("30 days", month), ("365 days", year)):
        results[f"report, {name}"] = timed(lambda p=period: analytics.build_report(db, period=p, code_id=code.id),
                                           repeat=5)
        results[f"report with bots, by week, {name}"] = timed(lambda p=period: analytics.build_report(
            db, period=p, code_id=code.id, include_bots=True, granularity="week"), repeat=5)
    fresh = make_scans(code.id, 1000, 0, now + 1, random.Random(2))
    with db.write() as conn:
        scan_store.insert_scans(conn, [dict(zip(("code_id", "ts", "country", "city", "device", "os", "browser",
                                                 "is_bot", "referrer_host", "user_agent", "visitor"), row, strict=True))
                                       for row in fresh])
    results["report after 1,000 new scans (in the tail)"] = timed(
        lambda: analytics.build_report(db, period=month, code_id=code.id), repeat=5)
    _time_pages(app, code.uuid, results)

    baseline = results["naive queries, 30 days"]
    width = max(map(len, results))
    for name, seconds in results.items():
        print(f"{name:<{width}}  {seconds * 1000:8.1f} ms  {seconds / baseline:6.2f}x naive (30 days)")


def _time_pages(app, uuid: str, results: dict) -> None:
    if "dashboard.code_detail" not in app.view_functions:
        return
    client = app.test_client()
    with client.session_transaction() as session:
        user = accounts.find_user(app.extensions["qrtrack"].db, "bench")
        session["_user_id"] = f"{user.id}:{user.password_hash[-12:]}"
        session["_fresh"] = True
    for path in (f"/codes/{uuid}", f"/codes/{uuid}?bots=1&granularity=week", "/analytics"):
        assert client.get(path).status_code == 200, path
        results[f"page GET {path.replace(uuid, '<uuid>')}"] = timed(lambda p=path: client.get(p), repeat=5)


if __name__ == "__main__":
    main()
