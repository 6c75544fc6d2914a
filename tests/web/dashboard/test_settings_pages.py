"""Dashboard settings: change password, users (admins only) and API keys, through the test client."""
from __future__ import annotations

import html
import json
import os
import re
import threading
import time

import pytest

from qrtrack import accounts, codes, keys
from qrtrack.errors import ValidationError
from qrtrack.web.dashboard import reference_pages
from qrtrack.web.openapi import openapi_document

from ...conftest import PASSWORD, gen_code, gen_key, gen_user
from ...dashboard_helpers import csrf_token, hidden_fields, log_in, post_form, text

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def admin(db) -> int:
    return gen_user(db, "alice", is_admin=True)


@pytest.fixture
def bob(db) -> int:
    return gen_user(db, "bob")


@pytest.fixture
def admin_client(client, admin):
    log_in(client)
    return client


def change_password(client, current=PASSWORD, new=NEW_PASSWORD, repeat=None):
    return post_form(client, "/settings/account", {"current_password": current, "new_password": new,
                                                   "new_password_confirm": new if repeat is None else repeat})


def field_error(body: str, field: str) -> str:
    match = re.search(rf'<div class="field-error" id="{field}-error">([^<]*)</div>', body)
    return match.group(1) if match else ""


# --- account -----------------------------------------------------------------------------------------

def test_account_page_shows_who_is_signed_in(admin_client):
    body = text(admin_client.get("/settings/account"))
    assert "alice" in body and "Admin" in body and "Change password" in body


def test_changing_the_password_keeps_this_browser_in_and_logs_other_sessions_out(app, admin_client, db):
    other_browser = app.test_client()
    log_in(other_browser)
    response = change_password(admin_client)
    assert response.status_code == 302
    assert "Password changed" in text(admin_client.get("/settings/account"))
    assert admin_client.get("/settings/api-keys").status_code == 200
    assert other_browser.get("/settings/account").status_code == 302
    assert accounts.authenticate_user(db, username="alice", password=NEW_PASSWORD) is not None
    assert accounts.authenticate_user(db, username="alice", password=PASSWORD) is None


def test_a_wrong_current_password_is_shown_next_to_its_field(admin_client, db):
    response = change_password(admin_client, current="not my password")
    assert response.status_code == 400
    assert "not right" in field_error(text(response), "current_password")
    assert accounts.authenticate_user(db, username="alice", password=PASSWORD) is not None


def test_differing_new_passwords_are_shown_next_to_the_repeat_field(admin_client, db):
    response = change_password(admin_client, repeat="something else")
    assert response.status_code == 400
    assert field_error(text(response), "new_password_confirm") == "The two new passwords differ."
    assert accounts.authenticate_user(db, username="alice", password=PASSWORD) is not None


def test_a_short_new_password_is_shown_next_to_the_new_password_field(admin_client):
    response = change_password(admin_client, new="short")
    assert response.status_code == 400
    assert "at least 8 characters" in field_error(text(response), "new_password")


def test_a_new_password_of_only_spaces_is_shown_next_to_the_field(admin_client):
    response = change_password(admin_client, new=" " * 12)
    assert response.status_code == 400
    assert field_error(text(response), "new_password") == "Password must not be only spaces."


def test_an_empty_password_form_is_flagged_in_every_field_that_needs_filling(admin_client):
    body = text(change_password(admin_client, current="", new=""))
    assert field_error(body, "current_password") == "Enter your current password."
    assert "at least 8 characters" in field_error(body, "new_password")


def test_password_fields_are_never_sent_back(admin_client):
    body = text(change_password(admin_client, new="short"))
    assert PASSWORD not in body and "short" not in re.findall(r'value="([^"]*)"', body)


# --- users -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("get", "/settings/users"), ("post", "/settings/users"), ("post", "/settings/users/1/status"),
    ("get", "/settings/users/1/remove"), ("post", "/settings/users/1/remove"),
])
def test_users_pages_are_not_found_for_non_admins(client, admin, bob, method, path):
    log_in(client, "bob")
    token = csrf_token(client, "/settings/account")
    response = getattr(client, method)(path, data={"csrf_token": token, "is_active": "0"})
    assert response.status_code == 404
    assert accounts.get_user(client.application.extensions["qrtrack"].db, 1).is_active


