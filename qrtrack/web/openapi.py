"""The OpenAPI 3.1 description of /api.php, served at /api/openapi.json and rendered as the reference page."""
from __future__ import annotations

from typing import Any

from ..codes import CODE_TYPES, MAX_DESTINATION_LENGTH, MAX_LABEL_LENGTH, STATUSES
from ..store.schema import MAX_INTEGER

ALLOWED_METHODS = ("GET", "HEAD", "POST", "DELETE", "OPTIONS")
"""The methods /api.php answers, in the order Allow names them and the spec lists them."""

MAX_PAGE_SIZE = 1000
MAX_QUERY_INTEGER = MAX_INTEGER  # larger offsets and ids mean nothing to the database
_ERROR = {"$ref": "#/components/schemas/Error"}
_UUID_PARAM = {"name": "uuid", "in": "query", "schema": {"type": "string", "format": "uuid", "minLength": 1},
               "description": "The code's uuid. Without it: list (GET) or create (POST); empty, it is refused."}
# What validate_destination accepts, as far as a pattern can say it: http(s), a host, then no whitespace
# (as str.isspace() has it, spelt out: regex engines disagree on \s) and no control characters.
_SPACE_OR_CONTROL = r"\u0000-\u0020\u007f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NOT_SPACE_OR_CONTROL = f"[^{_SPACE_OR_CONTROL}]"
_H16 = "[0-9A-Fa-f]{1,4}"
_DEC_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = rf"({_H16}:{_H16}|{_DEC_OCTET}(\.{_DEC_OCTET}){{3}})"
# An IPv6 address, RFC 3986's IPv6address: eight groups, or "::" in one place standing for the missing ones, the
# last two groups possibly a dotted IPv4 address.
_IPV6 = "|".join([
    f"({_H16}:){{6}}{_LS32}",
    f"::({_H16}:){{5}}{_LS32}",
    *(f"(({_H16}:){{0,{before - 1}}}{_H16})?::({_H16}:){{{5 - before}}}{_LS32}" for before in range(1, 5)),
    f"(({_H16}:){{0,4}}{_H16})?::{_LS32}",
    f"(({_H16}:){{0,5}}{_H16})?::{_H16}",
    f"(({_H16}:){{0,6}}{_H16})?::",
])
_PORT = "0*([0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# Characters Python's URL parser refuses in a host or user info because NFKC turns them into one of /?#@:
# (fullwidth solidus, small commercial at, ...): all of them, as tests/web/test_api_schema.py checks.
NFKC_DELIMITERS = (r"\u2047-\u2049\u2100\u2101\u2105\u2106\u2a74\ufe13\ufe16\ufe55\ufe56\ufe5f\ufe6b"
                   r"\uff03\uff0f\uff1a\uff1f\uff20")
