"""The API contract, black-box, against a real gunicorn with two workers on 127.0.0.1.

The four client examples of the API page (curl, PHP, Python requests, Node fetch) run as printed
there, with only the URL and the key changed; the rate limit is counted across both workers; a loop
of POSTs at the configured rate creates every code. The instance is prepared with the CLI
(init-db, create-user, create-api-key) as an operator would.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from qrtrack.config import PROJECT_ROOT, SETTINGS
from qrtrack.web.dashboard import reference_pages
from qrtrack.web.openapi import openapi_document

from ..conftest import PASSWORD, env_without_settings, needs_tool
from ..deploy.site import free_port

pytestmark = pytest.mark.server

SEED_URL = "https://qr.yoursite.com/api.php"
# The examples exactly as the API page prints them; the tests change only SEED_URL and the key.
SEED_CURL = """\
curl -X POST https://qr.yoursite.com/api.php \\
     -H "X-Api-Key: $QRT_KEY" \\
     -H "Content-Type: application/json" \\
     -d '{"type":"url","destination":"https://example.com","label":"Test"}'
"""
SEED_PHP = """\
$ch = curl_init('https://qr.yoursite.com/api.php');
curl_setopt_array($ch, [
    CURLOPT_POST           => true,
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_HTTPHEADER     => ['X-Api-Key: ' . $apiKey, 'Content-Type: application/json'],
    CURLOPT_POSTFIELDS     => json_encode(['type'=>'url','destination'=>'https://example.com']),
]);
$response = json_decode(curl_exec($ch), true);
"""
SEED_PYTHON = """\
import requests, os
r = requests.post(
    'https://qr.yoursite.com/api.php',
    headers={'X-Api-Key': os.environ['QRT_KEY']},
    json={'type': 'url', 'destination': 'https://example.com', 'label': 'Test'}
)
print(r.json())
"""
SEED_NODE = """\
const r = await fetch('https://qr.yoursite.com/api.php', {
    method: 'POST',
    headers: {
        'X-Api-Key': process.env.QRT_KEY,
        'Content-Type': 'application/json'
    },
    body: JSON.stringify({ type: 'url', destination: 'https://example.com' })
});
const data = await r.json();
"""
CLIENT_TIMEOUT = 30
WORKERS = 2
needs_php = needs_tool("php", install="the Debian packages php-cli and php-curl")
needs_node = needs_tool("node", install="node 18+ (Debian package nodejs)")


@dataclass
class Server:
    url: str
    keys: dict[str, str]
    access_log: Path

    @property
    def api(self) -> str:
        return self.url + "/api.php"

    def get_code(self, uuid: str) -> dict:
        response = requests.get(self.api, params={"uuid": uuid}, headers={"X-Api-Key": self.keys["check"]},
                                timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def count_codes(self) -> int:
        response = requests.get(self.api, headers={"X-Api-Key": self.keys["check"]}, timeout=10)
        return response.json()["total"]


def server_environment(instance: Path, rate_limit: str) -> dict[str, str]:
    """Every setting spelt out, so a developer's TiCore/.env cannot change what is tested; BASE_URL empty."""
    env = env_without_settings()
    env.update({setting.name: setting.default for setting in SETTINGS})
    env.update(INSTANCE_PATH=str(instance), SECRET_KEY="server-test-" + "s" * 40, API_RATE_LIMIT=rate_limit,
               BASE_URL="")
    return env


