"""Helpers for driving the dashboard through the Flask test client: CSRF tokens and signing in."""
from __future__ import annotations

import re

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from .conftest import PASSWORD

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
HIDDEN_FIELD = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """The token a form on this page carries (every dashboard form has one)."""
    response = client.get(path)
    match = CSRF_FIELD.search(response.get_data(as_text=True))
    assert match, f"no csrf_token on {path} ({response.status_code})"
    return match.group(1)


def log_in(client: FlaskClient, username: str = "alice", password: str = PASSWORD, **kwargs) -> TestResponse:
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token}, **kwargs)


def post_form(client: FlaskClient, path: str, data: dict[str, str] | None = None, *, form_page: str | None = None,
              **kwargs) -> TestResponse:
    """POST like the browser does: with the CSRF token of the page the form sits on."""
    token = csrf_token(client, form_page or path)
    return client.post(path, data={**(data or {}), "csrf_token": token}, **kwargs)


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of the page's forms, by name (a later one of the same name wins)."""
    return dict(HIDDEN_FIELD.findall(page))
