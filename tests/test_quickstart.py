"""The README's first command, for real: set up a copy of the project, serve it, scan a code over HTTP."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import PROJECT_ROOT, env_without_settings
from .deploy.site import free_port

pytestmark = pytest.mark.server


def copy_project(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = PROJECT_ROOT / name
        if source.is_file() and not name.startswith("tests/"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(PROJECT_ROOT / ".venv")


def wait_for(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError as error:
            error.close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"server did not answer on {url}")


def fetch_json(request: urllib.request.Request | str) -> dict:
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_serve_command_sets_up_and_serves_a_working_app(tmp_path):
    project = tmp_path / "qrtrack"
    copy_project(project)
    port = free_port()
    process = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "2"],
                               cwd=project, env=env_without_settings(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + "/login", process)
        env_text = (project / "TiCore" / ".env").read_text()
        assert re.search(r"^SECRET_KEY=\S{40,}$", env_text, re.MULTILINE)
        key = subprocess.run([str(project / ".venv" / "bin" / "python"), "-m", "flask", "--app", "app",
                              "create-api-key", "admin"], cwd=project, env=env_without_settings(),
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        request = urllib.request.Request(base + "/api.php", method="POST", headers={
            "X-Api-Key": key, "Content-Type": "application/json"},
            data=json.dumps({"destination": "https://example.com/hello"}).encode())
        created = fetch_json(request)
        assert created["short_url"].startswith(base + "/p/")
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(created["short_url"], timeout=10)
        redirect.value.close()
        assert redirect.value.code == 302 and redirect.value.headers["Location"] == "https://example.com/hello"
        detail = fetch_json(urllib.request.Request(base + "/api.php?uuid=" + created["uuid"],
                                                   headers={"X-Api-Key": key}))
        assert detail["scan_count"] == 1 and len(detail["scans"]) == 1
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert re.search(r"Log in as 'admin' with password '[^']{12,}'", output), output
    assert "Using worker: sync" in output and output.count("ready (gunicorn.conf.py)") == 2, output


def test_serve_with_an_invalid_setting_stops_with_the_apps_one_line_and_no_traceback(tmp_path):
    project = tmp_path / "qrtrack"
    copy_project(project)
    run = subprocess.run([sys.executable, "manage.py", "serve", "--port", str(free_port())], cwd=project,
                         env={**env_without_settings(), "API_RATE_LIMIT": "abc"}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "API_RATE_LIMIT" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr, run.stderr
