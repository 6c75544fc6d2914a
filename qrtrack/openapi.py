"""The OpenAPI 3.1 description of /api.php, served at /api/openapi.json and rendered as the reference page."""
from __future__ import annotations

from typing import Any

from .codes import MAX_DESTINATION_LENGTH, MAX_LABEL_LENGTH, STATUSES

_ERROR = {"$ref": "#/components/schemas/Error"}
_UUID_PARAM = {"name": "uuid", "in": "query", "schema": {"type": "string", "format": "uuid"},
               "description": "The code's uuid. Without it: list (GET) or create (POST)."}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR_RESPONSES = {
    "400": _error_response("Malformed JSON, an invalid field or parameter."),
    "401": _error_response("Missing, unknown or revoked API key."),
    "404": _error_response("No such code among this key's owner's codes."),
    "413": _error_response("Request body larger than 64 KiB."),
    "415": _error_response("Body is not JSON (send Content-Type: application/json)."),
    "429": {"description": "Rate limit exceeded; retry after Retry-After seconds.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": _ERROR}}},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "examples": ["invalid_destination"]},
            "message": {"type": "string"},
            "field": {"type": "string"}}}},
    },
    "CodeSummary": {
        "type": "object",
        "required": ["uuid", "type", "destination", "scans", "created_at", "logo", "label", "status", "slug",
                     "short_url", "qr_image_url", "updated_at"],
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "type": {"type": "string", "enum": ["url"]},
            "destination": {"type": "string", "format": "uri", "maxLength": MAX_DESTINATION_LENGTH},
            "scans": {"type": "integer", "minimum": 0, "description": "Number of scans."},
            "created_at": {"type": "string", "format": "date-time", "examples": ["2026-04-15T18:24:11Z"]},
            "logo": {"type": ["string", "null"], "format": "uri"},
            "label": {"type": "string", "maxLength": MAX_LABEL_LENGTH},
            "status": {"type": "string", "enum": list(STATUSES)},
            "slug": {"type": "string"},
            "short_url": {"type": "string", "format": "uri"},
            "qr_image_url": {"type": "string", "format": "uri"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
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
        "allOf": [{"$ref": "#/components/schemas/CodeSummary"}, {
            "type": "object", "required": ["scans", "scan_count", "scans_total", "next_before"],
            "properties": {
                "scans": {"type": "array", "items": {"$ref": "#/components/schemas/Scan"},
                          "description": "The scan log, newest first (one page)."},
                "scan_count": {"type": "integer"}, "scans_total": {"type": "integer"},
                "next_before": {"type": ["integer", "null"],
                                "description": "Pass as ?before= for the next, older page; null on the last."}}}],
    },
    "CodeList": {
        "type": "object", "required": ["codes", "total"],
        "properties": {"codes": {"type": "array", "items": {"$ref": "#/components/schemas/CodeSummary"}},
                       "total": {"type": "integer"}, "limit": {"type": ["integer", "null"]},
                       "offset": {"type": "integer"}},
    },
    "CreateCode": {
        "type": "object", "required": ["destination"],
        "properties": {"type": {"type": "string", "enum": ["url"], "default": "url"},
                       "destination": {"type": "string", "format": "uri", "maxLength": MAX_DESTINATION_LENGTH},
                       "label": {"type": "string", "maxLength": MAX_LABEL_LENGTH}},
    },
    "UpdateCode": {
        "type": "object", "minProperties": 1, "additionalProperties": False,
        "properties": {"destination": {"type": "string", "format": "uri", "maxLength": MAX_DESTINATION_LENGTH},
                       "label": {"type": "string", "maxLength": MAX_LABEL_LENGTH},
                       "status": {"type": "string", "enum": list(STATUSES)},
                       "type": {"type": "string", "enum": ["url"]}},
    },
    "Deleted": {"type": "object", "required": ["uuid", "deleted"],
                "properties": {"uuid": {"type": "string"}, "deleted": {"type": "boolean"}}},
}

LIST_PARAMETERS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
     "description": "Page size for the list, or of the scan log with uuid (default 100 there)."},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "label", "in": "query", "schema": {"type": "string"},
     "description": "Only codes whose label or destination contains this text."},
    {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)},
     "description": "Only codes with this status (default: active and paused)."},
    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1},
     "description": "With uuid: scans older than this scan id (next_before of the previous page)."},
]


def openapi_document(*, server_url: str) -> dict[str, Any]:
    """The spec, with the server URL of the install answering."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "QR Track API", "version": "1.0.0",
                 "description": "Create, list, read, retarget and delete dynamic QR codes. Every call needs an "
                                "X-Api-Key header; keys are made in Settings → API Keys."},
        "servers": [{"url": server_url}],
        "security": [{"ApiKey": []}],
        "paths": {"/api.php": {
            "get": {"operationId": "listOrGetCodes", "summary": "List codes, or get one with its scan log",
                    "parameters": [_UUID_PARAM, *LIST_PARAMETERS],
                    "responses": {"200": _json({"oneOf": [{"$ref": "#/components/schemas/CodeList"},
                                                          {"$ref": "#/components/schemas/CodeDetail"}]},
                                               "The list, or the code with ?uuid="),
                                  **{k: ERROR_RESPONSES[k] for k in ("400", "401", "404", "429")}}},
            "post": {"operationId": "createOrUpdateCode", "summary": "Create a code, or update one with ?uuid=",
                     "parameters": [_UUID_PARAM],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "oneOf": [{"$ref": "#/components/schemas/CreateCode"},
                                   {"$ref": "#/components/schemas/UpdateCode"}]}}}},
                     "responses": {"201": _json({"$ref": "#/components/schemas/CodeSummary"}, "Created"),
                                   "200": _json({"$ref": "#/components/schemas/CodeSummary"}, "Updated"),
                                   **ERROR_RESPONSES}},
            "delete": {"operationId": "deleteCode", "summary": "Delete a code and its scan log",
                       "parameters": [{**_UUID_PARAM, "required": True}],
                       "responses": {"200": _json({"$ref": "#/components/schemas/Deleted"}, "Deleted"),
                                     **{k: ERROR_RESPONSES[k] for k in ("400", "401", "404", "429")}}},
        }},
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}}},
    }
