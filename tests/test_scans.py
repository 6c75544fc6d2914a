"""The scan recorder's own rules, without a database: the visitor id."""
from __future__ import annotations

import hashlib

from qrtrack.geo import GeoLocator
from qrtrack.scans import ScanRecorder

DAY = 86400
NOON = 20_000 * DAY + DAY // 2


def recorder(secret: str = "a secret of the site") -> ScanRecorder:
    return ScanRecorder(scan_store=None, geo=GeoLocator(), trust_proxy=0, visitor_secret=secret)


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