def flask_cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    """Until both workers are up: one answering is not enough, as a burst would then meet only it (each
    worker warms up in gunicorn.conf.py's post_worker_init and logs a line when ready)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited early:\n{log.read_text()}")
        try:
            requests.get(url + "/api/openapi.json", timeout=5)
            if log.read_text().count("ready (gunicorn.conf.py)") >= WORKERS:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.2)
    raise AssertionError(f"gunicorn did not answer on {url} with {WORKERS} workers:\n{log.read_text()}")


@contextmanager
def api_server(tmp_path: Path, *, rate_limit: str, key_names: tuple[str, ...]) -> Iterator[Server]:
    """gunicorn, 2 workers, on a free 127.0.0.1 port, with an instance made by the CLI; always stopped."""
    instance = tmp_path / "instance"
    env = server_environment(instance, rate_limit)
    flask_cli(env, "init-db")
    flask_cli(env, "create-user", "alice", "--password", PASSWORD)
    keys = {name: flask_cli(env, "create-api-key", "alice", "--label", name).strip().splitlines()[-1]
            for name in key_names}
    port = free_port()
    log, access_log = tmp_path / "gunicorn.log", tmp_path / "access.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
             "--access-logfile", str(access_log), "--access-logformat", "%(p)s %(s)s %(m)s %(U)s", "app:app"],
            cwd=PROJECT_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process, log)
        yield Server(url=url, keys=keys, access_log=access_log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The default limit (60 per minute). Keys: one for the seed clients, one for bulk creation, one to look."""
    with api_server(tmp_path_factory.mktemp("api-server"), rate_limit="60",
                    key_names=("clients", "bulk", "check")) as running:
        yield running


