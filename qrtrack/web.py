"""What the HTTP layer shares: the per-app services bundle, public URLs, and error responses."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import current_app, jsonify, render_template, request
from jinja2 import FileSystemBytecodeCache
from jinja2.bccache import Bucket
from limits.errors import StorageError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import ClientDisconnected, HTTPException

from . import links
from .config import Settings
from .db import Database, is_unavailable, unavailable_hint
from .errors import QrTrackError, error_body
from .geo import GeoLocator
from .imagecache import ImageCache
from .ratelimit import storage_failure_hint
from .scans import ScanRecorder

CONSOLE_PRINCIPAL_ENVIRON_KEY = "qrtrack.console_principal"
"""WSGI environ key the Live Console sets to an authenticated ApiPrincipal; clients cannot set it (no HTTP_ prefix)."""

DISCARD_CHUNK_BYTES = 64 * 1024
UNAVAILABLE_RETRY_SECONDS = 60
HTTP_ERROR_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 410: "gone", 413: "payload_too_large", 415: "unsupported_media_type",
    429: "rate_limited", 500: "internal_error",
}


@dataclass
class AppServices:
    """Everything built once per app at start-up and shared by every request."""

    settings: Settings
    db: Database
    geo: GeoLocator
    recorder: ScanRecorder
    images: ImageCache
    logo_dir: Path

    def warm_up(self) -> None:
        """For long-running servers: pay the parsers', geo data's and image renderer's load time before serving."""
        from . import qrimage
        from .useragent import warm_up as warm_up_user_agents

        warm_up_user_agents()
        self.geo.warm_up()
        qrimage.warm_up()


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


def wants_json() -> bool:
    """API errors are JSON, also on paths that miss its routes only by case or what follows (/API.PHP, /api.php/)."""
    path = request.path.lower()
    return (request.blueprint == "api" or path.rstrip("/").endswith("/api.php")
            or path.startswith(("/api/", "/api.php/")))


def error_response(status: int, code: str, message: str, *, field: str | None = None):
    if wants_json():
        response = jsonify(error_body(code, message, field=field))
    else:
        response = current_app.make_response(
            render_template("errors/error.html", status=status, message=as_sentence(message)))
    response.status_code = status
    return response


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


def handle_qrtrack_error(error: QrTrackError):
    return error_response(error.status, error.code, error.message, field=error.field)


def handle_http_exception(error: HTTPException):
    status = error.code or 500
    message = error.description or error.name
    if status == 429:
        message = f"rate limit exceeded ({error.description}); retry after the time in Retry-After"
    response = error_response(status, HTTP_ERROR_CODES.get(status, "http_error"), message)
    if status == 405 and getattr(error, "valid_methods", None):
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def handle_rate_limit_storage_error(error: StorageError):
    """The rate-limit counters cannot be read or written. API calls and sign-ins are refused, since they must stay
    limited, with a 503 that tells the client to come back; the log says what failed and what to check."""
    uri = services().settings.RATELIMIT_STORAGE_URI
    current_app.logger.error("refused %s %s: the rate-limit storage failed (%s: %s); %s", request.method,
                             request.path, type(error.storage_error).__name__, error.storage_error,
                             storage_failure_hint(uri))
    return _unavailable("rate_limit_unavailable",
                        "the server cannot check its rate limits right now; try again in a minute")


def handle_database_error(error: OperationalError):
    """A database that cannot take the work now (see db.is_unavailable) gets a 503 and a log line that says what to
    check, which on shared hosts is most often a database file created by another user; anything else is a bug."""
    db = services().db
    if not is_unavailable(error, db.engine.dialect.name):
        if current_app.testing:
            raise error
        return handle_unexpected_error(error)
    current_app.logger.error("refused %s %s: the database failed (%s); %s", request.method, request.path,
                             " ".join(str(error.orig).split()), unavailable_hint(db))
    return _unavailable("database_unavailable",
                        "the database cannot take this request right now; try again in a minute")


def _unavailable(code: str, message: str):
    """503 with Retry-After: refused for now, for a reason that is the server's and passes."""
    response = error_response(503, code, message)
    response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_SECONDS)
    return response


def handle_unexpected_error(error: Exception):
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "something went wrong on our side; it has been logged")
