"""UTC time in one place: timestamps are stored as whole epoch seconds and shown as ISO-8601 with Z."""
from __future__ import annotations

import time


def now_epoch() -> int:
    return int(time.time())


def isoformat_utc(epoch: int | None) -> str | None:
    """2026-04-15T18:24:11Z, the shape the API contract uses; None stays None."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
