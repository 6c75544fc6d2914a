"""Error responses: JSON for the API, a readable page for people, and the app's handlers for each kind of failure."""
from __future__ import annotations

from flask import current_app, jsonify, render_template, request
from limits.errors import StorageError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from ..errors import QrTrackError, error_body
from ..store.db import is_unavailable, unavailable_hint
from ..store.ratelimit import storage_failure_hint
from .context import as_sentence, services

UNAVAILABLE_RETRY_SECONDS = 60
HTTP_ERROR_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 410: "gone", 413: "payload_too_large", 415: "unsupported_media_type",
    429: "rate_limited", 500: "internal_error",
}


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