def test_users_page_lists_everyone_with_role_status_and_codes(admin_client, db, bob):
    gen_code(db, bob)
    gen_code(db, bob)
    accounts.set_user_active(db, user_id=bob, is_active=False)
    body = text(admin_client.get("/settings/users"))
    row = re.search(r"<tr>\s*<td data-label=\"User\"><strong>bob</strong>.*?</tr>", body, flags=re.S).group(0)
    assert "Member" in row and "Disabled" in row and '<td data-label="Codes">2</td>' in row
    assert "Enable" in row


def test_an_admin_adds_a_user_who_can_then_log_in(app, admin_client, db):
    response = post_form(admin_client, "/settings/users", {"username": "carol", "password": PASSWORD, "is_admin": "on"})
    assert response.status_code == 302
    assert accounts.find_user(db, "carol").is_admin
    assert "Added carol" in text(admin_client.get("/settings/users"))
    assert log_in(app.test_client(), "carol").status_code == 302


def test_adding_a_user_that_exists_keeps_the_form_and_says_why(admin_client, bob):
    response = post_form(admin_client, "/settings/users", {"username": "bob", "password": PASSWORD, "is_admin": "on"})
    assert response.status_code == 400
    body = text(response)
    assert "already exists" in field_error(body, "username")
    assert 'value="bob"' in body and "checked" in body


def test_adding_a_user_with_a_short_password_says_so_by_the_password(admin_client, db):
    response = post_form(admin_client, "/settings/users", {"username": "carol", "password": "short"})
    assert "at least 8 characters" in field_error(text(response), "password")
    assert len(accounts.list_users(db)) == 1


def test_an_empty_new_user_form_is_flagged_in_both_fields_at_once(admin_client, db):
    """A browser probe found only the username flagged, the password's problem left for the next try."""
    response = post_form(admin_client, "/settings/users", {"username": "", "password": ""})
    body = text(response)
    assert response.status_code == 400
    assert field_error(body, "username").startswith("Username: 2 to 64 letters")
    assert field_error(body, "password") == "Password must be at least 8 characters."
    assert len(accounts.list_users(db)) == 1


def test_disabling_a_user_ends_their_sessions_and_stops_their_keys_at_once(app, admin_client, db, bob):
    key = gen_key(db, bob)
    bobs_browser = app.test_client()
    log_in(bobs_browser, "bob")
    assert app.test_client().get("/api.php", headers={"X-Api-Key": key}).status_code == 200
    response = post_form(admin_client, f"/settings/users/{bob}/status", {"is_active": "0"}, form_page="/settings/users")
    assert response.status_code == 302
    assert "bob is disabled" in text(admin_client.get("/settings/users"))
    assert bobs_browser.get("/settings/account").status_code == 302
    assert app.test_client().get("/api.php", headers={"X-Api-Key": key}).status_code == 401
    post_form(admin_client, f"/settings/users/{bob}/status", {"is_active": "1"}, form_page="/settings/users")
    assert app.test_client().get("/api.php", headers={"X-Api-Key": key}).status_code == 200


@pytest.mark.parametrize("action", ["status", "remove"])
def test_an_admin_cannot_disable_or_remove_themselves(admin_client, db, admin, action):
    response = post_form(admin_client, f"/settings/users/{admin}/{action}", {"is_active": "0"},
                         form_page="/settings/users")
    assert response.status_code == 302
    assert "You cannot" in text(admin_client.get("/settings/users"))
    assert accounts.get_user(db, admin).is_active


def test_the_users_page_offers_no_disable_or_remove_for_yourself(admin_client, admin):
    body = text(admin_client.get("/settings/users"))
    assert f"/settings/users/{admin}/status" not in body
    assert f"/settings/users/{admin}/remove" not in body


def test_the_last_enabled_admin_cannot_be_disabled_or_removed(admin_client, db, admin, bob):
    # Only reachable by racing another admin's change, so the service's refusal is the guard.
    with pytest.raises(ValidationError):
        accounts.set_user_active(db, user_id=admin, is_active=False)
    with pytest.raises(ValidationError):
        accounts.delete_user(db, user_id=admin)


