"""Dashboard API reference: the OpenAPI description of /api.php turned into a page, with curl examples."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from flask import render_template, url_for
from flask_login import login_required

from ... import codes
from ...errors import ValidationError, error_body
from ..context import public_base_url, services
from ..openapi import openapi_document
from . import bp

REF_PREFIX = "#/components/schemas/"
# How a placeholder value looks for a schema format, in the generated request examples.
FORMAT_EXAMPLES = {"uri": "https://example.com/my-page", "uuid": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
                   "date-time": "2026-04-15T18:24:11Z"}
EXAMPLE_UUID = FORMAT_EXAMPLES["uuid"]


@dataclass(frozen=True)
class TypePart:
    """A piece of a type's description; ref names the schema it links to."""

    label: str
    ref: str | None = None


@dataclass
class Field:
    """A parameter or a schema property."""

    name: str
    type: list[TypePart]
    required: bool
    constraints: list[str]
    description: str = ""
    location: str = ""


@dataclass
class Response:
    status: str
    description: str
    type: list[TypePart]
    headers: list[str] = field(default_factory=list)

    @property
    def is_error(self) -> bool:
        return not self.status.startswith("2")


@dataclass
class DocumentedOperation:
    """One method of one path, as the reference page documents it."""

    method: str
    path: str
    summary: str
    anchor: str
    parameters: list[Field]
    request_type: list[TypePart]
    request_description: str
    responses: list[Response]
    curl_examples: list[tuple[str, str]]
    needs_key: bool


@dataclass
class Schema:
    name: str
    description: str
    composed_of: list[TypePart]
    properties: list[Field]


@dataclass
class Reference:
    title: str
    description: str
    version: str
    server_url: str
    auth_header: str
    operations: list[DocumentedOperation]
    schemas: list[Schema]
    errors: list[Response]
    common_headers: list[str]


@bp.get("/api-reference")
@login_required
def api_reference():
    document = openapi_document(server_url=public_base_url())
    return render_template("dashboard/settings/api_reference.html", ref=describe_document(document),
                           rate_limit=services().settings.API_RATE_LIMIT, spec_url=url_for("api.openapi_json"),
                           error_example=sample_error_body())


def sample_error_body() -> str:
    """A real error body, from the check the API runs on a destination without a scheme."""
    try:
        codes.validate_destination("example.com/no-scheme")
    except ValidationError as error:
        return json.dumps(error_body(error.code, error.message, field=error.field), indent=2)
    return json.dumps(error_body("invalid_request", "the request is not valid"), indent=2)


def describe_document(document: dict[str, Any]) -> Reference:
    """What the reference page shows, read out of an OpenAPI 3.1 document."""
    schemas = document.get("components", {}).get("schemas", {})
    server_url = document["servers"][0]["url"]
    auth_header = next(iter(document["components"]["securitySchemes"].values()))["name"]
    operations = [describe_operation(path, method, spec, schemas=schemas, server_url=server_url,
                                     auth_header=auth_header, document_security=document.get("security", []))
                  for path, methods in document["paths"].items() for method, spec in methods.items()]
    errors = {r.status: r for op in operations for r in op.responses if r.is_error}
    responses = [r for op in operations for r in op.responses]
    common_headers = [h for h in responses[0].headers if all(h in r.headers for r in responses)] if responses else []
    for response in responses:
        response.headers = [h for h in response.headers if h not in common_headers]
    return Reference(
        title=document["info"]["title"], description=document["info"].get("description", ""),
        version=document["info"]["version"], server_url=server_url, auth_header=auth_header,
        operations=operations, schemas=[describe_schema(name, spec) for name, spec in schemas.items()],
        errors=[errors[status] for status in sorted(errors)], common_headers=common_headers)


def describe_operation(path: str, method: str, spec: dict[str, Any], *, schemas: dict[str, Any], server_url: str,
                       auth_header: str, document_security: list[dict[str, Any]]) -> DocumentedOperation:
    """An operation's own `security` overrides the document's; an empty one means it needs no key."""
    needs_key = bool(spec.get("security", document_security))
    parameters = [Field(name=p["name"], type=describe_type(p.get("schema", {})), required=bool(p.get("required")),
                        constraints=describe_constraints(p.get("schema", {})), description=p.get("description", ""),
                        location=p["in"]) for p in spec.get("parameters", [])]
    request_body = spec.get("requestBody", {})
    body_schema = request_body.get("content", {}).get("application/json", {}).get("schema")
    responses = [Response(status=status, description=r.get("description", ""), type=describe_type(_json_schema(r)),
                          headers=list(r.get("headers", {})))
                 for status, r in sorted(spec.get("responses", {}).items())]
    return DocumentedOperation(
        method=method.upper(), path=path, summary=spec.get("summary", ""), anchor=spec.get("operationId", method),
        parameters=parameters, request_type=describe_type(body_schema) if body_schema else [],
        request_description=request_body.get("description", ""), responses=responses,
        curl_examples=curl_examples(method.upper(), server_url + path, body_schema, schemas=schemas,
                                    auth_header=auth_header if needs_key else None),
        needs_key=needs_key)


def describe_schema(name: str, spec: dict[str, Any]) -> Schema:
    composed: list[TypePart] = []
    properties: dict[str, Any] = dict(spec.get("properties", {}))
    required = set(spec.get("required", []))
    for part in spec.get("allOf", []):
        if "$ref" in part:
            composed += describe_type(part)
        properties.update(part.get("properties", {}))
        required |= set(part.get("required", []))
    return Schema(name=name, description=spec.get("description", ""), composed_of=composed,
                  properties=describe_properties(properties, required))


