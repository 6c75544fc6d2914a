"""Dashboard Live Console: runs an API call for the signed-in user with one of their keys, chosen by id.

The browser never holds a key. It posts {key_id, method, query, body}; the server checks the key belongs to
the user and is live, then dispatches the call into this same app as a request to /api.php carrying the
key's principal in the WSGI environ (web.CONSOLE_PRINCIPAL_ENVIRON_KEY). So the call goes through the real
API stack: the same validation, the same per-key rate limit and the same call log.
"""
from __future__ import annotations

import contextvars
import json
import time
from dataclasses import dataclass
from typing import Any

from flask import current_app, jsonify, render_template, request
from flask_login import current_user, login_required
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.test import Client

from ... import keys
from ...errors import Unauthorized, ValidationError, error_body
from ...store.schema import MAX_INTEGER
from ..context import CONSOLE_PRINCIPAL_ENVIRON_KEY, services
from . import bp

CONSOLE_METHODS = ("GET", "POST", "DELETE")
MAX_QUERY_LENGTH = 1000
# Above the API's own 64 KiB, so an oversized body reaches the API and the console shows its 413.
MAX_CONSOLE_BODY_BYTES = 128 * 1024
MAX_SHOWN_BODY_CHARS = 200_000
HISTORY_LENGTH = 20
LONE_SURROGATE = "holds a lone surrogate (such as \\ud800), which is no character"
# Response headers the console does not pass on to the browser.
HIDDEN_RESPONSE_HEADERS = {"set-cookie"}


@dataclass(frozen=True)
class ConsoleCall:
    """One call as the console form describes it."""

    key_id: int
    method: str
    query: str
    body: str


@dataclass(frozen=True)
class ConsoleOperation:
    """An entry of the console's endpoint menu: an API operation and the example the form starts from."""

    name: str
    title: str
    method: str
    needs_uuid: bool
    example_body: dict[str, Any] | None = None
    example_query: str = ""

    @property
    def example_json(self) -> str:
        """The example body in the order written here (the tojson filter would sort its keys)."""
        return json.dumps(self.example_body) if self.example_body is not None else ""


OPERATIONS = (
    ConsoleOperation("list", "List codes", "GET", needs_uuid=False, example_query="limit=20"),
    ConsoleOperation("get", "Get one code with its scans", "GET", needs_uuid=True, example_query="limit=10"),
    ConsoleOperation("create", "Create a code", "POST", needs_uuid=False,
                     example_body={"type": "url", "destination": "https://example.com/my-page",
                                   "label": "Summer promo"}),
    ConsoleOperation("update", "Update a code", "POST", needs_uuid=True,
                     example_body={"destination": "https://example.com/new-destination"}),
    ConsoleOperation("delete", "Delete a code", "DELETE", needs_uuid=True),
)


@bp.get("/console")
@login_required
def console():
    db = services().db
    live_keys = [key for key in keys.list_api_keys(db, user_id=current_user.user_id) if key.revoked_at is None]
    calls = keys.list_recent_api_calls(db, user_id=current_user.user_id, limit=HISTORY_LENGTH)
    return render_template("dashboard/settings/console.html", keys=live_keys, operations=OPERATIONS, calls=calls)


@bp.get("/console/history")
@login_required
def console_history():
    """The call history table alone, which the console reloads after each call."""
    calls = keys.list_recent_api_calls(services().db, user_id=current_user.user_id, limit=HISTORY_LENGTH)
    return render_template("dashboard/settings/_call_history.html", calls=calls)


@bp.post("/console/send")
@login_required
def console_send():
    """Run one API call; answers {status, headers, body, duration_ms} describing the API's response."""
    try:
        call = parse_console_call(request.get_json(silent=True))
    except ValidationError as error:
        return jsonify(error_body(error.code, error.message, field=error.field)), 400
    try:
        principal = keys.authenticate_key_id(services().db, key_id=call.key_id, user_id=current_user.user_id)
    except Unauthorized as error:
        # What /api.php answers for a revoked key, so the console shows the refusal the API would give.
        return jsonify(_result(401, [("Content-Type", "application/json")],
                               json.dumps(error_body(error.code, error.message), indent=2), 0))
    return jsonify(dispatch_api_call(call, principal))