def test_a_refusal_from_the_service_is_shown_as_a_message(app, admin_client, db, bob, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValidationError("this is the last enabled admin; make another admin first", code="last_admin")

    monkeypatch.setattr(accounts, "set_user_active", refuse)
    post_form(admin_client, f"/settings/users/{bob}/status", {"is_active": "0"}, form_page="/settings/users")
    assert "This is the last enabled admin; make another admin first." in text(admin_client.get("/settings/users"))


def test_removing_a_user_asks_first_and_says_their_codes_go_too(admin_client, db, bob):
    gen_code(db, bob)
    gen_code(db, bob)
    body = text(admin_client.get(f"/settings/users/{bob}/remove"))
    assert "Remove bob?" in body
    assert "their 2 codes" in body
    assert accounts.get_user(db, bob) is not None


def test_removing_a_user_deletes_them_with_their_codes_and_keys(app, admin_client, db, bob):
    gen_code(db, bob)
    key = gen_key(db, bob)
    response = post_form(admin_client, f"/settings/users/{bob}/remove", form_page=f"/settings/users/{bob}/remove")
    assert response.status_code == 302
    assert accounts.get_user(db, bob) is None
    assert accounts.count_codes_by_user(db).get(bob, 0) == 0
    assert app.test_client().get("/api.php", headers={"X-Api-Key": key}).status_code == 401


def test_removing_a_user_deletes_their_older_logo_files_that_no_one_else_uses(app, admin_client, db, admin, bob):
    logo_dir = app.extensions["qrtrack"].logo_dir
    logos = {name: codes.save_logo(logo_dir, name.encode()) for name in ("bob's", "shared")}
    for owner, name in ((bob, "bob's"), (bob, "shared"), (admin, "shared")):
        codes.create_code(db, owner_id=owner, destination="https://example.com/", logo=logos[name], logo_dir=logo_dir)
    a_day_ago = time.time() - 25 * 3600
    for logo in logos.values():
        os.utime(codes.logo_path(logo_dir, logo), (a_day_ago, a_day_ago))
    post_form(admin_client, f"/settings/users/{bob}/remove", form_page=f"/settings/users/{bob}/remove")
    assert not codes.logo_path(logo_dir, logos["bob's"]).exists()
    assert codes.logo_path(logo_dir, logos["shared"]).exists()


def test_acting_on_a_user_that_does_not_exist_is_not_found(admin_client):
    assert admin_client.get("/settings/users/999/remove").status_code == 404
    token = csrf_token(admin_client, "/settings/users")
    assert admin_client.post("/settings/users/999/status", data={"csrf_token": token}).status_code == 404


# --- API keys ----------------------------------------------------------------------------------------

def create_key(client, name="build server"):
    return post_form(client, "/settings/api-keys", {"name": name})


def shown_key(response) -> str:
    return re.search(r'<code id="new-key-value" class="copy-value">([^<]+)</code>', text(response)).group(1)


def test_api_keys_page_starts_empty(admin_client):
    body = text(admin_client.get("/settings/api-keys"))
    assert "No API keys yet." in body


def test_a_new_key_is_shown_once_with_a_copy_button_and_works(app, admin_client):
    response = create_key(admin_client)
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    key = shown_key(response)
    assert key.startswith(keys.KEY_PREFIX)
    assert 'data-copy-target="new-key-value"' in text(response)
    assert "will not be shown again" in text(response)
    assert app.test_client().get("/api.php", headers={"X-Api-Key": key}).status_code == 200
    # Never again: not on the next page, nor in any cookie.
    for header in response.headers.getlist("Set-Cookie"):
        assert key not in header and key[len(keys.KEY_PREFIX):] not in header
    later = admin_client.get("/settings/api-keys")
    assert key not in text(later)
    assert key[:keys.DISPLAY_PREFIX_LENGTH] in text(later)


def generate_form(client) -> dict[str, str]:
    """The "Generate a key" form as the keys page renders it, hidden fields and all."""
    return hidden_fields(text(client.get("/settings/api-keys")))


def test_sending_the_same_generate_form_again_makes_no_second_key_and_says_so(app, admin_client, db, admin):
    form = {**generate_form(admin_client), "name": "build server"}
    first = admin_client.post("/settings/api-keys", data=form)
    assert first.status_code == 201
    key = shown_key(first)
    again = admin_client.post("/settings/api-keys", data=form)  # what a browser's reload does
    assert again.status_code == 200
    assert [k.name for k in keys.list_api_keys(db, user_id=admin)] == ["build server"]
    body = text(again)
    assert "No new key: this form was already sent" in body and "“build server”" in body
    assert key not in body and key[keys.DISPLAY_PREFIX_LENGTH:] not in body
    assert 'value="build server"' not in body
    # Nor is the key in the session, which is signed, not encrypted.
    with admin_client.session_transaction() as session:
        assert key[keys.DISPLAY_PREFIX_LENGTH:] not in json.dumps(dict(session))
    # The form the first answer shows is a new one: it makes another key.
    fresh = hidden_fields(text(first))
    assert fresh["form_token"] != form["form_token"]
    assert admin_client.post("/settings/api-keys", data={**fresh, "name": "build server"}).status_code == 201
    assert len(keys.list_api_keys(db, user_id=admin)) == 2


@pytest.mark.postgresql
def test_a_double_click_sending_the_form_twice_at_once_makes_one_key(app, admin_client, db, admin):
    """Both posts carry the same session cookie, sent before either answer could change it."""
    form = {**generate_form(admin_client), "name": "build server"}
    cookie = admin_client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    clicks = [admin_client, app.test_client()]
    clicks[1].set_cookie(cookie.key, cookie.value, domain=cookie.domain)
    barrier, answers = threading.Barrier(2), {}

    def click(client) -> None:
        barrier.wait(timeout=10)
        answers[client] = client.post("/settings/api-keys", data=form)

    threads = [threading.Thread(target=click, args=(client,)) for client in clicks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answer.status_code for answer in answers.values()) == [200, 201]
    assert [k.name for k in keys.list_api_keys(db, user_id=admin)] == ["build server"]
    second = text(next(answer for answer in answers.values() if answer.status_code == 200))
    assert "This key was already generated by this form: “build server”" in second
    assert 'id="new-key-value"' not in second


def test_a_generate_form_refused_can_be_sent_again_once_fixed(admin_client, db, admin):
    form = generate_form(admin_client)
    assert admin_client.post("/settings/api-keys", data={**form, "name": " "}).status_code == 400
    assert admin_client.post("/settings/api-keys", data={**form, "name": "ci"}).status_code == 201
    assert [k.name for k in keys.list_api_keys(db, user_id=admin)] == ["ci"]


def test_a_key_needs_a_name(admin_client, db, admin):
    response = create_key(admin_client, name="   ")
    assert response.status_code == 400
    assert "Give the key a name" in field_error(text(response), "name")
    assert keys.list_api_keys(db, user_id=admin) == []


def test_the_key_list_shows_name_prefix_created_last_used_and_status(app, admin_client, db, admin):
    key = gen_key(db, admin, "zapier")
    body = text(admin_client.get("/settings/api-keys"))
    assert "zapier" in body and key[:keys.DISPLAY_PREFIX_LENGTH] + "…" in body
    assert "never" in body and "Active" in body
    app.test_client().get("/api.php", headers={"X-Api-Key": key})
    body = text(admin_client.get("/settings/api-keys"))
    assert "just now" in body
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", body)


def test_revoking_a_key_asks_first_then_stops_it_at_once(app, admin_client, db, admin):
    key = gen_key(db, admin, "zapier")
    key_id = keys.list_api_keys(db, user_id=admin)[0].id
    confirm = admin_client.get(f"/settings/api-keys/{key_id}/revoke")
    assert "Revoke “zapier”?" in text(confirm)
    assert app.test_client().get("/api.php", headers={"X-Api-Key": key}).status_code == 200
    response = post_form(admin_client, f"/settings/api-keys/{key_id}/revoke")
    assert response.status_code == 302
    assert app.test_client().get("/api.php", headers={"X-Api-Key": key}).status_code == 401
    body = text(admin_client.get("/settings/api-keys"))
    assert "Revoked zapier" in body and "badge-revoked" in body
    assert admin_client.get(f"/settings/api-keys/{key_id}/revoke").status_code == 404


def test_revoking_needs_the_csrf_token(app, admin_client, db, admin):
    key = gen_key(db, admin)
    key_id = keys.list_api_keys(db, user_id=admin)[0].id
    assert admin_client.post(f"/settings/api-keys/{key_id}/revoke").status_code == 400
    assert app.test_client().get("/api.php", headers={"X-Api-Key": key}).status_code == 200


def test_keys_are_per_user(app, client, db, admin, bob):
    alices_key = gen_key(db, admin, "alice's key")
    alices_key_id = keys.list_api_keys(db, user_id=admin)[0].id
    log_in(client, "bob")
    assert "alice&#39;s key" not in text(client.get("/settings/api-keys"))
    assert client.get(f"/settings/api-keys/{alices_key_id}/revoke").status_code == 404
    token = csrf_token(client, "/settings/api-keys")
    assert client.post(f"/settings/api-keys/{alices_key_id}/revoke", data={"csrf_token": token}).status_code == 404
    assert app.test_client().get("/api.php", headers={"X-Api-Key": alices_key}).status_code == 200


# --- pages follow the CSP ------------------------------------------------------------------------------

SETTINGS_PAGES = ["/settings/account", "/settings/users", "/settings/api-keys", "/settings/users/2/remove",
                  "/settings/api-keys/1/revoke", "/console", "/api-reference"]


@pytest.mark.parametrize("path", SETTINGS_PAGES)
def test_settings_pages_have_no_inline_script_style_or_handlers(admin_client, db, admin, bob, path):
    gen_key(db, admin)
    response = admin_client.get(path)
    assert response.status_code == 200
    body = text(response)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body)
    assert not re.search(r"<style\b", body)
    assert not re.search(r"\sstyle=", body)
    assert not re.search(r"\son[a-z]+\s*=", body)
    assert not re.search(r"(src|href)=\"(https?:)?//", body)


