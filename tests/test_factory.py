"""The app factory: integer URL segments every route shares."""
from __future__ import annotations

import re

import pytest
from werkzeug.exceptions import NotFound

from qrtrack.store.schema import MAX_INTEGER

from .conftest import gen_user
from .dashboard_helpers import csrf_token, log_in

pytestmark = pytest.mark.postgresql

INT_SEGMENT = re.compile(r"<int(\([^)]*\))?:\w+>")
KNOWN_INT_ROUTES = {"/settings/users/<int:user_id>/status", "/settings/users/<int:user_id>/remove",
                    "/settings/api-keys/<int:key_id>/revoke"}


def int_routes(app) -> list[tuple[str, str]]:
    """(rule, method) for every route with an integer segment."""
    return [(rule.rule, method) for rule in app.url_map.iter_rules() if INT_SEGMENT.search(rule.rule)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]


@pytest.fixture
def admin_client(client, db):
    gen_user(db, "alice", is_admin=True)
    log_in(client)
    client.token = csrf_token(client, "/settings/account")
    return client


def test_the_int_routes_are_the_ones_these_tests_know(app):
    """A new `<int:...>` route is covered by the parametrised checks below without more code."""
    assert {rule for rule, _ in int_routes(app)} >= KNOWN_INT_ROUTES


@pytest.mark.parametrize("number", [MAX_INTEGER + 1, 99999999999999999999, 10**400],
                         ids=["2**63", "20 digits", "401 digits"])
def test_an_id_past_what_the_database_holds_is_not_found_on_every_int_route(app, admin_client, number):
    """No route matches it (the factory's converter), so no view or query sees it."""
    assert int_routes(app)
    for rule, method in int_routes(app):
        url = INT_SEGMENT.sub(str(number), rule)
        with pytest.raises(NotFound):
            app.url_map.bind("localhost").match(url, method=method)
        response = admin_client.open(url, method=method, headers={"X-CSRFToken": admin_client.token})
        assert response.status_code == 404, (method, url)


def test_the_largest_id_the_database_holds_is_looked_up_and_not_found(app, admin_client):
    assert int_routes(app)
    for rule, method in int_routes(app):
        url = INT_SEGMENT.sub(str(MAX_INTEGER), rule)
        endpoint, arguments = app.url_map.bind("localhost").match(url, method=method)
        assert MAX_INTEGER in arguments.values(), (endpoint, arguments)
        response = admin_client.open(url, method=method, headers={"X-CSRFToken": admin_client.token})
        assert response.status_code == 404, (method, url)


def test_links_to_int_routes_are_still_built(app):
    with app.test_request_context():
        from flask import url_for

        assert url_for("dashboard.remove_user", user_id=7).endswith("/settings/users/7/remove")
