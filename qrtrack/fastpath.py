"""Lean handlers for the hot path: GET /p/<slug> for an active code, answered without Flask.

ScanFastPath sits in front of the Flask app in long-running servers; serve_cgi_scan answers
the same request in a one-shot CGI process. Both record the scan through the same
ScanRecorder before sending the 302. Anything else, including unknown or paused codes whose
friendly pages need templates, falls through to the full app.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config import Settings
from .errors import QrTrackError
from .geo import GeoLocator
from .scans import ScanRecorder, ScanStore
from .scanstore import SqliteScanStore
from .useragent import ClientInfo, classify_user_agent

SCAN_PATH = re.compile(r"/p/([A-Za-z0-9]{1,16})")
REDIRECT_HEADERS = (("Cache-Control", "no-store"), ("Content-Length", "0"))
WsgiApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]


def scan_slug(environ: Mapping[str, Any]) -> str | None:
    """The slug when this is a GET or HEAD of /p/<slug>, else None."""
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        return None
    match = SCAN_PATH.fullmatch(environ.get("PATH_INFO", ""))
    return match.group(1) if match else None


def location_header(destination: str) -> str:
    """Header values must be ASCII: internationalised destinations are sent in their URI form."""
    if destination.isascii():
        return destination
    from werkzeug.urls import iri_to_uri

    return iri_to_uri(destination)


def make_scan_store(settings: Settings) -> ScanStore:
    if settings.sqlite_path is not None:
        return SqliteScanStore(settings.sqlite_path, wal=settings.SQLITE_WAL, synchronous=settings.SQLITE_SYNCHRONOUS)
    from sqlalchemy import create_engine

    from .store import SqlAlchemyScanStore

    return SqlAlchemyScanStore(create_engine(settings.DATABASE_URL, pool_pre_ping=True))


def make_recorder(settings: Settings, *, classify: Callable[[str], ClientInfo] = classify_user_agent,
                  geo: GeoLocator | None = None) -> ScanRecorder:
    geo = geo or GeoLocator(mmdb_paths=settings.GEOIP_DB, trust_cdn=settings.TRUST_CDN)
    return ScanRecorder(make_scan_store(settings), geo=geo, trust_proxy=settings.TRUST_PROXY,
                        visitor_secret=settings.SECRET_KEY, classify=classify)


class ScanFastPath:
    """WSGI middleware: records and redirects scans of active codes, passes everything else on."""

    def __init__(self, app: WsgiApp, recorder: ScanRecorder):
        self.app = app
        self.recorder = recorder

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        slug = scan_slug(environ)
        if slug is not None:
            try:
                destination = self.recorder.record(slug, environ)
            except QrTrackError:
                return self.app(environ, start_response)
            start_response("302 Found", [("Location", location_header(destination)), *REDIRECT_HEADERS])
            return [b""]
        return self.app(environ, start_response)


def serve_cgi_scan(environ: Mapping[str, str] | None = None, *, out=None) -> bool:
    """Answer a CGI request for /p/<slug> if it is a scan of an active code; False to let the full app answer.

    User-Agent classification is cached per distinct User-Agent in the instance folder, so a
    CGI scan imports the parsers only for a browser it has not seen before.
    """
    environ = os.environ if environ is None else environ
    if scan_slug(environ) is None:
        return False
    from .config import load_settings
    from .scanstore import ClientInfoCache

    settings = load_settings(environ=environ)
    cache = ClientInfoCache(str(settings.INSTANCE_PATH / "cache" / "user-agents.db"))
    try:
        destination = make_recorder(settings, classify=cache.classify).record(scan_slug(environ), environ)
    except QrTrackError:
        return False
    out = out or sys.stdout.buffer
    out.write(f"Status: 302 Found\r\nLocation: {location_header(destination)}\r\n".encode("latin-1"))
    out.write("".join(f"{name}: {value}\r\n" for name, value in REDIRECT_HEADERS).encode("latin-1") + b"\r\n")
    out.flush()
    return True