def parse_console_call(payload: Any) -> ConsoleCall:
    """The call the browser asks for; ValidationError when it is not one the console makes."""
    if not isinstance(payload, dict):
        raise ValidationError("send a JSON object: {key_id, method, query, body}", code="invalid_json")
    key_id = _parse_key_id(payload.get("key_id"))
    method = str(payload.get("method", "")).upper()
    if method not in CONSOLE_METHODS:
        raise ValidationError(f"method must be one of {', '.join(CONSOLE_METHODS)}", code="invalid_method",
                              field="method")
    query = str(payload.get("query") or "").lstrip("?")
    if len(query) > MAX_QUERY_LENGTH or any(ord(ch) < 32 for ch in query):
        raise ValidationError("the query string is too long or has control characters", code="invalid_query",
                              field="query")
    if not _is_text(query):
        raise ValidationError(f"the query string {LONE_SURROGATE}", code="invalid_query", field="query")
    body = payload.get("body") or ""
    if isinstance(body, str) and not _is_text(body):
        raise ValidationError(f"the body {LONE_SURROGATE}", code="invalid_body", field="body")
    if not isinstance(body, str) or len(body.encode("utf-8")) > MAX_CONSOLE_BODY_BYTES:
        raise ValidationError(f"the body must be text of at most {MAX_CONSOLE_BODY_BYTES:,} bytes",
                              code="invalid_body", field="body")
    return ConsoleCall(key_id=key_id, method=method, query=query, body=body if method == "POST" else "")


def _is_text(value: str) -> bool:
    """False for a string with a lone surrogate (JSON lets "\\ud800" through), which no bytes can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_key_id(value: Any) -> int:
    """A key id as a JSON number or a string of digits; ValidationError for anything no key can have."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_INTEGER:
        raise ValidationError("choose one of your API keys", code="invalid_key", field="key_id")
    return value


def dispatch_api_call(call: ConsoleCall, principal: keys.ApiPrincipal) -> dict[str, Any]:
    """Send the call through this app's WSGI stack as a request to /api.php, acting for principal."""
    client = Client(current_app.wsgi_app)
    options: dict[str, Any] = {
        "method": call.method, "base_url": request.url_root, "query_string": call.query,
        "environ_base": {"REMOTE_ADDR": request.remote_addr or "127.0.0.1"},
        "environ_overrides": {CONSOLE_PRINCIPAL_ENVIRON_KEY: principal},
    }
    if call.method == "POST":
        options.update(data=call.body.encode("utf-8"), content_type="application/json")
    started = time.perf_counter()
    # A fresh context, so the inner request gets its own app context and `g` instead of sharing ours.
    response = contextvars.Context().run(client.open, "/api.php", **options)
    duration_ms = int((time.perf_counter() - started) * 1000)
    text = response.get_data(as_text=True)
    response.close()
    headers = [(name, value) for name, value in response.headers.items()
               if name.lower() not in HIDDEN_RESPONSE_HEADERS]
    return _result(response.status_code, headers, _pretty_body(text, response.mimetype), duration_ms)


def _pretty_body(text: str, mimetype: str) -> str:
    if mimetype == "application/json":
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return text if len(text) <= MAX_SHOWN_BODY_CHARS else text[:MAX_SHOWN_BODY_CHARS] + "\n… (cut short)"


def _result(status: int, headers: list[tuple[str, str]], body: str, duration_ms: int) -> dict[str, Any]:
    return {"status": status, "status_text": HTTP_STATUS_CODES.get(status, ""), "headers": headers, "body": body,
            "duration_ms": duration_ms}

