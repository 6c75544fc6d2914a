"""Dashboard sign-in: /setup, login, logout, the login rate limit, CSRF, cookies, headers and ?next= safety."""
from __future__ import annotations

import re
import time

import itsdangerous
import pytest

from qrtrack import accounts

from ...conftest import PASSWORD, gen_user, make_app
from ...dashboard_helpers import csrf_token, log_in, text

PROTECTED_PAGES = ["/settings/account", "/settings/api-keys", "/console", "/console/history", "/api-reference"]
FORM_POSTS = [
    ("/login", {"username": "alice", "password": PASSWORD}),
    ("/logout", {}),
    ("/settings/account", {"current_password": PASSWORD, "new_password": "another password",
                           "new_password_confirm": "another password"}),
    ("/settings/api-keys", {"name": "sneaky"}),
    ("/settings/users", {"username": "mallory", "password": PASSWORD}),
]


@pytest.fixture
def admin(db) -> int:
    return gen_user(db, "alice", is_admin=True)


# --- setup ---------------------------------------------------------------------------------------

def test_setup_creates_the_first_admin_and_signs_them_in(client, db):
    token = csrf_token(client, "/setup")
    response = client.post("/setup", data={"username": "root", "password": PASSWORD, "password_confirm": PASSWORD,
                                           "csrf_token": token})
    assert response.status_code == 302
    user = accounts.find_user(db, "root")
    assert user.is_admin and user.is_active
    assert client.get("/settings/account").status_code == 200


def test_setup_with_differing_passwords_creates_nobody(client, db):
    token = csrf_token(client, "/setup")
    response = client.post("/setup", data={"username": "root", "password": PASSWORD, "password_confirm": "other",
                                           "csrf_token": token})
    assert response.status_code == 400
    assert "The two passwords differ." in text(response)
    assert accounts.count_users(db) == 0


def test_setup_is_gone_once_a_user_exists(client, admin):
    assert client.get("/setup").status_code == 404
    assert client.post("/setup", data={"username": "x", "password": PASSWORD}).status_code in (400, 404)


def test_home_sends_a_fresh_install_to_setup(client):
    assert client.get("/").location.endswith("/setup")


# --- login and logout ----------------------------------------------------------------------------

def test_login_with_the_right_password_opens_the_dashboard(client, admin):
    response = log_in(client)
    assert response.status_code == 302
    assert client.get("/settings/account").status_code == 200


def test_login_with_a_wrong_password_says_so_and_keeps_the_username(client, admin):
    response = log_in(client, password="wrong password")
    assert response.status_code == 401
    body = text(response)
    assert "Wrong username or password" in body
    assert 'value="alice"' in body
    assert client.get("/settings/account").status_code == 302


def test_login_takes_the_username_in_any_case(client, admin):
    assert log_in(client, "ALICE").status_code == 302
    assert client.get("/settings/account").status_code == 200


def test_a_disabled_user_cannot_log_in(client, db, admin):
    bob = gen_user(db, "bob")
    accounts.set_user_active(db, user_id=bob, is_active=False)
    assert log_in(client, "bob").status_code == 401


