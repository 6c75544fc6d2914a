"""The scan recorder's own rules, without a database: what it records or not, and the visitor id."""
from __future__ import annotations

import hashlib
import logging

import pytest

from qrtrack.errors import Gone, NotFound
from qrtrack.geo import GeoLocator
from qrtrack.scans import ScanRecorder

DAY = 86400
NOON = 20_000 * DAY + DAY // 2


def recorder(secret: str = "a secret of the site", scan_store=None) -> ScanRecorder:
    return ScanRecorder(scan_store=scan_store, geo=GeoLocator(), trust_proxy=0, visitor_secret=secret)


class ScanStoreInMemory:
    """Codes by slug as (id, destination, status); written rows kept, or the write fails with write_error."""

    def __init__(self, write_error: Exception | None = None):
        self.codes = {"live": (1, "https://example.com/live", "active"),
                      "paused": (2, "https://example.com/paused", "paused")}
        self.written: list[dict] = []
        self.write_error = write_error

    def find_target(self, slug: str):
        return self.codes.get(slug)

    def write(self, rows) -> None:
        if self.write_error is not None:
            raise self.write_error
        self.written.extend(rows)


SCAN = {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "8.8.8.8", "HTTP_USER_AGENT": "Mozilla/5.0"}


def test_a_scan_is_written_and_gives_the_destination():
    store = ScanStoreInMemory()
    assert recorder(scan_store=store).record("live", SCAN) == "https://example.com/live"
    assert [(row["code_id"], row["country"]) for row in store.written] == [(1, "US")]


def test_a_head_request_gives_the_destination_and_writes_nothing():
    store = ScanStoreInMemory()
    assert recorder(scan_store=store).record("live", {**SCAN, "REQUEST_METHOD": "HEAD"}) == "https://example.com/live"
    assert store.written == []


def test_an_unknown_code_is_not_found_and_a_paused_one_gone_and_neither_is_written():
    store = ScanStoreInMemory()
    with pytest.raises(NotFound):
        recorder(scan_store=store).record("missing", SCAN)
    with pytest.raises(Gone):
        recorder(scan_store=store).record("paused", SCAN)
    assert store.written == []


def test_a_scan_that_cannot_be_written_is_logged_and_the_visitor_still_redirected(caplog):
    """The printed code keeps working when the database does not (disk full, locked past the timeout)."""
    store = ScanStoreInMemory(write_error=OSError(28, "No space left on device"))
    with caplog.at_level(logging.ERROR, logger="qrtrack.scans"):
        assert recorder(scan_store=store).record("live", SCAN) == "https://example.com/live"
    [logged] = caplog.records
    assert "could not record a scan of live" in logged.getMessage()
    assert "No space left on device" in logged.exc_text


def test_a_visitor_id_is_32_hex_digits_and_the_same_all_day():
    ids = {recorder().visitor_id("203.0.113.0", "Mozilla/5.0", NOON + offset)
           for offset in (-DAY // 2, 0, DAY // 2 - 1)}
    assert len(ids) == 1
    visitor = ids.pop()
    assert len(visitor) == 32 and set(visitor) <= set("0123456789abcdef")


def test_a_visitor_id_changes_with_the_day_the_address_the_user_agent_and_the_sites_secret():
    base = recorder().visitor_id("203.0.113.0", "Mozilla/5.0", NOON)
    others = [recorder().visitor_id("203.0.113.0", "Mozilla/5.0", NOON + DAY),
              recorder().visitor_id("203.0.114.0", "Mozilla/5.0", NOON),
              recorder().visitor_id(None, "Mozilla/5.0", NOON),
              recorder().visitor_id("203.0.113.0", "Mozilla/5.1", NOON),
              recorder("another site's secret").visitor_id("203.0.113.0", "Mozilla/5.0", NOON)]
    assert len({base, *others}) == 6


def test_the_visitor_id_is_keyed_blake2b_as_hashlib_computes_it():
    """Pins the formula (key derivation, message, digest size): hashlib's blake2b is the _blake2 one scans.py
    imports, so this is no comparison of two implementations, but a change of formula fails here."""
    key = hashlib.blake2b(b"s3cret", digest_size=32, person=b"qrtrack visitor").digest()
    expected = hashlib.blake2b(f"203.0.113.0|UA|{NOON // DAY}".encode(), key=key, digest_size=16).hexdigest()
    assert recorder("s3cret").visitor_id("203.0.113.0", "UA", NOON) == expected
