"""Analytics and its rollups: every figure equals the plain query over the scan log, rolled up or not; CSV."""
from __future__ import annotations

import csv
import io
import random
from collections import Counter
from datetime import date, timedelta

import pytest
from sqlalchemy import bindparam, text

from qrtrack import analytics, codes, rollups
from qrtrack.analytics import Period
from qrtrack.errors import ValidationError
from qrtrack.store import analytics as analytics_store
from qrtrack.store import scans as scan_store
from qrtrack.store.db import Database, upgrade_schema

from .conftest import database_at, gen_code, gen_user

pytestmark = pytest.mark.postgresql

DAY = 86400
# 2026-04-15 12:00:00 UTC, a Wednesday
NOW = 1776254400
TODAY = date(2026, 4, 15)
COUNTRIES = ["DE", "FR", "US", None]
CITIES = {"DE": ["Berlin", None], "FR": ["Paris", None], "US": ["Paris", "Austin"], None: [None]}
DEVICES = ["iPhone", "Android", "Windows PC", "Mac"]
OSES = ["iOS 17.4", "Android 14", "Windows 10", ""]
BROWSERS = ["Mobile Safari 17.4", "Chrome Mobile 124", "Edge 123", ""]


def scan(code_id: int, ts: int, *, visitor: str = "v", is_bot: bool = False, country: str | None = None,
         city: str | None = None, device: str = "iPhone", os: str = "iOS 17.4", browser: str = "Mobile Safari 17.4",
         referrer_host: str | None = None) -> dict:
    return {"code_id": code_id, "ts": ts, "country": country, "city": city, "device": device, "os": os,
            "browser": browser, "is_bot": is_bot, "referrer_host": referrer_host, "user_agent": "", "visitor": visitor}


def gen_scans(db: Database, rows: list[dict]) -> None:
    with db.write() as conn:
        scan_store.insert_scans(conn, rows)


def random_scans(code_id: int, count: int, *, rng: random.Random, first_ts: int, last_ts: int) -> list[dict]:
    """Scans spread over [first_ts, last_ts]; visitors repeat within a day, and some visitor is a bot and a human."""
    rows = []
    for _ in range(count):
        country = rng.choice(COUNTRIES)
        rows.append(scan(code_id, rng.randint(first_ts, last_ts), visitor=f"v{rng.randrange(40)}",
                         is_bot=rng.random() < 0.15, country=country, city=rng.choice(CITIES[country]),
                         device=rng.choice(DEVICES), os=rng.choice(OSES), browser=rng.choice(BROWSERS)))
    return rows


def naive(db: Database, code_ids: list[int], period: Period, *, include_bots: bool) -> dict:
    """The figures by plain GROUP BYs over the scan log: the definition the rollups must match."""
    in_period = "code_id IN :ids AND ts >= :start AND ts < :end"
    where = in_period + ("" if include_bots else " AND NOT is_bot")

    def query(sql: str) -> list:
        statement = text(sql).bindparams(bindparam("ids", expanding=True))
        with db.read() as conn:
            return list(conn.execute(statement, {"ids": code_ids, "start": period.start, "end": period.end}))

    by_day = {row[0]: (row[1], row[2]) for row in query(
        f"SELECT ts / 86400, COUNT(*), COUNT(DISTINCT code_id || ':' || visitor) FROM scans WHERE {where} "
        "GROUP BY ts / 86400")}
    breakdowns = {"country": {(row[0], row[0]): row[1] for row in query(
        f"SELECT COALESCE(country, ''), COUNT(*) FROM scans WHERE {where} GROUP BY 1")}}
    cities: Counter = Counter()
    for country, city, count in query(
            f"SELECT COALESCE(country, ''), COALESCE(city, ''), COUNT(*) FROM scans WHERE {where} GROUP BY 1, 2"):
        cities[(city, country if city else "")] += count
    breakdowns["city"] = dict(cities)
    for dimension in ("device", "os", "browser"):
        breakdowns[dimension] = {(row[0], ""): row[1] for row in query(
            f"SELECT {dimension}, COUNT(*) FROM scans WHERE {where} GROUP BY 1")}
    (bots,), = query(f"SELECT COUNT(*) FROM scans WHERE {in_period} AND is_bot")
    return {"scans": sum(s for s, _ in by_day.values()), "unique_scans": sum(u for _, u in by_day.values()),
            "bot_scans": bots, "by_day": by_day, "breakdowns": breakdowns}