# --- API reference -------------------------------------------------------------------------------------

def test_api_reference_shows_every_operation_parameter_schema_and_error(admin_client):
    document = openapi_document(server_url="http://localhost")
    body = text(admin_client.get("/api-reference"))
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert f'<span class="method method-{method}">{method.upper()}</span> <code class="operation-path">{path}' \
                   in body
            assert html.escape(operation["summary"]) in body
            for parameter in operation.get("parameters", []):
                assert f'<code class="field-name">{parameter["name"]}</code>' in body
    for name, schema in document["components"]["schemas"].items():
        assert f'id="schema-{name}"' in body
        for prop in schema.get("properties", {}):
            assert f'<code class="field-name">{prop}</code>' in body
    for status in ("400", "401", "404", "413", "415", "429", "503"):
        assert f'<span class="status-pill status-{status[0]}xx">{status}</span>' in body
    for operation in (operation for methods in document["paths"].values() for operation in methods.values()):
        assert "503" in operation["responses"], operation["operationId"]  # any call may meet a broken store
    assert "X-Api-Key" in body and "/api/openapi.json" in body
    assert ("Every response carries <code>X-RateLimit-Limit</code>, <code>X-RateLimit-Remaining</code>, "
            "<code>X-RateLimit-Reset</code>.") in body


