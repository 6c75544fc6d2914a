"""Blueprint for the REST API at /api.php (the seed contract plus additions) and /api/openapi.json."""
from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import Row
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import MethodNotAllowed

from .. import codes, keys, links
from ..clock import isoformat_utc, now_epoch
from ..errors import PayloadTooLarge, QrTrackError, UnsupportedMediaType, ValidationError
from .context import CONSOLE_PRINCIPAL_ENVIRON_KEY, public_base_url, services
from .error_responses import handle_http_exception
from .openapi import ALLOWED_METHODS, MAX_PAGE_SIZE, MAX_QUERY_INTEGER, openapi_document

bp = Blueprint("api", __name__)
log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
DEFAULT_SCAN_PAGE = 100
WRONG_METHODS = ("PUT", "PATCH")  # the mistakes clients make; answered 405 and logged like other calls
INTEGER_ARG = re.compile(r"[+-]?[0-9]{1,25}")
# The secret part of anything shaped like one of our keys, wherever a client put it (?api_key=, even
# percent-encoded), never reaches the call log.
KEY_SECRET = re.compile(f"[0-9A-Fa-f]{{{2 * keys.KEY_RANDOM_BYTES},}}")
SECONDS_PER_DAY = 86400
TIMES_OF_MINUTES = tuple(f"T{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60))
SECOND_SUFFIXES = tuple(f"{second:02d}Z" for second in range(60))


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
    started = g.get("api_started")  # none when the rate limit refused the call before start_timer ran
    elapsed_ms = round((time.perf_counter() - started) * 1000) if started is not None else 0
    source = "console" if request.environ.get(CONSOLE_PRINCIPAL_ENVIRON_KEY) else "api"
    try:
        keys.record_api_call(services().db, {
            "user_id": principal.user_id, "key_id": principal.key_id, "key_name": principal.key_name,
            "ts": now_epoch(), "method": request.method, "path": logged_path()[:300],
            "status": status, "duration_ms": elapsed_ms, "source": source})
    except SQLAlchemyError:
        log.exception("could not log an API call; the call itself went through")


def logged_path() -> str:
    """The path and query string as the call log keeps them: anything shaped like an API key is masked."""
    return KEY_SECRET.sub("[redacted]", request.full_path.rstrip("?"))


def _methods_answer() -> Response:
    """204 with Allow, and no Content-Type, as there is no content (Flask would call it text/html)."""
    response = Response(status=204, headers={"Allow": ", ".join(ALLOWED_METHODS)})
    del response.headers["Content-Type"]
    return response


@bp.route("/api.php", methods=[*ALLOWED_METHODS, *WRONG_METHODS], provide_automatic_options=False)
def api_endpoint():
    """HEAD is GET without the body (Flask routes it here with request.method "HEAD", and drops the body)."""
    if request.method in WRONG_METHODS:
        raise wrong_method()
    if request.method == "OPTIONS":
        return _methods_answer()
    principal = current_principal()
    uuid = request.args.get("uuid")
    if uuid is not None or request.method == "DELETE":
        _required_uuid(uuid)  # ?uuid= with no value names no code, whatever the method
    if request.method in ("GET", "HEAD"):
        page = _page_args()
        return jsonify(get_code(principal, uuid, page)) if uuid is not None else list_codes(principal, page)
    if request.method == "DELETE":
        return jsonify(delete_code(principal, uuid))
    body = _json_body()
    if uuid is None:
        return jsonify(create_code(principal, body)), 201
    return jsonify(update_code(principal, uuid, body))


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(openapi_document(server_url=public_base_url()))


@dataclass(frozen=True)
class PageArgs:
    """The GET query parameters, all checked whichever page is asked for, so a bad value never passes silently."""

    limit: int | None
    offset: int
    before: int | None
    status: str | None
    label: str | None


def _page_args() -> PageArgs:
    status = request.args.get("status")
    return PageArgs(limit=_int_arg("limit", minimum=1, maximum=MAX_PAGE_SIZE),
                    offset=_int_arg("offset", minimum=0, maximum=MAX_QUERY_INTEGER) or 0,
                    before=_int_arg("before", minimum=1, maximum=MAX_QUERY_INTEGER),
                    status=None if status is None else codes.validate_status(status),
                    label=request.args.get("label"))


def wrong_method() -> MethodNotAllowed:
    """The 405 for PUT and PATCH, made after looking at the key so that a keyed call lands in the call log.

    Routed here rather than left to Flask so that it counts against the same rate limit as every other call.
    """
    try:
        current_principal()
    except QrTrackError:
        pass
    return MethodNotAllowed(valid_methods=ALLOWED_METHODS)


@bp.app_errorhandler(MethodNotAllowed)
def method_not_allowed(error: MethodNotAllowed) -> Response:
    """Any 405. For /api.php, Allow names the methods it answers: a method no route takes (TRACE) got werkzeug's
    list of the routed ones, which holds the PUT and PATCH routed only to be refused."""
    if request.url_rule is None and request.path == "/api.php":
        error = MethodNotAllowed(valid_methods=ALLOWED_METHODS)
    return handle_http_exception(error)


def list_codes(principal: keys.ApiPrincipal, page: PageArgs) -> Response:
    statuses = (page.status,) if page.status else codes.LISTED_STATUSES
    rows, total = codes.list_code_summaries(services().db, owner_id=principal.user_id, search=page.label,
                                            statuses=statuses, limit=page.limit, offset=page.offset)
    limit = "null" if page.limit is None else page.limit
    return Response(f'{{"codes":{code_list_json(rows, public_base_url())},"total":{total},"limit":{limit},'
                    f'"offset":{page.offset}}}\n', mimetype="application/json")


def get_code(principal: keys.ApiPrincipal, uuid: str, page: PageArgs) -> dict[str, Any]:
    code = codes.get_code(services().db, owner_id=principal.user_id, uuid=uuid)
    limit = page.limit or DEFAULT_SCAN_PAGE
    # One row more than asked for tells whether an older page exists, so next_before is null on the last.
    rows = codes.scan_log(services().db, code_id=code.id, limit=limit + 1, before_id=page.before)
    total = int(code.scan_count)
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return {**code_summary(code), "scans": [scan_entry(row) for row in rows[:limit]], "scan_count": code.scan_count,
            "scans_total": total, "next_before": next_before}


def create_code(principal: keys.ApiPrincipal, body: dict[str, Any]) -> dict[str, Any]:
    code = codes.create_code(services().db, owner_id=principal.user_id, destination=body.get("destination"),
                             label=body.get("label"), code_type=body.get("type"), status=body.get("status", "active"),
                             logo_dir=services().logo_dir)
    return code_summary(code)


def update_code(principal: keys.ApiPrincipal, uuid: str, body: dict[str, Any]) -> dict[str, Any]:
    unknown = set(body) - {"destination", "label", "status", "type"}
    if unknown:
        raise ValidationError(f"cannot change: {', '.join(sorted(unknown))}", code="invalid_field")
    if not body:
        raise ValidationError("nothing to change: send destination, label or status", code="invalid_field")
    if "type" in body:
        codes.validate_type(body["type"])
    # null clears the label; destination and status have no "empty", so null is refused for them.
    if "destination" in body and body["destination"] is None:
        codes.validate_destination(None)
    if "status" in body and body["status"] is None:
        codes.validate_status(None)
    label = "" if "label" in body and body["label"] is None else body.get("label")
    changes = codes.CodeChanges(destination=body.get("destination"), label=label, status=body.get("status"))
    code = codes.update_code(services().db, owner_id=principal.user_id, uuid=uuid, changes=changes,
                             logo_dir=services().logo_dir, images=services().images, site_base_url=public_base_url())
    return code_summary(code)


def delete_code(principal: keys.ApiPrincipal, uuid: str) -> dict[str, Any]:
    code = codes.delete_code(services().db, owner_id=principal.user_id, uuid=uuid, logo_dir=services().logo_dir,
                             images=services().images)
    return {"uuid": code.uuid, "deleted": True}


def code_summary(code: Row) -> dict[str, Any]:
    """A code as the list shows it; the seed's fields first, with their seed types."""
    base_url = public_base_url()
    return {
        "uuid": code.uuid, "type": code.type, "destination": code.destination, "scans": int(code.scan_count),
        "created_at": isoformat_utc(code.created_at),
        "logo": links.logo_url(base_url, code.logo) if code.logo else None,
        "label": code.label, "status": code.status, "slug": code.slug,
        "short_url": links.short_url(base_url, code.slug), "qr_image_url": links.qr_image_url(base_url, code.slug),
        "updated_at": isoformat_utc(code.updated_at),
    }


def code_list_json(rows: Iterable[Sequence[Any]], base_url: str) -> str:
    """The JSON array jsonify would make of code_summary() for each row (values of store.CODE_SUMMARY_COLUMNS).

    Written as text rather than through a dict per code and json.dumps, which took most of a list's time:
    a list of 10,000 codes may take at most twice as long as json.dumps of it (issue 6). Strings are escaped
    by the json module's own ASCII-only encoder, as jsonify does; escaping goes character by character, so
    escaped pieces join into the escaped whole. tests/web/test_api_list.py holds the bytes to jsonify's.

    The URLs repeat the shapes of links.short_url, qr_image_url and logo_url rather than call them: two calls
    a row cost about 7% of a 10,000-code list. The test comparing with code_summary, which calls them, keeps
    the two in step.
    """
    json_string, stamps = encode_basestring_ascii, IsoTimestamps()
    base = json_string(base_url)[:-1]  # an open JSON string that each URL completes
    items = []
    for uuid, code_type, destination, scans, created_at, logo, label, status, slug, updated_at in rows:
        slug_text = json_string(slug)[1:-1]
        logo_url = f'{base}/logo/{json_string(logo)[1:-1]}.png"' if logo else "null"
        items.append(
            f'{{"uuid":{json_string(uuid)},"type":{json_string(code_type)},"destination":{json_string(destination)},'
            f'"scans":{int(scans)},"created_at":"{stamps[created_at]}","logo":{logo_url},"label":{json_string(label)},'
            f'"status":{json_string(status)},"slug":"{slug_text}","short_url":{base}/p/{slug_text}",'
            f'"qr_image_url":{base}/img/{slug_text}.png","updated_at":"{stamps[updated_at]}"}}')
    return f"[{','.join(items)}]"


class IsoTimestamps(dict):
    """isoformat_utc(epoch) for a list's many timestamps, looked up as timestamps[epoch].

    strftime took a third of a list's time: here each epoch second is worked out once (codes made in bulk
    share them), each day's date once, and the time of day comes from tables. Without the tables a list of
    10,000 codes made at different times takes 1.54× as long, 1.50× json.dumps (bench/run.py devices).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dates: dict[int, str] = {}

    def __missing__(self, epoch: int) -> str:
        day, second_of_day = divmod(epoch, SECONDS_PER_DAY)
        date = self.dates.get(day)
        if date is None:
            date = self.dates[day] = isoformat_utc(day * SECONDS_PER_DAY)[:10]
        minute, second = divmod(second_of_day, 60)
        self[epoch] = formatted = date + TIMES_OF_MINUTES[minute] + SECOND_SUFFIXES[second]
        return formatted


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
    try:
        # Decoded here: json.loads would also take UTF-16 and UTF-32 bytes, which RFC 8259 leaves out. A UTF-8
        # byte order mark is let pass, as the RFC allows and some clients send one.
        body = json.loads(data.decode("utf-8-sig"), parse_constant=_refuse_constant)
        # Lone surrogates (JSON "\ud800") parse, but no database can store them.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as error:
        raise ValidationError(f"the body is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
                              code="invalid_json") from None
    except UnicodeDecodeError as error:
        raise ValidationError(f"the body is not UTF-8: byte {error.start + 1} cannot start or continue a character",
                              code="invalid_json") from None
    except UnicodeEncodeError:
        raise ValidationError("the body holds text with a lone surrogate (such as \\ud800), which is no character",
                              code="invalid_json") from None
    except RecursionError:
        raise ValidationError("the body nests objects and arrays more deeply than this API reads",
                              code="invalid_json") from None
    except ValueError:  # what is left: a number past Python's 4,300 digits
        raise ValidationError("the body holds a number with more digits than this API reads",
                              code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object, e.g. {\"destination\": \"https://example.com\"}",
                              code="invalid_json")
    return body


def _refuse_constant(name: str) -> None:
    """NaN and Infinity, which Python's json reads but JSON does not have."""
    raise ValidationError(f"the body is not valid JSON: {name} is not a JSON value", code="invalid_json")


def _required_uuid(uuid: str | None) -> str:
    if not uuid:
        raise ValidationError("say which code: ?uuid=...", code="missing_uuid", field="uuid")
    return uuid


def _int_arg(name: str, *, minimum: int, maximum: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if not INTEGER_ARG.fullmatch(raw):
        raise ValidationError(f"{name} must be a whole number", code="invalid_parameter", field=name)
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValidationError(f"{name} must be {bound}", code="invalid_parameter", field=name)
    return value
