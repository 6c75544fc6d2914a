"""What every part of the HTTP layer shares: the app's services bundle, its public URLs, and request plumbing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import current_app, request
from jinja2 import FileSystemBytecodeCache
from jinja2.bccache import Bucket
from werkzeug.exceptions import ClientDisconnected

from .. import links
from ..config import Settings
from ..geo import GeoLocator
from ..images.cache import ImageCache
from ..scans import ScanRecorder
from ..store.db import Database

CONSOLE_PRINCIPAL_ENVIRON_KEY = "qrtrack.console_principal"
"""WSGI environ key the Live Console sets to an authenticated ApiPrincipal; clients cannot set it (no HTTP_ prefix)."""

DISCARD_CHUNK_BYTES = 64 * 1024


@dataclass
class AppServices:
    """Everything built once per app at start-up and shared by every request."""

    settings: Settings
    db: Database
    geo: GeoLocator
    recorder: ScanRecorder
    images: ImageCache
    logo_dir: Path
    found_schema: str | None = None
    """The schema revision the database was at when this app started (None: it had none); start-up upgraded it."""

    def warm_up(self) -> None:
        """For long-running servers: pay the parsers', geo data's and image renderer's load time before serving."""
        from ..images import qr
        from ..useragent import warm_up as warm_up_user_agents

        warm_up_user_agents()
        self.geo.warm_up()
        qr.warm_up()


class TemplateBytecodeCache(FileSystemBytecodeCache):
    """Compiled templates kept in the instance folder, for processes that would compile them anew.

    A CGI process compiles every template a page uses: the login page took 32-37 ms to render in a new
    process without this, 5-7 ms with it. gunicorn workers and Passenger processes compile once each.
    Jinja names each file by the template's name and source, so an upgrade's changed templates are
    compiled again. A folder the app cannot write costs only the compiling, never the page.
    """

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except OSError:
            pass

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
            super().dump_bytecode(bucket)
        except OSError:
            pass


def services() -> AppServices:
    return current_app.extensions["qrtrack"]


def public_base_url() -> str:
    """BASE_URL when set, else this request's origin plus the folder the app is mounted at."""
    return services().settings.BASE_URL or request.url_root.rstrip("/")


def short_url(slug: str) -> str:
    """The short URL of the code with this slug on this site (public_base_url)."""
    return links.short_url(public_base_url(), slug)


def as_sentence(message: str) -> str:
    """Service messages are lower-case clauses; on a page they read as sentences."""
    message = message.strip()
    return message[:1].upper() + message[1:] + ("" if message.endswith((".", "!", "?")) else ".")


def discard_unread_body(response):
    """after_request: read what is left of the request's body before the answer goes out.

    An answer given without reading the body (the API's 401 for a missing key, its 413 past 64 KiB) let
    gunicorn close the connection while nginx in front was still sending that body, and nginx then told
    the client 502 instead of our error. Bodies are bounded by MAX_CONTENT_LENGTH, which Flask enforces;
    a longer one was refused before any of it was read, and is left alone.
    """
    length, limit = request.content_length, current_app.config["MAX_CONTENT_LENGTH"]
    if length and (limit is None or length <= limit):
        stream = request.stream
        try:
            while stream.read(DISCARD_CHUNK_BYTES):
                pass
        except ClientDisconnected:
            pass
    return response
