"""The scans-over-time chart as numbers for an inline SVG: bars for scans, a line for unique scans.

The SVG is drawn in a fixed 1000 x 200 box stretched to the card's width, so no script and no
inline style is needed (the Content-Security-Policy allows neither).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ...analytics import Bucket, Report

WIDTH = 1000
HEIGHT = 200
GRIDLINES = 4
NICE_STEPS = (1, 2, 2.5, 5)


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    slot_x: float
    slot_width: float
    title: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    unique_line: str
    gridlines: list[float]
    tick_labels: list[int]
    axis_labels: list[str]
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def is_empty(self) -> bool:
        return not any(bar.height for bar in self.bars)


def scans_chart(report: Report) -> Chart:
    buckets = report.series
    step = _nice_step(max((bucket.scans for bucket in buckets), default=0) / GRIDLINES)
    top = step * GRIDLINES
    slot = WIDTH / max(len(buckets), 1)
    gap = min(slot * 0.25, 8)
    bars = [Bar(x=round(index * slot + gap / 2, 2), width=round(slot - gap, 2),
                y=round(HEIGHT - _height(b.scans, top), 2), height=round(_height(b.scans, top), 2),
                slot_x=round(index * slot, 2), slot_width=round(slot, 2), title=_title(b, report.granularity))
            for index, b in enumerate(buckets)]
    line = " ".join(f"{round(index * slot + slot / 2, 2)},{round(HEIGHT - _height(b.unique_scans, top), 2)}"
                    for index, b in enumerate(buckets))
    return Chart(bars=bars, unique_line=line, gridlines=[HEIGHT * k / GRIDLINES for k in range(GRIDLINES)],
                 tick_labels=[step * k for k in range(GRIDLINES, -1, -1)],
                 axis_labels=_axis_labels(buckets, report.granularity))


def _nice_step(raw: float) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above raw (a whole number), so that gridlines
    fall on round numbers and the tallest bar fills about half of the chart or more."""
    power = 1
    while True:
        for nice in NICE_STEPS:
            step = power * nice
            if step >= raw and step == int(step):
                return int(step)
        power *= 10


def _height(value: int, top: float) -> float:
    return HEIGHT * value / top if top else 0


def _title(bucket: Bucket, granularity: str) -> str:
    scans = f"{bucket.scans:,} scan{'' if bucket.scans == 1 else 's'}"
    return f"{_bucket_name(bucket.start, granularity, long=True)}: {scans}, {bucket.unique_scans:,} unique"


def _bucket_name(start: date, granularity: str, *, long: bool = False) -> str:
    if granularity == "month":
        return start.strftime("%B %Y" if long else "%b %Y")
    name = start.strftime("%a %-d %b %Y" if long else "%-d %b")
    return f"Week of {name}" if granularity == "week" else name


def _axis_labels(buckets: list[Bucket], granularity: str) -> list[str]:
    """First, middle and last bucket names (fewer when there are fewer buckets)."""
    picks = sorted({0, len(buckets) // 2, len(buckets) - 1}) if buckets else []
    return [_bucket_name(buckets[index].start, granularity) for index in picks]
