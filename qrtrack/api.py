"""Blueprint for the REST API at /api.php (the seed contract plus additions) and /api/openapi.json."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import Row
from sqlalchemy.exc import SQLAlchemyError

from . import codes, keys, scans, store
from .clock import isoformat_utc, now_epoch
from .errors import QrTrackError, ValidationError
from .openapi import openapi_document
from .web import logo_url, qr_image_url, services, short_url

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
MAX_LIST_LIMIT = 1000
DEFAULT_SCAN_PAGE = 100
MAX_SCAN_PAGE = 1000
CONSOLE_PRINCIPAL_ENVIRON_KEY = "qrtrack.console_principal"


class PayloadTooLarge(QrTrackError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(QrTrackError):
    status = 415
    code = "unsupported_media_type"


def current_principal() -> keys.ApiPrincipal:
    """The key this request acts for, authenticated once per request; raises Unauthorized."""
    if "api_principal" not in g:
        try:
            g.api_principal = request.environ.get(CONSOLE_PRINCIPAL_ENVIRON_KEY) or keys.authenticate_api_key(
                services().db, request.headers.get("X-Api-Key"))
        except QrTrackError as error:
            g.api_principal = error
    if isinstance(g.api_principal, QrTrackError):
        raise g.api_principal
    return g.api_principal


def rate_limit_key() -> str:
    """Count per API key; unauthenticated calls count per client address so key guessing is limited too."""
    try:
        return f"apikey:{current_principal().key_id}"
    except QrTrackError:
        return f"ip:{request.remote_addr}"


@bp.before_request
def start_timer() -> None:
    g.api_started = time.perf_counter()


@bp.after_request
def log_api_call(response):
    principal = g.get("api_principal")
    if isinstance(principal, keys.ApiPrincipal):
        _log_call(principal, response.status_code)
    return response


def _log_call(principal: keys.ApiPrincipal, status: int) -> None:
    elapsed_ms = int((time.perf_counter() - g.get("api_started", time.perf_counter())) * 1000)
    source = "console" if request.environ.get(CONSOLE_PRINCIPAL_ENVIRON_KEY) else "api"
    try:
        with services().db.write() as conn:
            store.insert_api_call(conn, {
                "user_id": principal.user_id, "key_id": principal.key_id, "key_name": principal.key_name,
                "ts": now_epoch(), "method": request.method, "path": request.full_path.rstrip("?")[:300],
                "status": status, "duration_ms": elapsed_ms, "source": source})
    except SQLAlchemyError:
        log.exception("could not log an API call; the call itself went through")


@bp.route("/api.php", methods=["GET", "POST", "DELETE"])
def api_endpoint():
    principal = current_principal()
    uuid = request.args.get("uuid")
    if request.method == "GET":
        return jsonify(get_code(principal, uuid)) if uuid is not None else jsonify(list_codes(principal))
    if request.method == "DELETE":
        return jsonify(delete_code(principal, _required_uuid(uuid)))
    body = _json_body()
    if uuid is None:
        return jsonify(create_code(principal, body)), 201
    return jsonify(update_code(principal, uuid, body))


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(openapi_document(server_url=request.url_root.rstrip("/")))


def list_codes(principal: keys.ApiPrincipal) -> dict[str, Any]:
    limit = _int_arg("limit", minimum=1, maximum=MAX_LIST_LIMIT)
    offset = _int_arg("offset", minimum=0, maximum=None) or 0
    status = request.args.get("status")
    statuses = (codes.validate_status(status),) if status else ("active", "paused")
    rows, total = codes.list_codes(services().db, owner_id=principal.user_id, search=request.args.get("label"),
                                   statuses=statuses, limit=limit, offset=offset)
    return {"codes": [code_summary(row) for row in rows], "total": total, "limit": limit, "offset": offset}


def get_code(principal: keys.ApiPrincipal, uuid: str) -> dict[str, Any]:
    code = codes.get_code(services().db, owner_id=principal.user_id, uuid=uuid)
    limit = _int_arg("limit", minimum=1, maximum=MAX_SCAN_PAGE) or DEFAULT_SCAN_PAGE
    before = _int_arg("before", minimum=1, maximum=None)
    rows, total = scans.scan_log(services().db, code_id=code.id, limit=limit, before_id=before)
    next_before = rows[-1].id if len(rows) == limit and rows[-1].id > 1 else None
    return {**code_summary(code), "scans": [scan_entry(row) for row in rows], "scan_count": code.scan_count,
            "scans_total": total, "next_before": next_before}


def create_code(principal: keys.ApiPrincipal, body: dict[str, Any]) -> dict[str, Any]:
    code = codes.create_code(services().db, owner_id=principal.user_id, destination=body.get("destination"),
                             label=body.get("label"), code_type=body.get("type"))
    return code_summary(code)


def update_code(principal: keys.ApiPrincipal, uuid: str, body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - {"destination", "label", "status", "type"}
    if unknown:
        raise ValidationError(f"cannot change: {', '.join(sorted(unknown))}", code="invalid_field")
    if "type" in body:
        codes.validate_type(body["type"])
    changes = codes.CodeChanges(destination=body.get("destination"), label=body.get("label"),
                                status=body.get("status"))
    if "destination" in body and body["destination"] is None:
        codes.validate_destination(None)
    code = codes.update_code(services().db, owner_id=principal.user_id, uuid=uuid, changes=changes)
    return code_summary(code)


def delete_code(principal: keys.ApiPrincipal, uuid: str) -> dict[str, Any]:
    code = codes.delete_code(services().db, owner_id=principal.user_id, uuid=uuid)
    return {"uuid": code.uuid, "deleted": True}


def code_summary(code: Row) -> dict[str, Any]:
    """A code as the list shows it; the seed's fields first, with their seed types."""
    return {
        "uuid": code.uuid, "type": code.type, "destination": code.destination, "scans": int(code.scan_count),
        "created_at": isoformat_utc(code.created_at), "logo": logo_url(code.logo),
        "label": code.label, "status": code.status, "slug": code.slug, "short_url": short_url(code.slug),
        "qr_image_url": qr_image_url(code.slug), "updated_at": isoformat_utc(code.updated_at),
    }


def scan_entry(scan: Row) -> dict[str, Any]:
    return {
        "timestamp": isoformat_utc(scan.ts), "city": scan.city or "", "country": scan.country or "",
        "device": scan.device, "os": scan.os, "browser": scan.browser, "is_bot": bool(scan.is_bot),
        "referrer_host": scan.referrer_host, "id": scan.id,
    }


def _json_body() -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not request.is_json:
        raise UnsupportedMediaType("send a JSON body with Content-Type: application/json")
    data = request.get_data(cache=True)
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object, e.g. {\"destination\": \"https://example.com\"}",
                              code="invalid_json")
    return body


def _required_uuid(uuid: str | None) -> str:
    if not uuid:
        raise ValidationError("say which code: ?uuid=...", code="missing_uuid", field="uuid")
    return uuid


def _int_arg(name: str, *, minimum: int, maximum: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number", code="invalid_parameter", field=name) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValidationError(f"{name} must be {bound}", code="invalid_parameter", field=name)
    return value