def figures(report: analytics.Report) -> dict:
    """The report in the naive shape (day granularity; breakdowns must fit in the top lines)."""
    assert not any(share.is_other for shares in report.breakdowns.values() for share in shares)
    first_day = report.period.first_day
    return {
        "scans": report.scans, "unique_scans": report.unique_scans, "bot_scans": report.bot_scans,
        "by_day": {first_day + index: (bucket.scans, bucket.unique_scans) for index, bucket in enumerate(report.series)
                   if bucket.scans},
        "breakdowns": {dimension: {(share.value, share.country): share.scans for share in shares}
                       for dimension, shares in report.breakdowns.items()},
    }


def assert_matches_naive(db: Database, *, period: Period, code_ids: list[int], code_id: int | None = None,
                         owner_id: int | None = None, now: int = NOW) -> None:
    for include_bots in (False, True):
        report = analytics.build_report(db, period=period, code_id=code_id, owner_id=owner_id,
                                        include_bots=include_bots, now=now)
        assert figures(report) == naive(db, code_ids, period, include_bots=include_bots), include_bots


def last_days(count: int) -> Period:
    return Period(TODAY - timedelta(days=count - 1), TODAY)


@pytest.fixture
def code(db, alice):
    return gen_code(db, alice)


def test_every_figure_matches_the_plain_queries_with_and_without_bots(db, alice, code):
    rng = random.Random(4)
    other = gen_code(db, alice)
    gen_scans(db, random_scans(code.id, 1500, rng=rng, first_ts=NOW - 50 * DAY, last_ts=NOW - 60))
    gen_scans(db, random_scans(other.id, 500, rng=rng, first_ts=NOW - 50 * DAY, last_ts=NOW - 60))
    for period in (last_days(30), last_days(7), Period(TODAY - timedelta(days=49), TODAY - timedelta(days=20)),
                   Period(TODAY, TODAY)):
        assert_matches_naive(db, period=period, code_ids=[code.id], code_id=code.id)
        assert_matches_naive(db, period=period, code_ids=[code.id, other.id], owner_id=alice)


def test_figures_stay_exact_as_more_scans_arrive_before_and_after_they_settle(db, alice, code):
    rng = random.Random(5)
    gen_scans(db, random_scans(code.id, 800, rng=rng, first_ts=NOW - 20 * DAY, last_ts=NOW - DAY))
    assert_matches_naive(db, period=last_days(30), code_ids=[code.id], code_id=code.id)
    rolled_up = store_watermark(db)
    # Late rows for days already rolled up land past the watermark; today's fresh scans stay in the tail.
    gen_scans(db, random_scans(code.id, 200, rng=rng, first_ts=NOW - 20 * DAY, last_ts=NOW - 2 * DAY))
    gen_scans(db, random_scans(code.id, 300, rng=rng, first_ts=NOW - 10, last_ts=NOW))
    assert_matches_naive(db, period=last_days(30), code_ids=[code.id], code_id=code.id)
    assert rolled_up < store_watermark(db) < max_scan_id(db)
    later = NOW + rollups.SETTLE_SECONDS + 1
    assert_matches_naive(db, period=last_days(30), code_ids=[code.id], code_id=code.id, now=later)
    assert store_watermark(db) == max_scan_id(db)


def store_watermark(db: Database) -> int:
    with db.read() as conn:
        return analytics_store.get_rollup_watermark(conn)


def max_scan_id(db: Database) -> int:
    with db.read() as conn:
        return conn.execute(text("SELECT MAX(id) FROM scans")).scalar_one()


def test_a_day_split_across_rollup_batches_counts_each_visitor_once(db, alice, code, monkeypatch):
    monkeypatch.setattr(rollups, "ROLLUP_BATCH", 7)
    gen_scans(db, [scan(code.id, NOW - DAY - index * 60, visitor=f"v{index % 5}", is_bot=index % 9 == 0)
                   for index in range(50)])
    assert rollups.refresh_rollups(db, now=NOW) == 50
    assert_matches_naive(db, period=last_days(3), code_ids=[code.id], code_id=code.id)