def run_client(command: list[str], server: Server, *, stdin: str | None = None) -> str:
    env = {**env_without_settings(), "QRT_KEY": server.keys["clients"]}
    result = subprocess.run(command, input=stdin, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_created(server: Server, answer: dict, *, label: str) -> None:
    """The seed's create answer, pointing at this server (no BASE_URL), and a code that works."""
    assert {"uuid", "short_url", "qr_image_url"} <= set(answer)
    slug = answer["short_url"].rsplit("/", 1)[1]
    assert answer["short_url"] == f"{server.url}/p/{slug}"
    assert answer["qr_image_url"] == f"{server.url}/img/{slug}.png"
    stored = server.get_code(answer["uuid"])
    assert (stored["type"], stored["destination"], stored["label"]) == ("url", "https://example.com", label)
    redirect = requests.get(answer["short_url"], allow_redirects=False, timeout=10)
    assert (redirect.status_code, redirect.headers["Location"]) == (302, "https://example.com")
    image = requests.get(answer["qr_image_url"], timeout=10)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"


def test_seed_curl_example_creates_a_code(server):
    assert shutil.which("curl"), "curl is needed"
    output = run_client(["bash", "-c", SEED_CURL.replace(SEED_URL, server.api)], server)
    assert_created(server, json.loads(output), label="Test")


def test_every_curl_example_of_the_api_reference_answers_as_documented(server):
    """The dashboard's API reference prints these for people to paste: each runs to its end (a HEAD written as
    -X HEAD would wait for a body) and gets a status its operation documents."""
    assert shutil.which("curl"), "curl is needed"
    reference = reference_pages.describe_document(openapi_document(server_url=server.url))
    statuses = {}
    for operation in reference.operations:
        for title, command in operation.curl_examples:
            status = run_client(["bash", "-c", command + " --silent --output /dev/null --write-out '%{http_code}'"],
                                server)
            assert status in {response.status for response in operation.responses}, (title, status)
            statuses[title] = status
    assert statuses["GET /api.php"] == statuses["HEAD /api.php"] == "200"
    assert statuses["OPTIONS /api.php"] == "204"
    assert statuses["POST /api.php · CreateCode"] == "201"


@needs_php
def test_seed_php_example_creates_a_code(server, tmp_path):
    script = tmp_path / "client.php"
    script.write_text("<?php\n$apiKey = getenv('QRT_KEY');\n" + SEED_PHP.replace(SEED_URL, server.api)
                      + "echo json_encode(['status' => curl_getinfo($ch, CURLINFO_RESPONSE_CODE),"
                      " 'response' => $response]);\n")
    answer = json.loads(run_client(["php", str(script)], server))
    assert answer["status"] == 201
    assert_created(server, answer["response"], label="")


def test_seed_python_example_creates_a_code(server):
    output = run_client([sys.executable, "-"], server, stdin=SEED_PYTHON.replace(SEED_URL, server.api))
    assert_created(server, ast.literal_eval(output.strip()), label="Test")


@needs_node
def test_seed_node_fetch_example_creates_a_code(server, tmp_path):
    script = tmp_path / "client.mjs"
    script.write_text(SEED_NODE.replace(SEED_URL, server.api)
                      + "console.log(JSON.stringify({status: r.status, data}));\n")
    answer = json.loads(run_client(["node", str(script)], server))
    assert answer["status"] == 201
    assert_created(server, answer["data"], label="")


def test_seed_list_get_and_update_over_http(server):
    headers = {"X-Api-Key": server.keys["clients"]}
    created = requests.post(server.api, headers=headers, json={"destination": "https://example.com/old"}, timeout=10)
    assert created.status_code == 201
    assert created.headers["X-RateLimit-Limit"] == "60" and "Retry-After" not in created.headers
    uuid = created.json()["uuid"]
    listed = requests.get(server.api, headers=headers, timeout=10).json()["codes"]
    assert uuid in {code["uuid"] for code in listed}
    assert all(type(code["scans"]) is int for code in listed)

    updated = requests.post(server.api, params={"uuid": uuid}, headers=headers,
                            json={"destination": "https://example.com/new-destination"}, timeout=10)

    assert updated.status_code == 200
    redirect = requests.get(created.json()["short_url"], allow_redirects=False, timeout=10)
    assert redirect.headers["Location"] == "https://example.com/new-destination"
    assert server.get_code(uuid)["scans_total"] == 1


@pytest.mark.parametrize(("method", "kwargs", "status"), [
    ("GET", {"headers": {}}, 401),
    ("PUT", {"json": {"destination": "https://example.com"}}, 405),
    ("POST", {"data": "x" * (65 * 1024), "headers": {"Content-Type": "application/json"}}, 413),
    ("POST", {"data": "destination=https://example.com",
              "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415),
    ("POST", {"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400),
])
def test_errors_over_http_are_json(server, method, kwargs, status):
    headers = {"X-Api-Key": server.keys["clients"], **kwargs.pop("headers", {})}
    if status == 401:
        headers.pop("X-Api-Key")
    response = requests.request(method, server.api, headers=headers, timeout=10, **kwargs)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.json()["error"]) >= {"code", "message"}


def test_bulk_creation_at_the_configured_rate_all_succeeds(server):
    """The page's "loop POST requests": 60 in a minute with the default limit, every one created."""
    headers = {"X-Api-Key": server.keys["bulk"]}
    before = server.count_codes()
    started = time.monotonic()
    with requests.Session() as session:
        statuses = [session.post(server.api, headers=headers, timeout=10,
                                 json={"destination": f"https://example.com/bulk/{n}", "label": f"bulk {n}"}
                                 ).status_code for n in range(60)]
        over = session.post(server.api, headers=headers, json={"destination": "https://example.com/"}, timeout=10)
    assert time.monotonic() - started < 60, "the loop must fit in one rate-limit window"
    assert statuses == [201] * 60
    assert over.status_code == 429
    assert server.count_codes() == before + 60


def test_rate_limit_is_counted_across_both_workers(tmp_path):
    """25 concurrent creates with a limit of 10: exactly 10 are made, whichever worker takes them."""
    with api_server(tmp_path, rate_limit="10", key_names=("burst", "check")) as running:
        barrier = threading.Barrier(25)

        def fire(n: int) -> requests.Response:
            barrier.wait(timeout=30)
            return requests.post(running.api, headers={"X-Api-Key": running.keys["burst"]}, timeout=30,
                                 json={"destination": f"https://example.com/burst/{n}"})

        with ThreadPoolExecutor(max_workers=25) as pool:
            responses = list(pool.map(fire, range(25)))

        assert Counter(r.status_code for r in responses) == {201: 10, 429: 15}
        for response in responses:
            assert response.headers["X-RateLimit-Limit"] == "10"
            if response.status_code == 201:
                assert "Retry-After" not in response.headers
            else:
                assert re.fullmatch(r"\d+", response.headers["Retry-After"])
                assert 0 <= int(response.headers["Retry-After"]) <= 60
                assert response.json()["error"]["code"] == "rate_limited"
        assert running.count_codes() == 10
        time.sleep(0.5)  # gunicorn writes its access log after the response
        workers = {line.split()[0] for line in running.access_log.read_text().splitlines()
                   if line.split()[2:] == ["POST", "/api.php"]}
        assert len(workers) == 2, "both workers should have served the burst"
