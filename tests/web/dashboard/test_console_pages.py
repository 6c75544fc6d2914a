"""The Live Console: calls go through the real API stack with a key chosen by id, and no key reaches the page."""
from __future__ import annotations

import html
import json
import re

import pytest

from qrtrack import accounts, codes, keys

from ...conftest import gen_code, gen_key, gen_user, make_app
from ...dashboard_helpers import csrf_token, log_in, text


@pytest.fixture
def alice(db) -> int:
    return gen_user(db, "alice")


@pytest.fixture
def raw_key(db, alice) -> str:
    return gen_key(db, alice, "zapier")


@pytest.fixture
def key_id(db, alice, raw_key) -> int:
    return keys.list_api_keys(db, user_id=alice)[0].id


@pytest.fixture
def console(client, alice):
    """A signed-in client with the console's CSRF token."""
    log_in(client)
    client.token = csrf_token(client, "/console")
    return client


def send(client, key_id, method="GET", query="", body="", *, token=None):
    payload = {"key_id": key_id, "method": method, "query": query, "body": body}
    return client.post("/console/send", json=payload, headers={"X-CSRFToken": token or client.token})


def call_log(db, user_id):
    return keys.list_recent_api_calls(db, user_id=user_id, limit=50)


# --- the page ---------------------------------------------------------------------------------------

def test_console_offers_only_your_unrevoked_keys_by_name(console, db, alice, key_id):
    revoked_id = keys.issue_api_key(db, user_id=alice, name="old laptop")[1]
    keys.revoke_api_key(db, user_id=alice, key_id=revoked_id)
    gen_key(db, gen_user(db, "bob"), "bob's key")
    body = text(console.get("/console"))
    options = re.findall(r'<option value="(\d+)">([^<]*)</option>', body)
    assert [(int(value), label.split(" (")[0]) for value, label in options] == [(key_id, "zapier")]


def test_console_offers_the_five_operations_with_example_bodies(console, key_id):
    body = text(console.get("/console"))
    for label in ("GET · List codes", "GET · Get one code", "POST · Create a code", "POST · Update a code",
                  "DELETE · Delete a code"):
        assert label in body
    examples = [json.loads(html.unescape(raw)) for raw in re.findall(r'data-body="([^"]*)"', body)]
    assert {"type": "url", "destination": "https://example.com/my-page", "label": "Summer promo"} in examples
    assert {"destination": "https://example.com/new-destination"} in examples


def test_console_without_keys_points_to_the_keys_page(console):
    body = text(console.get("/console"))
    assert "Create an API key first" in body and "/settings/api-keys" in body
    assert 'id="console-form"' not in body


def test_console_loads_its_script_from_this_site_and_has_the_csrf_token_for_it(console, key_id):
    body = text(console.get("/console"))
    assert re.search(r'<script src="/static/console.js" defer></script>', body)
    assert 'name="csrf_token"' in body
    with console.get("/static/console.js") as script:
        assert script.status_code == 200


# --- calls through the real API ---------------------------------------------------------------------

def test_a_list_call_answers_like_the_api_and_is_logged_as_from_the_console(console, db, alice, key_id):
    gen_code(db, alice, label="poster")
    response = send(console, key_id, "GET", "limit=5")
    assert response.status_code == 200
    result = response.get_json()
    assert result["status"] == 200 and result["status_text"] == "OK"
    assert json.loads(result["body"])["codes"][0]["label"] == "poster"
    assert "\n  " in result["body"]  # pretty-printed
    headers = dict(result["headers"])
    assert headers["Content-Type"] == "application/json"
    assert headers["X-RateLimit-Limit"] == "60"
    assert isinstance(result["duration_ms"], int)
    [call] = call_log(db, alice)
    assert (call.method, call.path, call.status, call.source, call.key_name) == (
        "GET", "/api.php?limit=5", 200, "console", "zapier")


def test_create_get_update_and_delete_through_the_console(console, db, alice, key_id):
    created = send(console, key_id, "POST", "", json.dumps({"destination": "https://example.com/a", "label": "A"}))
    result = created.get_json()
    assert result["status"] == 201
    uuid = json.loads(result["body"])["uuid"]
    assert codes.get_code(db, owner_id=alice, uuid=uuid).destination == "https://example.com/a"

    fetched = json.loads(send(console, key_id, "GET", f"uuid={uuid}").get_json()["body"])
    assert fetched["uuid"] == uuid and fetched["scans"] == []

    updated = send(console, key_id, "POST", f"uuid={uuid}", '{"destination": "https://example.com/b"}').get_json()
    assert updated["status"] == 200
    assert codes.get_code(db, owner_id=alice, uuid=uuid).destination == "https://example.com/b"

    deleted = send(console, key_id, "DELETE", f"uuid={uuid}").get_json()
    assert deleted["status"] == 200 and json.loads(deleted["body"]) == {"uuid": uuid, "deleted": True}
    assert [c.source for c in call_log(db, alice)] == ["console"] * 4