@pytest.mark.parametrize("path", PROTECTED_PAGES)
def test_pages_need_a_login(client, admin, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/login?next=" in response.location


def test_logout_is_a_post_and_ends_the_session(client, admin):
    log_in(client)
    assert client.get("/logout").status_code == 405
    token = csrf_token(client, "/settings/account")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/settings/account").status_code == 302


class SignedFiveHoursAgo(itsdangerous.TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 5 * 3600


def test_a_page_left_open_for_hours_still_signs_out_and_saves(client, admin):
    """Flask-WTF refuses tokens over an hour old by default: Log out on a page left open over lunch failed.
    The token is the one the page would have carried five hours ago: this session's, signed then."""
    log_in(client)
    csrf_token(client, "/settings/api-keys")
    with client.session_transaction() as session:
        session_token = session["csrf_token"]
    token = itsdangerous.URLSafeTimedSerializer(client.application.secret_key, salt="wtf-csrf-token",
                                                signer=SignedFiveHoursAgo).dumps(session_token)
    assert client.post("/settings/api-keys", data={"name": "after lunch", "csrf_token": token}).status_code == 201
    assert "after lunch" in text(client.get("/settings/api-keys"))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/settings/account").status_code == 302


def test_a_form_from_before_signing_out_is_refused(client, admin):
    log_in(client)
    token = csrf_token(client, "/settings/api-keys")
    client.post("/logout", data={"csrf_token": token})
    log_in(client)
    response = client.post("/settings/api-keys", data={"name": "stale", "csrf_token": token})
    assert response.status_code == 400 and "earlier sign-in" in text(response)


# --- ?next= ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["/console", "/settings/api-keys?x=1"])
def test_login_follows_a_next_url_on_this_site(client, admin, target):
    response = log_in(client, query_string={"next": target})
    assert response.location == target


@pytest.mark.parametrize("target", [
    "https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example", "/\t/evil.example",
    "/\n/evil.example", "javascript:alert(1)", "evil.example",
])
def test_login_refuses_a_next_url_to_another_site(client, admin, target):
    response = log_in(client, query_string={"next": target})
    assert response.status_code == 302
    assert "evil" not in response.location and "javascript" not in response.location
    assert response.location.startswith("/")
    assert not response.location.startswith("//")


def test_a_signed_in_visit_to_login_refuses_a_foreign_next_url(client, admin):
    log_in(client)
    response = client.get("/login", query_string={"next": "/\t/evil.example"})
    assert "evil" not in response.location


# --- rate limit ------------------------------------------------------------------------------------

def test_failed_logins_are_limited_per_account_whatever_the_address(client, admin):
    for attempt in range(10):
        response = log_in(client, password="wrong password", environ_base={"REMOTE_ADDR": f"10.0.0.{attempt}"})
        assert response.status_code == 401
    response = log_in(client, environ_base={"REMOTE_ADDR": "10.0.1.1"})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.mimetype == "text/html"
    assert "Too many login attempts" in text(response)
    # Another account from the same address still gets in.
    gen_user(client.application.extensions["qrtrack"].db, "bob")
    assert log_in(client, "bob", environ_base={"REMOTE_ADDR": "10.0.1.1"}).status_code == 302


def test_failed_logins_are_limited_per_address_whatever_the_account(client, admin):
    for attempt in range(20):
        response = log_in(client, f"guess{attempt}", environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert response.status_code == 401
    blocked = log_in(client, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert blocked.status_code == 429
    assert "Wait a few minutes" in text(blocked)
    assert log_in(client, environ_base={"REMOTE_ADDR": "192.0.2.8"}).status_code == 302


def test_the_rate_limit_page_is_a_styled_page_of_the_product(client, admin):
    for _ in range(11):
        response = log_in(client, password="wrong password")
    body = text(response)
    assert response.status_code == 429
    assert "<h1>Slow down a little</h1>" in body
    assert "/static/app.css" in body
    assert "Retry-After" not in body


# --- CSRF --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "data"), FORM_POSTS, ids=[path for path, _ in FORM_POSTS])
def test_a_form_posted_without_its_csrf_token_is_refused_with_a_readable_page(client, db, admin, path, data):
    log_in(client)
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "nothing was changed" in text(response)
    assert accounts.authenticate_user(db, username="alice", password=PASSWORD) is not None
    assert len(accounts.list_users(db)) == 1


def test_a_form_posted_with_a_forged_csrf_token_is_refused(client, admin):
    log_in(client)
    response = client.post("/settings/api-keys", data={"name": "x", "csrf_token": "forged"})
    assert response.status_code == 400


def test_every_dashboard_form_carries_a_csrf_token(client, admin):
    log_in(client)
    for path in ["/settings/account", "/settings/api-keys", "/settings/users", "/console"]:
        body = text(client.get(path))
        forms = re.findall(r"<form\b.*?</form>", body, flags=re.S)
        assert forms, path
        for form in forms:
            if 'method="post"' in form:
                assert 'name="csrf_token"' in form, (path, form[:200])


# --- cookies and headers -----------------------------------------------------------------------------

def session_cookie_header(response) -> str:
    return next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("qrtrack_session="))


def test_the_session_cookie_is_httponly_and_samesite_lax(client, admin):
    cookie = session_cookie_header(log_in(client))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_the_session_cookie_is_secure_when_the_site_is_https(tmp_path):
    app = make_app(tmp_path / "instance", BASE_URL="https://qr.example.com")
    gen_user(app.extensions["qrtrack"].db, "alice")
    client = app.test_client()
    page = client.get("/login", base_url="https://qr.example.com")
    token = re.search(r'name="csrf_token" value="([^"]+)"', text(page)).group(1)
    response = client.post("/login", base_url="https://qr.example.com",
                           headers={"Referer": "https://qr.example.com/login"},
                           data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    cookie = session_cookie_header(response)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    app.extensions["qrtrack"].db.dispose()


@pytest.mark.parametrize("path", ["/login", "/setup", *PROTECTED_PAGES, "/settings/users"])
def test_dashboard_pages_carry_the_security_headers(client, db, path):
    if path != "/setup":
        gen_user(db, "alice", is_admin=True)
        log_in(client)
    response = client.get(path)
    assert response.status_code in (200, 302, 404)
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "http" not in csp and "*" not in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