def test_a_big_backlog_is_worked_off_over_several_reports_which_say_so_meanwhile(db, code, monkeypatch):
    monkeypatch.setattr(rollups, "ROLLUP_BATCH", 10)
    monkeypatch.setattr(analytics, "REFRESH_BUDGET_SECONDS", 0)
    monkeypatch.setattr(analytics, "MAX_TAIL_SCANS", 15)
    gen_scans(db, [scan(code.id, NOW - DAY - index, visitor=str(index)) for index in range(50)])
    progress = [(report.scans, report.uncounted_scans) for report in (
        analytics.build_report(db, period=last_days(7), code_id=code.id, now=NOW) for _ in range(4))]
    assert progress == [(10, 40), (20, 30), (30, 20), (50, 0)]
    assert_matches_naive(db, period=last_days(7), code_ids=[code.id], code_id=code.id)


def test_refreshing_twice_adds_nothing_the_second_time(db, code):
    gen_scans(db, [scan(code.id, NOW - DAY), scan(code.id, NOW - DAY, visitor="w")])
    assert rollups.refresh_rollups(db, now=NOW) == 2
    assert rollups.refresh_rollups(db, now=NOW) == 0


def test_a_refresh_that_loses_the_race_for_the_watermark_writes_nothing(db, code, monkeypatch):
    gen_scans(db, [scan(code.id, NOW - DAY)])
    monkeypatch.setattr(analytics_store, "advance_rollup_watermark", lambda conn, **_: False)
    assert rollups.refresh_rollups(db, now=NOW) == 0
    with db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM scan_rollup_days")).scalar_one() == 0


def test_a_visitor_counts_once_per_code_and_day(db, alice, code):
    other = gen_code(db, alice)
    gen_scans(db, [scan(code.id, NOW - 3600, visitor="same"), scan(code.id, NOW - 7200, visitor="same"),
                   scan(code.id, NOW - DAY, visitor="same"), scan(other.id, NOW - 3600, visitor="same")])
    report = analytics.build_report(db, period=last_days(7), code_id=code.id, now=NOW + DAY)
    assert (report.scans, report.unique_scans) == (3, 2)
    overview = analytics.build_report(db, period=last_days(7), owner_id=alice, now=NOW + DAY)
    assert (overview.scans, overview.unique_scans) == (4, 3)


def test_bots_are_left_out_unless_asked_for(db, code):
    gen_scans(db, [scan(code.id, NOW - 100, visitor="human"), scan(code.id, NOW - 200, visitor="crawler", is_bot=True),
                   scan(code.id, NOW - 300, visitor="crawler", is_bot=True, device="Bot")])
    without = analytics.build_report(db, period=last_days(1), code_id=code.id, now=NOW)
    assert (without.scans, without.unique_scans, without.bot_scans) == (1, 1, 2)
    assert [share.value for share in without.breakdowns["device"]] == ["iPhone"]
    with_bots = analytics.build_report(db, period=last_days(1), code_id=code.id, include_bots=True, now=NOW)
    assert (with_bots.scans, with_bots.unique_scans, with_bots.bot_scans) == (3, 2, 2)
    assert (len(without.latest), len(with_bots.latest)) == (1, 3)


def test_the_period_includes_its_first_and_last_day_in_utc(db, code):
    period = Period(date(2026, 4, 10), date(2026, 4, 12))
    gen_scans(db, [scan(code.id, period.start - 1, visitor="before"), scan(code.id, period.start, visitor="first"),
                   scan(code.id, period.end - 1, visitor="last"), scan(code.id, period.end, visitor="after")])
    report = analytics.build_report(db, period=period, code_id=code.id, now=NOW)
    assert report.scans == 2
    assert [(bucket.start, bucket.scans) for bucket in report.series] == [
        (date(2026, 4, 10), 1), (date(2026, 4, 11), 0), (date(2026, 4, 12), 1)]
    latest = [analytics.isoformat_utc(row.ts) for row in report.latest]
    assert latest == ["2026-04-12T23:59:59Z", "2026-04-10T00:00:00Z"]


