"""The OpenAPI spec and the live app agree: schemathesis drives /api.php from /api/openapi.json.

Cases are generated from the spec itself (positive: valid by it, negative: invalid by it) and sent
through the WSGI app with a real key, so every response is checked against the spec: no 500, a
documented status, content type, headers and body. Part of the generated uuids are swapped for
real ones, so the code-with-scan-log answer and updates and deletes of existing codes are checked too.
The run is derandomized, so it is the same on every machine and quick (well under a minute).
"""
from __future__ import annotations

import ipaddress
import random
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from qrtrack import codes
from qrtrack.destinations import ascii_authority
from qrtrack.web import api, openapi
from qrtrack.web.openapi import SCHEMAS

from ..conftest import gen_code, gen_key, gen_user, make_app

MAX_EXAMPLES = 60
ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/125.0 Mobile Safari/537.36")
BODY_SCHEMAS = {"create": jsonschema_rs.validator_for(SCHEMAS["CreateCode"]),
                "update": jsonschema_rs.validator_for(SCHEMAS["UpdateCode"])}


@dataclass
class Target:
    """The app under test, a key for alice, and uuids that exist: alice's codes (some scanned) and bob's."""

    app: Flask
    key: str
    alice: int
    alice_uuids: list[str] = field(default_factory=list)
    bob_uuid: str = ""

    def replace_deleted(self, uuid: str) -> None:
        if uuid in self.alice_uuids:
            db = self.app.extensions["qrtrack"].db
            self.alice_uuids[self.alice_uuids.index(uuid)] = gen_code(db, self.alice).uuid


@pytest.fixture
def target(tmp_path) -> Target:
    app = make_app(tmp_path / "instance", API_RATE_LIMIT="100000/minute", TRUST_CDN="cloudflare")
    db = app.extensions["qrtrack"].db
    alice = gen_user(db, "alice")
    target = Target(app=app, key=gen_key(db, alice), alice=alice)
    client = app.test_client()
    for index in range(3):
        code = gen_code(db, alice, destination=f"https://example.com/{index}", label=f"<b>label {index}</b>")
        for _ in range(index * 3):
            client.get(f"/p/{code.slug}", headers={"User-Agent": ANDROID, "CF-IPCountry": "US", "CF-IPCity": "Tampa"})
        target.alice_uuids.append(code.uuid)
    target.bob_uuid = gen_code(db, gen_user(db, "bob")).uuid
    yield target
    db.dispose()


def api_schema(app: Flask):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    # The API ignores query parameters it does not know (clients add cache-busters), so none are generated.
    schema.config.generation.update(allow_extra_parameters=False)
    return schema


def host_is_one_browsers_open(destination: str | None) -> bool:
    if destination is None:
        return True
    try:
        ascii_authority(urlsplit(destination).netloc)
    except ValueError:
        return False
    return True


def check_read_cursor(case, response) -> None:
    """Replaces positive_data_acceptance for reads: a valid query is answered (404 for an unknown uuid), but a
    before that is not a scan of that code is refused as invalid, which no schema can say of an integer."""
    refused_cursor = response.status_code == 400 and "before" in (case.query or {}) and (
        case.method == "HEAD" or response.json()["error"]["field"] == "before")
    assert response.status_code in (200, 404) or refused_cursor, (case.query, response.text)


def check_post_branch(case, response) -> None:
    """POST is create without ?uuid= and update with it; the spec's anyOf cannot say which body goes where.

    So schemathesis's positive_data_acceptance (a body valid for either must be accepted) is replaced
    by this: a body valid for its own branch is accepted (404 for an unknown uuid), any other refused.
    One rule of the service is beyond a pattern, as the spec's description of destination says: an
    internationalised host must be one browsers open (UTS #46's tables, in destinations.py); a body valid
    for the spec whose host fails that alone is refused as an invalid destination.
    """
    if (case.query or {}).get("uuid") == "":  # names no code, whatever the body: refused before it is read
        assert response.status_code == 400 and response.json()["error"]["code"] == "missing_uuid", response.text
        return
    branch = "update" if "uuid" in (case.query or {}) else "create"
    body_is_valid = isinstance(case.body, dict) and BODY_SCHEMAS[branch].is_valid(case.body)
    accepted = {"create": (201,), "update": (200, 404)}[branch]
    if body_is_valid and not host_is_one_browsers_open(case.body.get("destination")):
        refused_for_its_host = response.status_code == 400 and "destination's host" in response.text
        assert refused_for_its_host or response.status_code == 404, (branch, case.body, response.text)
    elif body_is_valid:
        assert response.status_code in accepted, (branch, case.body, response.text)
    else:
        assert response.status_code in (400, 404, 415), (branch, case.body, response.text)


@pytest.mark.parametrize(("method", "mode"), [
    (method, mode) for method in api.ALLOWED_METHODS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if (method, mode) != ("OPTIONS", GenerationMode.NEGATIVE)  # it takes no input that could be invalid
], ids=lambda value: str(value))
def test_api_answers_as_its_openapi_spec_says(target, method, mode):
    operation = api_schema(target.app)["/api.php"][method]
    strategy = operation.as_strategy(mode, headers={"X-Api-Key": target.key})
    excluded = [schemathesis.checks.positive_data_acceptance] if method in ("POST", "GET", "HEAD") else []

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(case=strategy, real_uuid=st.sampled_from([None, 0, 1, 2, "bob"]))
    def run(case, real_uuid):
        # Only valid cases get a real uuid: in a negative case the uuid may be the part made invalid.
        if mode is GenerationMode.POSITIVE and real_uuid is not None and "uuid" in (case.query or {}):
            case.query["uuid"] = target.bob_uuid if real_uuid == "bob" else target.alice_uuids[real_uuid]
        response = case.call_and_validate(excluded_checks=excluded)
        assert response.status_code != 500
        if method == "POST":
            check_post_branch(case, response)
        if method in ("GET", "HEAD") and mode is GenerationMode.POSITIVE:
            check_read_cursor(case, response)
        if method == "DELETE" and response.status_code == 200:
            target.replace_deleted(case.query["uuid"])

    run()