_NOT_IN_USER_INFO = rf"{_SPACE_OR_CONTROL}{NFKC_DELIMITERS}/?#\[\]"
# A host's label: not empty, and none of the characters the URL Standard forbids in a host (destinations.py).
_LABEL = rf"[^{_NOT_IN_USER_INFO}@:.<>\\^|]+"
# The authority: optional user info (up to its last @), then a host (a name of labels between dots, IDN ones too,
# or a bracketed IPv6 address), then a port up to 65535.
_AUTHORITY = rf"([^{_NOT_IN_USER_INFO}]+@)?(\[({_IPV6})\]|{_LABEL}(\.{_LABEL})*\.?)(:{_PORT})?"
DESTINATION_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://{_AUTHORITY}([/?#]{_NOT_SPACE_OR_CONTROL}*)?$"
# The control characters validate_label refuses (those str.split() does not count as whitespace).
LABEL_PATTERN = r"^[^\u0000-\u0008\u000e-\u001b\u007f-\u0084\u0086-\u009f]*$"
RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {"description": "Requests allowed per window for this key.",
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in this window.", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "When the window ends, in epoch seconds.", "schema": {"type": "integer"}},
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "headers": RATE_LIMIT_HEADERS,
            "content": {"application/json": {"schema": _ERROR}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "headers": RATE_LIMIT_HEADERS,
            "content": {"application/json": {"schema": schema}}}


def _without_body(response: dict[str, Any]) -> dict[str, Any]:
    """A GET response as HEAD answers it: the same status and headers, no body."""
    return {key: value for key, value in response.items() if key != "content"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


ERROR_RESPONSES = {
    "400": _error_response("Malformed JSON, an invalid field or parameter."),
    "401": _error_response("Missing, unknown or revoked API key, or its user is disabled."),
    "404": _error_response("No such code among this key's owner's codes."),
    "413": _error_response("Request body larger than 64 KiB."),
    "415": _error_response("Body is not JSON (send Content-Type: application/json)."),
    "429": {"description": "Rate limit exceeded; retry after Retry-After seconds.",
            "headers": {**RATE_LIMIT_HEADERS,
                        "Retry-After": {"description": "Seconds to wait.", "required": True,
                                        "schema": {"type": "integer", "minimum": 0}}},
            "content": {"application/json": {"schema": _ERROR}}},
    "503": {"description": "The rate-limit counters (code rate_limit_unavailable) or the database (code "
                           "database_unavailable) cannot take the request right now; retry after Retry-After seconds.",
            "headers": {**RATE_LIMIT_HEADERS,
                        "Retry-After": {"description": "Seconds to wait.", "required": True,
                                        "schema": {"type": "integer", "minimum": 0}}},
            "content": {"application/json": {"schema": _ERROR}}},
}

_WITHOUT_BODY_ERRORS = {  # what a call without a request body can be refused with: no JSON to be malformed
    "400": _error_response("An invalid query parameter, or an empty or missing uuid where one is needed."),
    **{k: ERROR_RESPONSES[k] for k in ("401", "404", "429", "503")},
}

_DESTINATION = {"type": "string", "minLength": 1, "maxLength": MAX_DESTINATION_LENGTH,
                "pattern": DESTINATION_PATTERN, "examples": ["https://example.com/my-page"],
                "description": ("An absolute http or https URL with a host a browser can open (internationalised ones "
                                "too: a scan is sent to their ASCII form, as browsers write it); no spaces or "
                                "control characters.")}
_LABEL = {"type": ["string", "null"], "maxLength": MAX_LABEL_LENGTH, "pattern": LABEL_PATTERN,
          "description": "Free text, stored as sent apart from runs of whitespace; null means no label."}
_TYPE = {"enum": [*CODE_TYPES, None], "default": "url", "description": "Only url codes exist; null means url."}
_STATUS = {"type": "string", "enum": list(STATUSES), "description": "paused and archived codes answer scans with 410."}

_CODE_PROPERTIES: dict[str, Any] = {
    "uuid": {"type": "string", "format": "uuid"},
    "type": {"type": "string", "enum": list(CODE_TYPES)},
    "destination": {"type": "string"},
    "created_at": {"type": "string", "format": "date-time", "examples": ["2026-04-15T18:24:11Z"]},
    "logo": {"type": ["string", "null"], "format": "uri"},
    "label": {"type": "string"},
    "status": {"type": "string", "enum": list(STATUSES)},
    "slug": {"type": "string"},
    "short_url": {"type": "string", "format": "uri"},
    "qr_image_url": {"type": "string", "format": "uri"},
    "updated_at": {"type": "string", "format": "date-time"},
}
_CODE_REQUIRED = ["uuid", "type", "destination", "scans", "created_at", "logo", "label", "status", "slug",
                  "short_url", "qr_image_url", "updated_at"]

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "examples": ["invalid_destination"]},
            "message": {"type": "string"},
            "field": {"type": "string"}}}},
    },
    "CodeSummary": {
        "type": "object", "required": _CODE_REQUIRED,
        "properties": {**_CODE_PROPERTIES,
                       "scans": {"type": "integer", "minimum": 0, "description": "Number of scans."}},
    },
    "Scan": {
        "type": "object", "required": ["timestamp", "city", "country", "device"],
        "properties": {
            "timestamp": {"type": "string", "format": "date-time"},
            "city": {"type": "string", "description": "Empty when unknown."},
            "country": {"type": "string", "description": "ISO 3166 alpha-2; empty when unknown."},
            "device": {"type": "string", "examples": ["iPhone", "Android", "Windows PC", "Bot"]},
            "os": {"type": "string"}, "browser": {"type": "string"}, "is_bot": {"type": "boolean"},
            "referrer_host": {"type": ["string", "null"]}, "id": {"type": "integer"},
        },
    },
    "CodeDetail": {
        "type": "object", "required": [*_CODE_REQUIRED, "scan_count", "scans_total", "next_before"],
        "properties": {
            **_CODE_PROPERTIES,
            "scans": {"type": "array", "items": _ref("Scan"),
                      "description": "The scan log, newest first (one page of ?limit=, default 100)."},
            "scan_count": {"type": "integer", "minimum": 0, "description": "Number of scans."},
            "scans_total": {"type": "integer", "minimum": 0, "description": "Number of entries in the log."},
            "next_before": {"type": ["integer", "null"],
                            "description": "Pass as ?before= for the next, older page; null on the last."}},
    },
    "CodeList": {
        "type": "object", "required": ["codes", "total", "limit", "offset"],
        "properties": {"codes": {"type": "array", "items": _ref("CodeSummary")},
                       "total": {"type": "integer", "minimum": 0,
                                 "description": "Codes matching the filters, on every page."},
                       "limit": {"type": ["integer", "null"]}, "offset": {"type": "integer", "minimum": 0}},
    },
    "CreateCode": {
        "type": "object", "required": ["destination"],
        "description": "Fields other than these are ignored.",
        "properties": {"type": _TYPE, "destination": _DESTINATION, "label": _LABEL,
                       "status": {**_STATUS, "default": "active"}},
    },
    "UpdateCode": {
        "type": "object", "minProperties": 1, "additionalProperties": False,
        "properties": {"destination": _DESTINATION, "label": _LABEL, "status": _STATUS, "type": _TYPE},
    },
    "Deleted": {"type": "object", "required": ["uuid", "deleted"],
                "properties": {"uuid": {"type": "string", "format": "uuid"}, "deleted": {"type": "boolean"}}},
}