def test_weeks_start_on_monday_and_months_on_the_first(db, code):
    # 2026-03-30 is a Monday; the period starts mid-week on Wednesday 2026-03-25.
    period = Period(date(2026, 3, 25), date(2026, 4, 15))
    day_ts = {day: (date(2026, 3, day) - date(1970, 1, 1)).days * DAY for day in (25, 29, 30, 31)}
    gen_scans(db, [scan(code.id, day_ts[25] + 60, visitor="a"), scan(code.id, day_ts[29] + 60, visitor="b"),
                   scan(code.id, day_ts[30] + 60, visitor="c"), scan(code.id, day_ts[31] + 60, visitor="c"),
                   scan(code.id, day_ts[31] + 120, visitor="c"), scan(code.id, NOW - 60, visitor="d")])
    weeks = analytics.build_report(db, period=period, code_id=code.id, granularity="week", now=NOW)
    assert [(bucket.start, bucket.scans, bucket.unique_scans) for bucket in weeks.series] == [
        (date(2026, 3, 23), 2, 2), (date(2026, 3, 30), 3, 2), (date(2026, 4, 6), 0, 0), (date(2026, 4, 13), 1, 1)]
    months = analytics.build_report(db, period=period, code_id=code.id, granularity="month", now=NOW)
    assert [(bucket.start, bucket.scans) for bucket in months.series] == [(date(2026, 3, 1), 5), (date(2026, 4, 1), 1)]


def test_an_unknown_granularity_is_refused(db, code):
    with pytest.raises(ValidationError) as error:
        analytics.build_report(db, period=last_days(7), code_id=code.id, granularity="hour", now=NOW)
    assert error.value.field == "granularity"


def test_breakdowns_show_the_top_values_then_the_rest_as_other(db, code):
    rows = [scan(code.id, NOW - DAY + index, visitor=str(index), country=f"C{index % 12:X}", city=None)
            for index in range(120)]
    rows += [scan(code.id, NOW - DAY, visitor="x", country="DE", city="Berlin")] * 30
    gen_scans(db, rows)
    report = analytics.build_report(db, period=last_days(7), code_id=code.id, now=NOW)
    countries = report.breakdowns["country"]
    assert countries[0] == analytics.Share(value="DE", scans=30, share=30 / 150, country="DE")
    assert len(countries) == analytics.TOP_VALUES + 1 and countries[-1].is_other
    assert sum(share.scans for share in countries) == 150
    assert sum(share.share for share in countries) == pytest.approx(1.0)
    cities = report.breakdowns["city"]
    assert [(share.value, share.country, share.scans) for share in cities] == [("", "", 120), ("Berlin", "DE", 30)]


def test_the_overview_counts_only_the_owners_codes_and_ranks_them(db, alice, code):
    bob = gen_user(db, "bob")
    busy = gen_code(db, alice, label="Busy")
    bobs = gen_code(db, bob)
    gen_scans(db, [scan(busy.id, NOW - 100 - index, visitor=str(index)) for index in range(3)]
              + [scan(code.id, NOW - 100)] + [scan(bobs.id, NOW - 100)] * 5)
    report = analytics.build_report(db, period=last_days(1), owner_id=alice, now=NOW)
    assert report.scans == 4
    assert [(share.label, share.scans, share.share) for share in report.top_codes] == [("Busy", 3, 0.75), ("", 1, 0.25)]
    assert {row.uuid for row in report.latest} == {busy.uuid, code.uuid}


def test_a_deleted_code_takes_its_rollups_with_it(services, db, alice, code):
    gen_scans(db, [scan(code.id, NOW - DAY)])
    rollups.refresh_rollups(db, now=NOW)
    codes.delete_code(db, owner_id=alice, uuid=code.uuid, logo_dir=services.logo_dir, images=services.images)
    with db.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM scan_rollup_days")).scalar_one() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM scan_rollup_values")).scalar_one() == 0


