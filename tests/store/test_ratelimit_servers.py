"""Rate-limit counters on a redis or memcached server (RATELIMIT_STORAGE_URI), through the real app: the limits
hold across processes, and a server that is down, silent or comes back is handled as the README says.

Two apps on one instance stand for two worker processes: each builds its own limiter and storage client.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest

from qrtrack.store.ratelimit import COUNTER_SERVER_TIMEOUT_SECONDS

from ..conftest import PROJECT_ROOT, close_app, gen_key, gen_user, make_app, require
from ..counter_servers import CounterServer, MemcachedServer, RedisServer, SilentServer
from ..dashboard_helpers import log_in, text

pytestmark = pytest.mark.server

SERVERS = [RedisServer, MemcachedServer]
REDIS_PASSWORD = "s3cret-counter-pass"


@pytest.fixture(params=SERVERS, ids=[server.scheme for server in SERVERS])
def counter_server(request):
    require([request.param.program] if request.param.missing() else [], "run a counter server")
    server = request.param()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_apps(tmp_path):
    """Apps on one instance folder and database, with the given settings; each is closed at the end."""
    apps = []

    def build(**settings):
        apps.append(make_app(tmp_path, **settings))
        return apps[-1]

    yield build
    for app in apps:
        close_app(app)
        app.extensions["qrtrack_limiter"].storage.storage.close()  # the redis or memcached client's sockets


def api_key_for(app) -> str:
    db = app.extensions["qrtrack"].db
    return gen_key(db, gen_user(db, "alice"))


def list_codes(app, key: str):
    return app.test_client().get("/api.php", headers={"X-Api-Key": key})


def test_the_api_limit_is_counted_on_the_server_across_processes(counter_server, make_apps, tmp_path):
    first, second = (make_apps(RATELIMIT_STORAGE_URI=counter_server.uri, API_RATE_LIMIT="3") for _ in range(2))
    key = api_key_for(first)

    statuses = [list_codes(app, key).status_code for app in (first, second, first)]
    refused = list_codes(second, key)

    assert statuses == [200, 200, 200]
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert not (tmp_path / "ratelimit.db").exists()  # the default SQLite counters were never used


def test_failed_sign_ins_are_counted_on_the_server_across_processes(counter_server, make_apps):
    first, second = (make_apps(RATELIMIT_STORAGE_URI=counter_server.uri) for _ in range(2))
    gen_user(first.extensions["qrtrack"].db, "alice")
    clients = [first.test_client(), second.test_client()]

    failures = [log_in(clients[attempt % 2], password="wrong password").status_code for attempt in range(10)]
    refused = log_in(clients[0])

    assert failures == [401] * 10
    assert refused.status_code == 429 and "Too many login attempts" in text(refused)


def test_a_server_that_goes_down_gets_503_until_it_is_back(counter_server, make_apps, caplog):
    app = make_apps(RATELIMIT_STORAGE_URI=counter_server.uri)
    key = api_key_for(app)
    client = app.test_client()
    assert list_codes(app, key).status_code == 200  # a connection is open when the server goes

    counter_server.stop()
    with caplog.at_level(logging.ERROR):
        refused = [list_codes(app, key) for _ in range(2)]  # the open connection fails, then a new one is refused
        sign_in = log_in(client)
    counter_server.start()

    assert [response.status_code for response in refused] == [503, 503]
    assert all(response.headers["Retry-After"] == "60" for response in refused)
    assert refused[0].get_json()["error"]["code"] == "rate_limit_unavailable"
    assert sign_in.status_code == 503 and "Back in a moment" in text(sign_in)
    logged = [record.getMessage() for record in caplog.records if "rate-limit storage failed" in record.getMessage()]
    assert len(logged) == 3
    assert all(f"check the {counter_server.scheme} server that RATELIMIT_STORAGE_URI names" in message
               for message in logged)
    assert list_codes(app, key).status_code == 200
    assert log_in(client).status_code == 302


@pytest.mark.parametrize("scheme", [server.scheme for server in SERVERS])
def test_a_server_down_from_the_start_gets_503_not_a_500(scheme, make_apps):
    """The app's first connection is refused. pymemcache raises ConnectionRefusedError itself, which limits 5.8
    does not count as the storage's failure: this was a 500 before ratelimit.MemcachedStorage."""
    nothing_listens = CounterServer().port
    app = make_apps(RATELIMIT_STORAGE_URI=f"{scheme}://127.0.0.1:{nothing_listens}")
    response = list_codes(app, api_key_for(app))
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "rate_limit_unavailable"


@pytest.mark.parametrize("scheme", [server.scheme for server in SERVERS])
def test_a_server_that_never_answers_gets_503_after_the_timeout(scheme, make_apps):
    """A server that has hung, or a firewall that drops its answers: without a bound every API call would wait
    for minutes. Run in a thread, so that a regression fails here instead of hanging the suite."""
    silent = SilentServer()
    app = make_apps(RATELIMIT_STORAGE_URI=f"{scheme}://127.0.0.1:{silent.port}")
    key = api_key_for(app)
    answers = []
    call = threading.Thread(target=lambda: answers.append(list_codes(app, key)), daemon=True)
    started = time.monotonic()
    call.start()
    call.join(timeout=COUNTER_SERVER_TIMEOUT_SECONDS * 10)
    waited = time.monotonic() - started
    silent.close()

    assert answers, f"the API call was still waiting on the silent {scheme} server after {waited:.0f} s"
    assert answers[0].status_code == 503 and answers[0].get_json()["error"]["code"] == "rate_limit_unavailable"


def test_a_password_in_a_redis_uri_is_used_and_never_logged(make_apps, caplog):
    require([RedisServer.program] if RedisServer.missing() else [], "run a counter server")
    server = RedisServer(password=REDIS_PASSWORD)
    server.start()
    try:
        app = make_apps(RATELIMIT_STORAGE_URI=server.uri, API_RATE_LIMIT="1")
        key = api_key_for(app)
        assert [list_codes(app, key).status_code for _ in range(2)] == [200, 429]
        server.stop()
        with caplog.at_level(logging.ERROR):
            assert list_codes(app, key).status_code == 503
    finally:
        server.stop()
    assert caplog.records and all(REDIS_PASSWORD not in record.getMessage() for record in caplog.records)


def test_a_missing_client_library_stops_the_app_with_one_line(tmp_path):
    """The README says to pip install redis or pymemcache into the venv; without it the app names what is missing."""
    script = ("import sys; sys.modules['redis'] = None\n"
              "from qrtrack import create_app\n"
              "from qrtrack.config import ConfigError\n"
              "try:\n"
              f"    create_app({{'TESTING': True, 'ENV_FILE': None, 'INSTANCE_PATH': {str(tmp_path)!r},\n"
              "                'RATELIMIT_STORAGE_URI': 'redis://127.0.0.1:6379'})\n"
              "except ConfigError as error:\n"
              "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("RATELIMIT_STORAGE_URI cannot be used: ") and "'redis'" in result.stdout

