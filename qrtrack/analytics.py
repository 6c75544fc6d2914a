"""Service: scan analytics — totals, unique scans, scans over time, breakdowns, latest scans, CSV export.

Reports read the rollup tables (per code and UTC day, see rollups.py), which every report first brings
up to date, plus the few scans newer than their watermark (the tail), read from the log as they are.
So a report costs about the same for ten scans as for ten million, and recording a scan does no extra
work. A unique scan is one visitor value per code per UTC day (scans.visitor is a per-day keyed hash).
"""
from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Row
from sqlalchemy.exc import OperationalError

from . import rollups
from .clock import isoformat_utc, now_epoch
from .errors import ValidationError
from .store import analytics as analytics_store
from .store.db import Database

log = logging.getLogger(__name__)

DIMENSIONS = rollups.DIMENSIONS
GRANULARITIES = ("day", "week", "month")
DEFAULT_PERIOD_DAYS = 30
MAX_PERIOD_DAYS = 5 * 366
TOP_VALUES = 8
LATEST_SCANS = 20
CSV_COLUMNS = ("timestamp", "country", "city", "device", "os", "browser", "is_bot", "referrer_host")
CSV_BATCH = 5_000
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A report first spends up to this long adding new scans to the rollups; a bigger backlog (say a month of a
# viral code that nobody looked at) is worked off over the next reports, which say so meanwhile.
REFRESH_BUDGET_SECONDS = 4.0
MAX_TAIL_SCANS = 2 * rollups.ROLLUP_BATCH
EPOCH_DATE = date(1970, 1, 1)
DAY = analytics_store.SECONDS_PER_DAY


@dataclass(frozen=True)
class Period:
    """UTC days from first to last, both included."""

    first: date
    last: date

    @property
    def first_day(self) -> int:
        return (self.first - EPOCH_DATE).days

    @property
    def last_day(self) -> int:
        return (self.last - EPOCH_DATE).days

    @property
    def start(self) -> int:
        return self.first_day * DAY

    @property
    def end(self) -> int:
        """Epoch seconds just after the period (exclusive)."""
        return (self.last_day + 1) * DAY


@dataclass(frozen=True)
class Bucket:
    start: date
    scans: int
    unique_scans: int


@dataclass(frozen=True)
class Share:
    """One line of a breakdown: value is "" when unknown; country is set for countries and cities."""

    value: str
    scans: int
    share: float
    country: str = ""
    is_other: bool = False


@dataclass(frozen=True)
class CodeShare:
    uuid: str
    slug: str
    label: str
    scans: int
    share: float
    is_other: bool = False  # the breakdown macro reads it of every line; top codes are each named


@dataclass(frozen=True)
class Report:
    period: Period
    granularity: str
    include_bots: bool
    scans: int
    unique_scans: int
    bot_scans: int
    series: list[Bucket]
    breakdowns: dict[str, list[Share]]
    latest: list[Row]
    top_codes: list[CodeShare] = field(default_factory=list)
    codes_scanned: int = 0
    uncounted_scans: int = 0  # recent scans (of every code) not in these figures yet; 0 but while catching up


def parse_period(first: str | None, last: str | None, *, today: date) -> Period:
    """The period between two ISO dates (YYYY-MM-DD, UTC); a missing end defaults to the last 30 days."""
    last_date = _parse_date(last, "to") or today
    first_date = _parse_date(first, "from") or last_date - timedelta(days=DEFAULT_PERIOD_DAYS - 1)
    if first_date > last_date:
        raise ValidationError("the start date is after the end date", code="invalid_period", field="from")
    if (last_date - first_date).days >= MAX_PERIOD_DAYS:
        raise ValidationError(f"choose a period of at most {MAX_PERIOD_DAYS // 366} years", code="invalid_period",
                              field="from")
    return Period(first_date, last_date)


def _parse_date(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(f"{name}: a date like 2026-04-15", code="invalid_period", field=name) from None


def today_utc(now: int | None = None) -> date:
    return datetime.fromtimestamp(now_epoch() if now is None else now, tz=UTC).date()


def build_report(db: Database, *, period: Period, code_id: int | None = None, owner_id: int | None = None,
                 granularity: str = "day", include_bots: bool = False, now: int | None = None) -> Report:
    """Everything the analytics of one code (code_id) or of all an owner's codes (owner_id) show."""
    if granularity not in GRANULARITIES:
        raise ValidationError(f"granularity must be one of: {', '.join(GRANULARITIES)}",
                              code="invalid_granularity", field="granularity")
    _refresh_quietly(db, now=now)
    scope = {"code_id": code_id, "owner_id": None if code_id is not None else owner_id}
    with db.read() as conn:
        _read_one_snapshot(conn)
        watermark = analytics_store.get_rollup_watermark(conn)
        backlog = analytics_store.count_scans_after(conn, after_id=watermark)
        uncounted = backlog if backlog > MAX_TAIL_SCANS else 0
        tail = _tail_in_scope(conn, watermark, period, **scope) if 0 < backlog <= MAX_TAIL_SCANS else rollups.Tally()
        days = _day_totals(conn, period, tail, **scope)
        scans, unique_scans, bot_scans = _totals(days.values(), include_bots=include_bots)
        breakdowns = {dimension: _top_values(_value_totals(conn, period, dimension, tail, include_bots, **scope),
                                             scans, dimension) for dimension in DIMENSIONS}
        latest = analytics_store.list_latest_scans(conn, **scope, start=period.start, end=period.end,
                                         include_bots=include_bots, limit=LATEST_SCANS)
        per_code = Counter() if code_id is not None else _scans_per_code(conn, owner_id, period, tail, include_bots)
        top_codes = _top_codes(conn, owner_id, per_code, scans)
    return Report(period=period, granularity=granularity, include_bots=include_bots, scans=scans,
                  unique_scans=unique_scans, bot_scans=bot_scans,
                  series=_series(days, period, granularity, include_bots=include_bots), breakdowns=breakdowns,
                  latest=latest, top_codes=top_codes, codes_scanned=sum(1 for count in per_code.values() if count),
                  uncounted_scans=uncounted)


def _refresh_quietly(db: Database, *, now: int | None) -> None:
    # Reports stay exact without the refresh (the tail is read as it is), only slower: a busy
    # database must not cost the page.
    try:
        rollups.refresh_rollups(db, now=now, budget_seconds=REFRESH_BUDGET_SECONDS)
    except OperationalError:
        log.exception("could not bring the scan rollups up to date; reading the scan log instead")


def _read_one_snapshot(conn: Connection) -> None:
    """Make every query of this read see one state, so the rollups and the tail agree.

    SQLite's read transaction and MySQL's default already do; PostgreSQL's default does not.
    """
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")


def _tail_in_scope(conn: Connection, watermark: int, period: Period, *, code_id: int | None,
                   owner_id: int | None) -> rollups.Tally:
    """The scans past the watermark that belong to the report, counted like the rollups."""
    tail = rollups.tally_scans(conn, after_id=watermark)
    if not tail.days:
        return tail
    code_ids = {code_id} if code_id is not None else analytics_store.list_code_ids(conn, owner_id)
    return tail.restricted_to(code_ids, period.first_day, period.last_day)


def _day_totals(conn: Connection, period: Period, tail: rollups.Tally, *, code_id: int | None,
                owner_id: int | None) -> dict[int, list[int]]:
    """Per day: [human scans, bot scans, human visitors, all visitors], rollups and tail together."""
    days = {row.day: [int(row.human_scans), int(row.bot_scans), int(row.human_visitors), int(row.all_visitors)]
            for row in analytics_store.sum_rollup_days_by_day(conn, code_id=code_id, owner_id=owner_id,
                                                     first_day=period.first_day, last_day=period.last_day)}
    for (_, day), (human, bot) in tail.days.items():
        counts = days.setdefault(day, [0, 0, 0, 0])
        counts[0] += human
        counts[1] += bot
    # Visitors do not add up: on a day the tail touches, that code's rolled-up figure gives way to a fresh count.
    touched = tail.touched_days()
    for tail_code, touched_days in touched.items():
        for first_day, last_day in rollups.day_runs(touched_days):
            for row in analytics_store.list_rollup_days(conn, tail_code, first_day=first_day, last_day=last_day):
                days[row.day][2] -= row.human_visitors
                days[row.day][3] -= row.all_visitors
    for (_, day), (human_visitors, all_visitors) in rollups.count_visitors(conn, touched).items():
        days[day][2] += human_visitors
        days[day][3] += all_visitors
    return days


def _totals(days: Iterable[list[int]], *, include_bots: bool) -> tuple[int, int, int]:
    """(scans, unique scans, bot scans) over the days."""
    human = bot = human_visitors = all_visitors = 0
    for day_human, day_bot, day_human_visitors, day_all_visitors in days:
        human, bot = human + day_human, bot + day_bot
        human_visitors, all_visitors = human_visitors + day_human_visitors, all_visitors + day_all_visitors
    if include_bots:
        return human + bot, all_visitors, bot
    return human, human_visitors, bot


def _value_totals(conn: Connection, period: Period, dimension: str, tail: rollups.Tally, include_bots: bool, *,
                  code_id: int | None, owner_id: int | None) -> Counter:
    totals = Counter({row.value: int(row.scans) for row in analytics_store.sum_rollup_values(
        conn, code_id=code_id, owner_id=owner_id, dimension=dimension, first_day=period.first_day,
        last_day=period.last_day, include_bots=include_bots)})
    for (_, tail_dimension, _, is_bot, value), scans in tail.values.items():
        if tail_dimension == dimension and (include_bots or not is_bot):
            totals[value] += scans
    return totals


def _top_values(totals: Counter, scans: int, dimension: str) -> list[Share]:
    """The TOP_VALUES biggest values, then the rest as one "other" line."""
    ranked = sorted(((value, count) for value, count in totals.items() if count), key=lambda item: (-item[1], item[0]))
    shares = [_share(dimension, value, count, scans) for value, count in ranked[:TOP_VALUES]]
    rest = sum(count for _, count in ranked[TOP_VALUES:])
    if rest:
        shares.append(Share(value="", scans=rest, share=rest / scans, is_other=True))
    return shares


def _share(dimension: str, value: str, count: int, scans: int) -> Share:
    if dimension == "country":
        return Share(value=value, scans=count, share=count / scans, country=value)
    if dimension == "city":
        country, _, city = value.partition("|")
        return Share(value=city, scans=count, share=count / scans, country=country)
    return Share(value=value, scans=count, share=count / scans)


def _scans_per_code(conn: Connection, owner_id: int, period: Period, tail: rollups.Tally,
                    include_bots: bool) -> Counter:
    per_code: Counter = Counter()
    for row in analytics_store.sum_rollup_days_by_code(conn, owner_id=owner_id, first_day=period.first_day,
                                             last_day=period.last_day):
        per_code[row.code_id] += int(row.human_scans) + (int(row.bot_scans) if include_bots else 0)
    for (code_id, _), (human, bot) in tail.days.items():
        per_code[code_id] += human + (bot if include_bots else 0)
    return per_code


def _top_codes(conn: Connection, owner_id: int | None, per_code: Counter, scans: int) -> list[CodeShare]:
    ranked = [(code_id, count) for code_id, count in per_code.most_common(TOP_VALUES) if count]
    if not ranked:
        return []
    names = {row.id: row for row in analytics_store.list_code_names(conn, owner_id, [code_id for code_id, _ in ranked])}
    return [CodeShare(uuid=names[code_id].uuid, slug=names[code_id].slug, label=names[code_id].label, scans=count,
                      share=count / scans) for code_id, count in ranked]


def _series(days: dict[int, list[int]], period: Period, granularity: str, *, include_bots: bool) -> list[Bucket]:
    """Scans and unique scans per day, week (from Monday) or month, with empty buckets kept."""
    buckets: dict[date, list[int]] = {}
    for offset in range((period.last - period.first).days + 1):
        buckets.setdefault(_bucket_start(period.first + timedelta(days=offset), granularity), [0, 0])
    for day, (human, bot, human_visitors, all_visitors) in days.items():
        bucket = buckets[_bucket_start(EPOCH_DATE + timedelta(days=day), granularity)]
        bucket[0] += human + bot if include_bots else human
        bucket[1] += all_visitors if include_bots else human_visitors
    return [Bucket(start=start, scans=scans, unique_scans=unique) for start, (scans, unique) in buckets.items()]


def _bucket_start(day: date, granularity: str) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def scan_log_csv(db: Database, *, code_id: int, period: Period, include_bots: bool = True) -> Iterator[str]:
    """The code's scans in the period as CSV text in pieces, oldest first; bots, if included, flagged.

    Read in batches, each in its own short read, so a slow download holds no transaction open.
    """
    yield _csv_lines([CSV_COLUMNS])
    after = None
    while True:
        with db.read() as conn:
            rows = analytics_store.list_scan_log_page(conn, code_id, start=period.start, end=period.end, after=after,
                                                      limit=CSV_BATCH, include_bots=include_bots)
        if rows:
            yield _csv_lines(_csv_cells(row) for row in rows)
        if len(rows) < CSV_BATCH:
            return
        after = (rows[-1].ts, rows[-1].id)


def _csv_cells(row: Row) -> tuple[str, ...]:
    return (isoformat_utc(row.ts), row.country or "", row.city or "", row.device, row.os, row.browser,
            "true" if row.is_bot else "false", row.referrer_host or "")


def _csv_lines(rows: Iterable[Iterable[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([safe_csv_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()


def safe_csv_cell(value: str) -> str:
    """The value with a leading quote when a spreadsheet would run it as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