LIST_PARAMETERS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
     "description": "Page size for the list (default: all), or of the scan log with uuid (default 100)."},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INTEGER},
     "description": "Codes to skip, for the list."},
    {"name": "label", "in": "query", "schema": {"type": "string"},
     "description": ("Only codes whose label or destination contains this text, in any case, or whose slug "
                     "is exactly this text.")},
    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)},
     "description": "Only codes with this status (default: active and paused)."},
    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_QUERY_INTEGER},
     "description": ("With uuid: scans older than this scan (next_before of the previous page); an id that is not "
                     "a scan of this code is refused with 400.")},
]


_ALLOW_HEADER = {"description": "The methods this path answers.", "required": True,
                 "schema": {"type": "string", "examples": [", ".join(ALLOWED_METHODS)]}}
_LIST_OR_GET: dict[str, Any] = {
    "operationId": "listOrGetCodes", "summary": "List codes, or get one with its scan log",
    "parameters": [_UUID_PARAM, *LIST_PARAMETERS],
    "responses": {"200": _json({"anyOf": [_ref("CodeList"), _ref("CodeDetail")]}, "The list, or the code with ?uuid="),
                  **_WITHOUT_BODY_ERRORS},
}


def openapi_document(*, server_url: str) -> dict[str, Any]:
    """The spec, with the server URL of the install answering."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "QR Track API", "version": "1.0.0",
                 "description": "Create, list, read, retarget and delete dynamic QR codes. Every call except "
                                "OPTIONS needs an X-Api-Key header; keys are made in Settings → API Keys. "
                                "HEAD answers as GET without the body; OPTIONS answers 204 with Allow."},
        "servers": [{"url": server_url}],
        "security": [{"ApiKey": []}],
        "paths": {"/api.php": {
            "get": _LIST_OR_GET,
            "head": {"operationId": "headCodes", "summary": "The status and headers GET would answer, without the body",
                     "parameters": _LIST_OR_GET["parameters"],
                     "responses": {status: _without_body(response)
                                   for status, response in _LIST_OR_GET["responses"].items()}},
            "post": {"operationId": "createOrUpdateCode", "summary": "Create a code, or update one with ?uuid=",
                     "parameters": [_UUID_PARAM],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "anyOf": [_ref("CreateCode"), _ref("UpdateCode")]}}},
                                     "description": "CreateCode without ?uuid=, UpdateCode with it."},
                     "responses": {"201": _json(_ref("CodeSummary"), "Created"),
                                   "200": _json(_ref("CodeSummary"), "Updated"),
                                   **ERROR_RESPONSES}},
            "delete": {"operationId": "deleteCode", "summary": "Delete a code and its scan log",
                       "parameters": [{**_UUID_PARAM, "required": True}],
                       "responses": {"200": _json(_ref("Deleted"), "Deleted"),
                                     **_WITHOUT_BODY_ERRORS}},
            "options": {"operationId": "apiOptions", "summary": "The methods /api.php answers",
                        "security": [],
                        "responses": {"204": {"description": "No body; Allow names the methods.",
                                              "headers": {**RATE_LIMIT_HEADERS, "Allow": _ALLOW_HEADER}},
                                      **{k: ERROR_RESPONSES[k] for k in ("429", "503")}}},
        }},
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}}},
    }
