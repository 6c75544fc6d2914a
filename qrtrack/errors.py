"""The exception family services raise, and the one JSON error body every API failure uses."""
from __future__ import annotations

TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from typing import Any


class QrTrackError(Exception):
    """An expected failure with an HTTP status, a stable machine code and a human message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class ValidationError(QrTrackError):
    status = 400
    code = "invalid_request"


class Unauthorized(QrTrackError):
    status = 401
    code = "unauthorized"


class Forbidden(QrTrackError):
    status = 403
    code = "forbidden"


class NotFound(QrTrackError):
    status = 404
    code = "not_found"


class Conflict(QrTrackError):
    status = 409
    code = "conflict"


class PayloadTooLarge(QrTrackError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(QrTrackError):
    status = 415
    code = "unsupported_media_type"


class Gone(QrTrackError):
    status = 410
    code = "gone"


class RateLimited(QrTrackError):
    status = 429
    code = "rate_limited"


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """{"error": {"code": ..., "message": ..., **extra}}: the shape of every API error."""
    return {"error": {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}}