def test_the_short_url_in_a_console_answer_uses_the_sites_own_address(console, key_id):
    result = send(console, key_id, "POST", "", '{"destination": "https://example.com/"}').get_json()
    assert json.loads(result["body"])["short_url"].startswith("http://localhost/p/")


def test_the_apis_own_validation_answers_a_bad_body(console, db, alice, key_id):
    result = send(console, key_id, "POST", "", '{"destination": "not a url"}').get_json()
    assert result["status"] == 400
    error = json.loads(result["body"])["error"]
    assert error["code"] == "invalid_destination" and error["field"] == "destination"
    assert call_log(db, alice)[0].status == 400


def test_invalid_json_is_sent_as_typed_and_the_api_refuses_it(console, key_id):
    result = send(console, key_id, "POST", "", '{"destination": ').get_json()
    assert result["status"] == 400
    assert json.loads(result["body"])["error"]["code"] == "invalid_json"


def test_a_body_over_the_apis_limit_gets_the_apis_413(console, key_id):
    body = json.dumps({"destination": "https://example.com/", "label": "x" * (65 * 1024)})
    result = send(console, key_id, "POST", "", body).get_json()
    assert result["status"] == 413


def test_a_code_of_another_user_is_not_found_through_the_console(console, db, key_id):
    bobs_code = gen_code(db, gen_user(db, "bob"))
    result = send(console, key_id, "GET", f"uuid={bobs_code.uuid}").get_json()
    assert result["status"] == 404


def test_console_calls_share_the_keys_rate_limit_with_direct_calls(tmp_path):
    app = make_app(tmp_path / "instance", API_RATE_LIMIT="3")
    db = app.extensions["qrtrack"].db
    user = gen_user(db, "alice")
    raw_key = gen_key(db, user)
    key_id = keys.list_api_keys(db, user_id=user)[0].id
    client = app.test_client()
    log_in(client)
    client.token = csrf_token(client, "/console")
    assert app.test_client().get("/api.php", headers={"X-Api-Key": raw_key}).status_code == 200
    assert [send(client, key_id).get_json()["status"] for _ in range(3)] == [200, 200, 429]
    limited = send(client, key_id).get_json()
    assert int(dict(limited["headers"])["Retry-After"]) > 0
    assert json.loads(limited["body"])["error"]["code"] == "rate_limited"
    assert app.test_client().get("/api.php", headers={"X-Api-Key": raw_key}).status_code == 429
    app.extensions["qrtrack"].db.dispose()


# --- keys that are not usable ---------------------------------------------------------------------

def test_a_key_revoked_meanwhile_gets_the_apis_401(console, db, alice, key_id):
    keys.revoke_api_key(db, user_id=alice, key_id=key_id)
    result = send(console, key_id).get_json()
    assert result["status"] == 401 and result["status_text"] == "Unauthorized"
    assert json.loads(result["body"])["error"]["code"] == "invalid_api_key"
    assert call_log(db, alice) == []


def test_another_users_key_cannot_be_used(console, db, alice, key_id):
    bob = gen_user(db, "bob")
    gen_key(db, bob, "bob's key")
    bobs_key_id = keys.list_api_keys(db, user_id=bob)[0].id
    result = send(console, bobs_key_id, "POST", "", '{"destination": "https://example.com/"}').get_json()
    assert result["status"] == 401
    assert call_log(db, bob) == [] and codes.list_codes(db, owner_id=bob, search=None, statuses=None, limit=None,
                                                        offset=0)[1] == 0


def test_a_disabled_users_console_session_is_over(console, db, alice, key_id):
    accounts.set_user_active(db, user_id=alice, is_active=False)
    response = send(console, key_id)
    assert response.status_code == 302 and "/login" in response.location


@pytest.mark.parametrize(("payload", "field"), [
    ({"key_id": "x", "method": "GET"}, "key_id"),
    ({"key_id": True, "method": "GET"}, "key_id"),
    ({"key_id": 99999999999999999999, "method": "GET"}, "key_id"),
    ({"key_id": 2**63, "method": "GET"}, "key_id"),
    ({"key_id": "99999999999999999999", "method": "GET"}, "key_id"),
    ({"key_id": -1, "method": "GET"}, "key_id"),
    ({"key_id": "\u00b2", "method": "GET"}, "key_id"),
    ({"method": "GET"}, "key_id"),
    ({"key_id": 1, "method": "PUT"}, "method"),
    ({"key_id": 1, "method": "GET", "query": "a=1\r\nX-Api-Key: x"}, "query"),
    ({"key_id": 1, "method": "GET", "query": "q=" + "x" * 2000}, "query"),
    ({"key_id": 1, "method": "POST", "body": "x" * (128 * 1024 + 1)}, "body"),
    ({"key_id": 1, "method": "POST", "body": {"destination": "https://example.com/"}}, "body"),
])
def test_a_request_the_console_does_not_make_is_refused_before_the_api(console, db, alice, key_id, payload, field):
    response = console.post("/console/send", json=payload, headers={"X-CSRFToken": console.token})
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == field
    assert call_log(db, alice) == []