def describe_properties(properties: dict[str, Any], required: set[str], prefix: str = "") -> list[Field]:
    """One row per property; an inline object's own properties follow it as parent.child rows."""
    fields = []
    for prop, sub in properties.items():
        fields.append(Field(name=prefix + prop, type=describe_type(sub), required=prop in required,
                            constraints=describe_constraints(sub), description=sub.get("description", "")))
        if "properties" in sub:
            fields += describe_properties(sub["properties"], set(sub.get("required", [])), f"{prefix}{prop}.")
    return fields


def describe_type(schema: dict[str, Any] | None) -> list[TypePart]:
    """'string (uri)', 'array of Scan', 'CodeList or CodeDetail', 'string | null' as linkable parts."""
    if not schema:
        return []
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(REF_PREFIX)
        return [TypePart(name, ref=name)]
    for combinator, joiner in (("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")):
        if combinator in schema:
            parts: list[TypePart] = []
            for index, option in enumerate(schema[combinator]):
                parts += ([TypePart(joiner)] if index else []) + describe_type(option)
            return parts
    kinds = schema.get("type") or _enum_types(schema.get("enum")) or "object"
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "array" in kinds:
        return [TypePart("array of ")] + (describe_type(schema.get("items")) or [TypePart("any")])
    if "format" in schema:
        kinds = [f"{kinds[0]} ({schema['format']})", *kinds[1:]]
    return [TypePart(" | ".join(kinds))]


def _enum_types(values: list[Any] | None) -> list[str]:
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    return list(dict.fromkeys(names.get(type(value), "string") for value in values or []))


def describe_constraints(schema: dict[str, Any]) -> list[str]:
    notes = []
    if "enum" in schema:
        notes.append("one of " + ", ".join(json.dumps(v) if v is None else str(v) for v in schema["enum"]))
    for key, label in (("minimum", "min"), ("maximum", "max"), ("minLength", "min length"),
                       ("maxLength", "max length"),
                       ("minProperties", "at least this many fields:")):
        # A bound past what any client meets (2**63 - 1 for a 64-bit id) is noise on the page.
        if key in schema and abs(schema[key]) < 2**53:
            notes.append(f"{label} {schema[key]}")
    if "default" in schema:
        notes.append(f"default {schema['default']}")
    if schema.get("additionalProperties") is False:
        notes.append("no other fields")
    if schema.get("examples"):
        notes.append(f"e.g. {schema['examples'][0]}")
    return notes


def example_value(schema: dict[str, Any], *, schemas: dict[str, Any], name: str = "value") -> Any:
    """A plausible value for a schema: its example, default or first enum value, else a placeholder."""
    if "$ref" in schema:
        return example_value(schemas[schema["$ref"].removeprefix(REF_PREFIX)], schemas=schemas, name=name)
    for key in ("examples", "enum"):
        if schema.get(key):
            return schema[key][0]
    if "default" in schema:
        return schema["default"]
    if "properties" in schema:
        # Required fields, or the first one when none is; all of them when there are only a few.
        names = list(schema["properties"])
        chosen = names if len(names) <= 3 else [n for n in names if n in schema.get("required", [])] or names[:1]
        return {name: example_value(schema["properties"][name], schemas=schemas, name=name) for name in chosen}
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    return FORMAT_EXAMPLES.get(schema.get("format", ""), {"integer": 1, "boolean": True}.get(kind, f"my {name}"))


def curl_examples(method: str, url: str, body_schema: dict[str, Any] | None, *, schemas: dict[str, Any],
                  auth_header: str | None) -> list[tuple[str, str]]:
    """(title, command) pairs: one per request body variant, or one call without a body. Without auth_header the
    call sends no key. HEAD is curl's -I: with -X HEAD curl would wait for the body that Content-Length announces."""
    key_option = f' \\\n     -H "{auth_header}: $QRT_KEY"' if auth_header else ""
    if body_schema is None:
        queries = {"GET": ("", f"?uuid={EXAMPLE_UUID}"), "HEAD": ("", f"?uuid={EXAMPLE_UUID}"),
                   "OPTIONS": ("",)}.get(method, (f"?uuid={EXAMPLE_UUID}",))
        verb = {"GET": "", "HEAD": "-I "}.get(method, f"-X {method} ")
        return [(f"{method} /{url.rsplit('/', 1)[-1]}{query}", f"curl {verb}'{url}{query}'{key_option}")
                for query in queries]
    examples = []
    for variant in body_schema.get("oneOf") or body_schema.get("anyOf") or [body_schema]:
        name = variant.get("$ref", "").removeprefix(REF_PREFIX) or "Request"
        body = json.dumps(example_value(variant, schemas=schemas), separators=(",", ":"))
        query = f"?uuid={EXAMPLE_UUID}" if name.startswith("Update") else ""
        command = (f"curl -X {method} '{url}{query}'{key_option} \\\n"
                   f"     -H \"Content-Type: application/json\" \\\n     -d {shlex.quote(body)}")
        examples.append((f"{method} /{url.rsplit('/', 1)[-1]}{query} · {name}", command))
    return examples


def _json_schema(response: dict[str, Any]) -> dict[str, Any] | None:
    return response.get("content", {}).get("application/json", {}).get("schema")