def test_scans_from_before_the_upgrade_are_counted(tmp_path, empty_database_url):
    from alembic import command

    from qrtrack.store.db import _alembic_config

    db = database_at(empty_database_url, INSTANCE_PATH=str(tmp_path))
    with db.engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
        conn.execute(text("INSERT INTO users (id, username, password_hash, is_admin, is_active, created_at) "
                          "VALUES (1, 'old', 'x', TRUE, TRUE, 0)"))
        conn.execute(text("INSERT INTO codes (id, uuid, slug, owner_id, type, destination, label, status, "
                          "created_at, updated_at, scan_count) "
                          "VALUES (1, 'u', 's', 1, 'url', 'https://e.com', '', 'active', 0, 0, 2)"))
        conn.execute(text("INSERT INTO scans (code_id, ts, device, os, browser, is_bot, user_agent, visitor) "
                          "VALUES (1, :ts, 'Mac', '', '', FALSE, '', 'a'), (1, :ts, 'Mac', '', '', FALSE, '', 'b')"),
                     {"ts": NOW - DAY})
    upgrade_schema(db)
    report = analytics.build_report(db, period=last_days(7), code_id=1, now=NOW)
    assert (report.scans, report.unique_scans) == (2, 2)
    db.dispose()


def test_parse_period_defaults_to_the_last_30_days(db):
    assert analytics.parse_period(None, "", today=TODAY) == Period(date(2026, 3, 17), TODAY)
    january = Period(date(2026, 1, 1), date(2026, 1, 31))
    assert analytics.parse_period("2026-01-01", "2026-01-31", today=TODAY) == january
    assert analytics.parse_period(None, "2026-01-31", today=TODAY).first == date(2026, 1, 2)


@pytest.mark.parametrize(("first", "last", "field"), [
    ("2026-02-01", "2026-01-01", "from"), ("yesterday", None, "from"), (None, "2026-13-01", "to"),
    ("2016-01-01", "2026-01-01", "from"),
])
def test_parse_period_refuses_bad_dates(first, last, field):
    with pytest.raises(ValidationError) as error:
        analytics.parse_period(first, last, today=TODAY)
    assert error.value.field == field


def test_a_period_too_long_is_refused_in_years_not_days():
    with pytest.raises(ValidationError, match=r"^choose a period of at most 5 years$"):
        analytics.parse_period("1900-01-01", "2026-11-29", today=TODAY)


def read_csv(db: Database, code_id: int, period: Period) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(analytics.scan_log_csv(db, code_id=code_id, period=period)))))


def test_csv_lists_the_periods_scans_oldest_first_bots_flagged(db, code):
    gen_scans(db, [
        scan(code.id, NOW - 60, country="FR", city="Paris", referrer_host="news.example", browser="Firefox 125"),
        scan(code.id, NOW - 120, is_bot=True, device="Bot", os="Other", browser="Other"),
        scan(code.id, NOW - 40 * DAY),
    ])
    assert read_csv(db, code.id, last_days(30)) == [
        ["timestamp", "country", "city", "device", "os", "browser", "is_bot", "referrer_host"],
        ["2026-04-15T11:58:00Z", "", "", "Bot", "Other", "Other", "true", ""],
        ["2026-04-15T11:59:00Z", "FR", "Paris", "iPhone", "iOS 17.4", "Firefox 125", "false", "news.example"],
    ]


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(db, code):
    gen_scans(db, [scan(code.id, NOW - 60, city="=HYPERLINK(\"http://x\")", referrer_host="@evil", os="-1+1",
                        browser="+cmd", device="\tTab")])
    row = read_csv(db, code.id, last_days(1))[1]
    assert row[2:6] == ["'=HYPERLINK(\"http://x\")", "'\tTab", "'-1+1", "'+cmd"]
    assert row[7] == "'@evil"


def test_csv_pages_through_equal_timestamps_without_losing_or_repeating_rows(db, code, monkeypatch):
    monkeypatch.setattr(analytics, "CSV_BATCH", 3)
    gen_scans(db, [scan(code.id, NOW - 60 * (index // 4), visitor=str(index), referrer_host=f"r{index}")
                   for index in range(10)])
    rows = read_csv(db, code.id, last_days(1))[1:]
    assert sorted(row[7] for row in rows) == sorted(f"r{index}" for index in range(10))
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)


def test_csv_of_a_code_without_scans_is_just_the_header(db, code):
    assert read_csv(db, code.id, last_days(30)) == [list(analytics.CSV_COLUMNS)]