def test_api_reference_curl_examples_use_this_sites_address_and_a_key_variable(admin_client):
    body = html.unescape(text(admin_client.get("/api-reference")))
    assert "curl -X POST 'http://localhost/api.php'" in body
    assert '-H "X-Api-Key: $QRT_KEY"' in body
    create = re.search(r"-d '(\{[^']*\})'", body).group(1)
    assert json.loads(create)["destination"].startswith("https://")


def test_api_reference_examples_of_head_and_options_run_as_written(admin_client):
    """HEAD with curl's -I (with -X HEAD curl waits for a body that never comes); OPTIONS without a key."""
    body = html.unescape(text(admin_client.get("/api-reference")))
    examples = re.findall(r'<div class="code-example-title">([^<]*)</div>\s*<pre><code>([^<]*)</code>', body)
    commands = {title: command for title, command in examples}
    assert commands["HEAD /api.php"] == "curl -I 'http://localhost/api.php' \\\n     -H \"X-Api-Key: $QRT_KEY\""
    assert commands["OPTIONS /api.php"] == "curl -X OPTIONS 'http://localhost/api.php'"
    assert body.count("no key needed") == 1


def test_api_reference_is_generated_from_the_openapi_document(admin_client, monkeypatch):
    def extended(*, server_url):
        document = openapi_document(server_url=server_url)
        document["paths"]["/api/ping.php"] = {"get": {"operationId": "ping", "summary": "Answer pong",
                                                      "responses": {"200": {"description": "Pong"}}}}
        document["components"]["schemas"]["Pong"] = {"type": "object", "properties": {"pong": {"type": "boolean"}}}
        return document

    monkeypatch.setattr(reference_pages, "openapi_document", extended)
    body = text(admin_client.get("/api-reference"))
    assert "Answer pong" in body and 'id="schema-Pong"' in body and "/api/ping.php" in body


def test_types_read_as_people_say_them():
    def read(schema):
        return "".join(part.label for part in reference_pages.describe_type(schema))

    assert read({"type": "string", "format": "uri"}) == "string (uri)"
    assert read({"type": ["integer", "null"]}) == "integer | null"
    assert read({"type": "array", "items": {"$ref": "#/components/schemas/Scan"}}) == "array of Scan"
    assert read({"anyOf": [{"$ref": "#/components/schemas/A"}, {"$ref": "#/components/schemas/B"}]}) == "A or B"
    assert read({"enum": ["url", None]}) == "string | null"