def test_a_body_that_is_not_json_at_all_is_refused(console):
    response = console.post("/console/send", data="key_id=1", headers={"X-CSRFToken": console.token},
                            content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400


# --- CSRF and sign-in ------------------------------------------------------------------------------

def test_a_console_call_without_the_csrf_header_is_refused_and_not_run(console, db, alice, key_id):
    response = console.post("/console/send", json={"key_id": key_id, "method": "GET"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "csrf_failed"
    assert call_log(db, alice) == []


def test_a_console_call_from_another_site_without_a_session_is_sent_to_login(client, alice, key_id):
    response = client.post("/console/send", json={"key_id": key_id, "method": "GET"})
    assert response.status_code in (302, 400)
    assert keys.list_recent_api_calls(client.application.extensions["qrtrack"].db, user_id=alice) == []


# --- history ----------------------------------------------------------------------------------------

def test_history_lists_recent_calls_from_the_api_and_the_console(app, console, db, alice, raw_key, key_id):
    app.test_client().get("/api.php?limit=1", headers={"X-Api-Key": raw_key})
    send(console, key_id, "DELETE", "uuid=00000000-0000-0000-0000-000000000000")
    body = text(console.get("/console/history"))
    assert body.index("DELETE") < body.index("/api.php?limit=1")
    assert "source-console" in body and "source-api" in body
    assert "zapier" in body and "404" in body and " ms" in body
    assert re.search(r'datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', body)
    page = text(console.get("/console"))
    assert "/api.php?limit=1" in page


def test_history_shows_only_your_own_calls(app, console, db, key_id):
    bob = gen_user(db, "bob")
    bobs_key = gen_key(db, bob)
    app.test_client().get("/api.php?label=bobs-secret", headers={"X-Api-Key": bobs_key})
    assert "bobs-secret" not in text(console.get("/console/history"))


# --- the key never reaches the browser ----------------------------------------------------------------

def test_no_key_string_appears_in_any_console_page_or_response(app, console, db, alice, raw_key, key_id):
    key_hash = keys.hash_api_key(raw_key)
    secrets = [raw_key, raw_key[len(keys.KEY_PREFIX):], raw_key[keys.DISPLAY_PREFIX_LENGTH:], key_hash]
    app.test_client().get("/api.php", headers={"X-Api-Key": raw_key})
    with console.get("/static/console.js") as script:
        assert not any(secret in script.get_data(as_text=True) for secret in secrets)
    responses = [console.get("/console"), console.get("/console/history"), console.get("/api-reference"),
                 console.get("/settings/api-keys")]
    created = send(console, key_id, "POST", "", '{"destination": "https://example.com/", "label": "x"}')
    uuid = json.loads(created.get_json()["body"])["uuid"]
    responses += [created, send(console, key_id, "GET"), send(console, key_id, "GET", f"uuid={uuid}"),
                  send(console, key_id, "POST", f"uuid={uuid}", '{"label": "y"}'),
                  send(console, key_id, "POST", "", "{bad json"), send(console, key_id, "DELETE", f"uuid={uuid}"),
                  console.get("/console/history"), console.get("/console")]
    keys.revoke_api_key(db, user_id=alice, key_id=key_id)
    responses += [send(console, key_id), console.get("/console"), console.get("/console/history")]
    for response in responses:
        everything = text(response) + "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        for secret in secrets:
            assert secret not in everything, response.request.path


def test_a_console_call_past_the_request_limit_is_refused_in_json_the_page_can_show(app, console, key_id):
    """A 3 MB body once got the HTML 413 page, which the console read as a session that had ended."""
    response = send(console, key_id, "POST", body="x" * (3 * 1024 * 1024))
    assert response.status_code == 413 and response.is_json
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert response.json["error"] == {"code": "payload_too_large",
                                      "message": f"the request is larger than the {limit:,} bytes this server takes"}


@pytest.mark.parametrize(("field", "value"), [("body", '{"label": "\ud800"}'), ("query", "label=a\ud800b")])
def test_a_lone_surrogate_in_the_console_is_refused_not_a_500(console, key_id, field, value):
    """An outsider's browser sent a raw U+D800 (JSON carries it as "\\ud800"); encoding it failed with a 500."""
    response = send(console, key_id, "POST" if field == "body" else "GET", **{field: value})
    assert response.status_code == 400
    assert response.json["error"] == {"code": f"invalid_{field}", "field": field, "message":
                                      f"the {'body' if field == 'body' else 'query string'} holds a lone surrogate "
                                      "(such as \\ud800), which is no character"}
