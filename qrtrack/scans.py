"""Service: record a scan — who (device, OS, browser, bot), where (country, city), when — and redirect.

Imports neither Flask nor SQLAlchemy: the same recorder serves the full app, the lean WSGI
handler in front of it and a one-shot CGI process, where import time is request time.
"""
from __future__ import annotations

from .clock import now_epoch
from .errors import Gone, NotFound
from .geo import GeoLocator, anonymise_ip, client_ip
from .records import record
from .useragent import MAX_USER_AGENT_LENGTH, ClientInfo, classify_user_agent

try:
    from _blake2 import blake2b  # hashlib's own BLAKE2; hashlib loads OpenSSL: a CGI scan 1.29× as long
except ImportError:  # an interpreter built without it
    from hashlib import blake2b

TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Protocol

    class ScanStore(Protocol):
        def has_current_schema(self) -> bool: ...

        def find_target(self, slug: str) -> tuple[int, str, str] | None: ...

        def find_logo(self, slug: str) -> tuple[str | None] | None: ...

        def write(self, rows: list[Mapping[str, Any]]) -> None: ...

        def after_answer(self) -> Callable[[], None] | None: ...

MAX_REFERRER_HOST_LENGTH = 255
VISITOR_KEY_PERSONAL = b"qrtrack visitor"
VISITOR_ID_BYTES = 16


class ScanTarget(record("ScanTarget", "code_id destination")):
    """The code a scan's slug names: its id, and the destination to redirect to."""

    __slots__ = ()


class ScanRecorder:
    """Turns one request to /p/<slug> into a committed scan row and the destination to redirect to.

    Takes the WSGI environ rather than a Flask request, so it works with or without Flask.
    """

    def __init__(self, scan_store: ScanStore, *, geo: GeoLocator, trust_proxy: int, visitor_secret: str,
                 classify: Callable[[str], ClientInfo] = classify_user_agent):
        self.scan_store = scan_store
        self.geo = geo
        self.trust_proxy = trust_proxy
        self.classify = classify
        self.visitor_key = blake2b(visitor_secret.encode(), digest_size=32, person=VISITOR_KEY_PERSONAL).digest()

    def resolve(self, slug: str) -> ScanTarget:
        """The active code behind slug; NotFound if none, Gone if paused or archived."""
        found = self.scan_store.find_target(slug)
        if found is None:
            raise NotFound("no QR code at this address", code="code_not_found")
        code_id, destination, status = found
        if status != "active":
            raise Gone("this QR code has been paused by its owner", code="code_paused")
        return ScanTarget(code_id, destination)

    def scan_row(self, target: ScanTarget, environ: Mapping[str, Any], *, now: int) -> dict[str, Any]:
        user_agent = (environ.get("HTTP_USER_AGENT") or "")[:MAX_USER_AGENT_LENGTH]
        client = self.classify(user_agent)
        address = client_ip(environ, trust_proxy=self.trust_proxy)
        location = self.geo.locate(address, environ)
        return {
            "code_id": target.code_id, "ts": now, "country": location.country, "city": location.city,
            "device": client.device, "os": client.os, "browser": client.browser, "is_bot": client.is_bot,
            "referrer_host": referrer_host(environ.get("HTTP_REFERER")), "user_agent": user_agent,
            "visitor": self.visitor_id(anonymise_ip(address), user_agent, now),
        }

    def visitor_id(self, anonymous_address: str | None, user_agent: str, now: int) -> str:
        """Keyed hash of (anonymised address, User-Agent, UTC day), 32 hex digits.

        It counts unique visitors per day and links nothing across days; no address is stored.
        BLAKE2b with a key is a MAC in its own right (RFC 7693), so it needs no HMAC around it.
        """
        message = f"{anonymous_address or ''}|{user_agent}|{now // 86400}".encode()
        return blake2b(message, key=self.visitor_key, digest_size=VISITOR_ID_BYTES).hexdigest()

    def record(self, slug: str, environ: Mapping[str, Any]) -> str:
        """Record the scan (committed before returning) and give the destination.

        A HEAD request is answered but not recorded: link checkers and mail scanners send HEAD to see
        where a link goes, a person's browser or camera app never does. A failure to store the scan is
        logged and does not stop the visitor being redirected.
        """
        target = self.resolve(slug)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return target.destination
        try:
            self.scan_store.write([self.scan_row(target, environ, now=now_epoch())])
        except Exception:
            import logging  # here, not at the top: a CGI scan that succeeds never pays for importing it

            logging.getLogger(__name__).exception("could not record a scan of %s; redirecting anyway", slug)
        return target.destination


def referrer_host(referrer: str | None) -> str | None:
    if not referrer:
        return None
    from urllib.parse import urlsplit  # here: scans from camera apps carry no referrer

    try:
        host = urlsplit(referrer).hostname
    except ValueError:
        return None
    return host[:MAX_REFERRER_HOST_LENGTH] if host else None