def test_every_method_the_api_answers_is_an_operation_of_the_spec(target):
    client = target.app.test_client()
    spec = client.get("/api/openapi.json").get_json()
    operations = spec["paths"]["/api.php"]
    assert list(operations) == [method.lower() for method in api.ALLOWED_METHODS]  # in the order the API lists them
    allow = operations["options"]["responses"]["204"]["headers"]["Allow"]
    assert allow["schema"]["examples"] == [client.options("/api.php").headers["Allow"]]
    assert operations["options"]["security"] == []  # OPTIONS needs no key, as the spec's description says


def accepts(validate, value) -> bool:
    try:
        validate(value)
    except codes.ValidationError:
        return False
    return True


def test_spec_limits_are_the_services_limits():
    create = SCHEMAS["CreateCode"]["properties"]
    assert create["destination"]["maxLength"] == codes.MAX_DESTINATION_LENGTH
    assert create["label"]["maxLength"] == codes.MAX_LABEL_LENGTH
    assert create["status"]["enum"] == SCHEMAS["UpdateCode"]["properties"]["status"]["enum"] == list(codes.STATUSES)
    assert create["status"]["default"] == "active"


@pytest.mark.parametrize(("name", "validate", "template"), [
    ("destination", codes.validate_destination, "https://example.com/{}"),
    ("label", codes.validate_label, "label {} here"),
])
def test_spec_and_service_agree_on_every_character(name, validate, template):
    """The spec's patterns accept a character exactly when the service does (one found: U+0085)."""
    body_is_valid = BODY_SCHEMAS["create"].is_valid
    disagreements = []
    for point in range(0x10000):
        if 0xD800 <= point <= 0xDFFF:
            continue
        value = template.format(chr(point))
        body = {"destination": "https://example.com", name: value}
        if body_is_valid(body) != accepts(validate, value):
            disagreements.append(hex(point))
    assert disagreements == []


@pytest.mark.parametrize("destination", [
    "https://example.com", "HTTP://a.b:8080/p?q=1#f", "https://x.y/" + "a" * 2000, "http://0?x", "https://e.com#",
    "https://bücher.de/", "https://例え.jp/パス", "https://a.b:10443/", "https://a.b:65535", "http://[::1]:8080/",
    "https://[2001:db8::1]/x", "https://user@host.example/", "https://user:pass@host.example:8443/p",
    "https://faß.de/", "https://i❤.ws/", "https://[::ffff:1.2.3.4]/", "https://[::1.2.3.4]/", "https://a@b@c.com/",
    "https://e.com:000443/", "https://example.com./",
])
def test_destinations_the_spec_allows_are_accepted(destination):
    assert BODY_SCHEMAS["create"].is_valid({"destination": destination})
    assert codes.validate_destination(destination) == destination


@pytest.mark.parametrize("destination", [
    "https://", "https://:80/", "https://user@/", "https://a b/", "https://a.b:8080x/", "ftp://a.b/", "https:/a.b",
    "https://[::1]x/", "https://[v1.x]/", "https://[fe80::1%25eth0]/", "https://.", "https://a..b/",
    "https://exa<mple.com/", "https://e.com:65536/", "https://[::ffff:01.2.3.4]/",
])
def test_destinations_the_spec_refuses_are_refused_by_the_service(destination):
    assert not BODY_SCHEMAS["create"].is_valid({"destination": destination})
    assert not accepts(codes.validate_destination, destination)


def test_spec_and_service_agree_on_ipv6_addresses():
    """RFC 3986's IPv6 grammar in the spec's pattern against ipaddress in the service, on addresses in every
    notation (full, compressed, with an IPv4 tail) and on near misses."""
    rng = random.Random(6)
    masks = [2**128 - 1, 2**32 - 1, 2**48 - 1, (2**128 - 1) ^ (2**96 - 2**32)]  # runs of zero groups in places
    addresses = set()
    for _ in range(3000):
        bits = rng.getrandbits(128) & rng.choice(masks)
        address = ipaddress.IPv6Address(bits)
        ipv4_tail = f"{address.exploded[:30]}{ipaddress.IPv4Address(bits & 0xFFFF_FFFF)}"
        addresses.update({address.compressed, address.exploded, ipv4_tail, f"{address.compressed}:1",
                          address.compressed.replace(":", "::", 1), address.compressed.replace("::", ":")})
    body_is_valid = BODY_SCHEMAS["create"].is_valid
    disagreements = [address for address in sorted(addresses)
                     if body_is_valid({"destination": f"https://[{address}]/"})
                     != accepts(codes.validate_destination, f"https://[{address}]/")]
    assert disagreements == []


def test_the_characters_nfkc_turns_into_url_delimiters_are_all_listed():
    listed = re.sub(r"\\u([0-9a-f]{4})", lambda match: chr(int(match[1], 16)), openapi.NFKC_DELIMITERS)
    listed = re.sub(r"(.)-(.)", lambda match: "".join(map(chr, range(ord(match[1]), ord(match[2]) + 1))), listed)
    found = "".join(chr(point) for point in range(0x80, 0x110000)
                    if any(delimiter in unicodedata.normalize("NFKC", chr(point)) for delimiter in "/?#@:"))
    assert listed == found
