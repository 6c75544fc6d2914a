"""Service: record a scan — who (device, OS, browser, bot), where (country, city), when — and read the log."""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Row
from sqlalchemy.exc import SQLAlchemyError

from . import store
from .clock import now_epoch
from .db import Database
from .errors import Gone, NotFound
from .geo import GeoLocator, anonymise_ip, client_address
from .useragent import MAX_USER_AGENT_LENGTH, classify_user_agent

log = logging.getLogger(__name__)
MAX_REFERRER_HOST_LENGTH = 255


@dataclass(frozen=True)
class ScanTarget:
    code_id: int
    destination: str


class ScanRecorder:
    """Turns one request to /p/<slug> into a scan row and the destination to redirect to.

    Knows nothing of Flask: it takes the WSGI environ, so the same code serves the full app
    and the lean handlers in front of it.
    """

    def __init__(self, db: Database, *, geo: GeoLocator, trust_proxy: int, visitor_secret: str):
        self.db = db
        self.geo = geo
        self.trust_proxy = trust_proxy
        self.visitor_key = hashlib.sha256(("visitor:" + visitor_secret).encode()).digest()

    def resolve(self, slug: str) -> ScanTarget:
        """The active code behind slug; NotFound if none, Gone if paused or archived."""
        with self.db.read() as conn:
            code = store.get_code_by_slug(conn, slug)
        if code is None:
            raise NotFound("no QR code at this address", code="code_not_found")
        if code.status != "active":
            raise Gone("this QR code has been paused by its owner", code="code_paused")
        return ScanTarget(code_id=code.id, destination=code.destination)

    def scan_row(self, target: ScanTarget, environ: Mapping[str, Any], *, now: int) -> dict[str, Any]:
        user_agent = (environ.get("HTTP_USER_AGENT") or "")[:MAX_USER_AGENT_LENGTH]
        client = classify_user_agent(user_agent)
        address = client_address(environ, trust_proxy=self.trust_proxy)
        location = self.geo.locate(address, environ)
        return {
            "code_id": target.code_id, "ts": now, "country": location.country, "city": location.city,
            "device": client.device, "os": client.os, "browser": client.browser, "is_bot": client.is_bot,
            "referrer_host": referrer_host(environ.get("HTTP_REFERER")), "user_agent": user_agent,
            "visitor": self.visitor_id(anonymise_ip(address), user_agent, now),
        }

    def visitor_id(self, anonymous_address: str | None, user_agent: str, now: int) -> str:
        """Keyed hash of (anonymised address, User-Agent, UTC day).

        It counts unique visitors per day and links nothing across days; no address is stored.
        """
        message = f"{anonymous_address or ''}|{user_agent}|{now // 86400}".encode()
        return hmac.new(self.visitor_key, message, hashlib.sha256).hexdigest()[:32]

    def record(self, slug: str, environ: Mapping[str, Any]) -> str:
        """Record the scan (committed before returning) and give the destination.

        A failure to store the scan is logged and does not stop the visitor being redirected.
        """
        target = self.resolve(slug)
        try:
            row = self.scan_row(target, environ, now=now_epoch())
            with self.db.write() as conn:
                store.insert_scans(conn, [row])
        except SQLAlchemyError:
            log.exception("could not record a scan of %s; redirecting anyway", slug)
        return target.destination


def referrer_host(referrer: str | None) -> str | None:
    if not referrer:
        return None
    try:
        host = urlsplit(referrer).hostname
    except ValueError:
        return None
    return host[:MAX_REFERRER_HOST_LENGTH] if host else None


def scan_log(db: Database, *, code_id: int, limit: int, before_id: int | None = None) -> tuple[list[Row], int]:
    """A page of the scan log, newest first, and the total number of scans."""
    with db.read() as conn:
        rows = store.list_scans(conn, code_id, limit=limit, before_id=before_id)
        total = store.count_scans(conn, code_id)
    return rows, total
