"""hosting.py, which the shared-hosting entries share: finding the venv and the folder the app is mounted at."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hosting

from ..conftest import needs_tool
from .apache import MODULES, PROJECT_ROOT


def make_venv_layout(folder: Path) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python").write_text("")
    return folder


def echo_environ(environ, start_response):
    start_response("200 OK", [])
    return [environ]


def call(app, **environ):
    return app(environ, lambda status, headers: None)[0]


def test_venv_named_by_the_environment_wins(tmp_path, monkeypatch):
    venv = make_venv_layout(tmp_path / "elsewhere")
    monkeypatch.setenv(hosting.VENV_VARIABLE, str(venv))
    assert hosting.find_venv() == str(venv)


def test_folder_without_a_python_is_not_a_venv(tmp_path, monkeypatch):
    monkeypatch.setenv(hosting.VENV_VARIABLE, str(tmp_path))
    assert hosting.find_venv() is None


def test_use_venv_leaves_a_process_already_in_its_venv_alone(monkeypatch):
    monkeypatch.setenv(hosting.VENV_VARIABLE, sys.prefix)
    monkeypatch.setattr(os, "execv", lambda *args: pytest.fail(f"re-executed: {args}"))
    hosting.use_venv()


def test_use_venv_re_executes_once_under_the_venv_python(tmp_path, monkeypatch):
    venv = make_venv_layout(tmp_path / "venv")
    monkeypatch.setenv(hosting.VENV_VARIABLE, str(venv))
    monkeypatch.delenv(hosting._REEXEC_MARK, raising=False)
    monkeypatch.setattr(sys, "argv", ["/srv/qr/app.cgi"])
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    hosting.use_venv("-S")
    python = str(venv / "bin" / "python")
    assert calls == [(python, [python, "-S", "/srv/qr/app.cgi"])]
    with pytest.raises(SystemExit, match="did not start inside its virtual environment"):
        hosting.use_venv()


in_a_venv = pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the tests run outside a virtual environment")


def run_under_python_s(program: str) -> list[str]:
    """program's printed lines, run by this venv's python with -S, as app.cgi's first line asks."""
    env = {**os.environ, hosting.VENV_VARIABLE: sys.prefix}
    env.pop(hosting._REEXEC_MARK, None)
    run = subprocess.run([sys.executable, "-S", "-c", program], cwd=PROJECT_ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


@in_a_venv
def test_under_python_s_the_venv_packages_are_found_without_running_site():
    printed = run_under_python_s(
        "import sys, hosting\n"
        "hosting.use_venv('-S')\n"  # already the venv's python: no re-execution
        "hosting.add_venv_packages()\n"
        "import iptocc\n"  # a package of the venv's, which the lean path needs
        "print('site' in sys.modules, sys.prefix == sys.base_prefix)\n"
        "hosting.run_site()\n"
        "hosting.run_site()\n"  # once is enough
        "import flask\n"
        "print('site' in sys.modules, sys.prefix == sys.base_prefix, sys.path.count(sys.path[-1]))\n")
    assert printed == ["False True", "True False 1"]


def test_sqlite_is_imported_without_functools_and_works_then_the_real_functools_imports():
    printed = run_under_python_s(
        "import sys, hosting\n"
        "hosting.import_sqlite_without_functools()\n"
        "print(sorted(name for name in ('_sqlite3', 'functools', 'collections') if name in sys.modules))\n"
        "import _sqlite3\n"
        "conn = _sqlite3.connect(':memory:')\n"  # every statement prepared anew: the stand-in caches nothing
        "print([conn.execute('SELECT ? * 2', (n,)).fetchone()[0] for n in range(3)])\n"
        "import functools\n"
        "print(functools.reduce(lambda a, b: a + b, [1, 2, 3]), functools.lru_cache(maxsize=2)(abs)(-4))\n")
    assert printed == ["['_sqlite3']", "[0, 2, 4]", "6 4"]


def test_sqlite_is_imported_as_usual_where_functools_is_loaded_already():
    """A long-running process (the full app loaded first) keeps sqlite3's statement cache."""
    printed = run_under_python_s(
        "import sys, functools, hosting\n"
        "hosting.import_sqlite_without_functools()\n"
        "print('_sqlite3' in sys.modules, sys.modules['functools'] is functools)\n")
    assert printed == ["False True"]


def test_a_venv_that_includes_the_system_packages_runs_site(tmp_path, monkeypatch):
    venv = make_venv_layout(tmp_path / "venv")
    packages = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    packages.mkdir(parents=True)
    monkeypatch.setenv(hosting.VENV_VARIABLE, str(venv))
    monkeypatch.setattr(hosting, "_site_has_run", False)  # as under python -S
    monkeypatch.setattr(hosting, "runs_in", lambda _venv: True)
    monkeypatch.setattr(sys, "path", list(sys.path))
    site_runs = []
    monkeypatch.setattr(hosting, "run_site", lambda: site_runs.append("site"))
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.11.2\n")
    assert hosting._includes_system_packages(str(venv))
    hosting.add_venv_packages()
    assert site_runs == ["site"] and str(packages) not in sys.path
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    assert not hosting._includes_system_packages(str(venv))
    hosting.add_venv_packages()
    assert site_runs == ["site"] and sys.path[-1] == str(packages)


@pytest.mark.parametrize(("script_name", "expected"), [
    ("/qr/app.cgi", "/qr"),
    ("/app.cgi", ""),
    ("/deep/er/app.cgi", "/deep/er"),
    ("/qr", "/qr"),          # ScriptAlias /qr /path/app.cgi: already the folder
    ("", ""),
])
def test_script_name_becomes_the_folder_the_app_is_mounted_at(script_name, expected):
    environ = call(hosting.mounted_at_folder(echo_environ), SCRIPT_NAME=script_name,
                   SCRIPT_FILENAME="/var/www/qr/app.cgi")
    assert environ["SCRIPT_NAME"] == expected


def test_authorization_saved_through_a_rewrite_is_restored():
    environ = call(hosting.mounted_at_folder(echo_environ), REDIRECT_HTTP_AUTHORIZATION="Bearer x")
    assert environ["HTTP_AUTHORIZATION"] == "Bearer x"
    environ = call(hosting.mounted_at_folder(echo_environ), HTTP_AUTHORIZATION="Bearer a",
                   REDIRECT_HTTP_AUTHORIZATION="Bearer b")
    assert environ["HTTP_AUTHORIZATION"] == "Bearer a"


def test_cgi_entries_are_executable():
    for name in ("app.cgi", "app.fcgi"):
        assert os.access(PROJECT_ROOT / name, os.X_OK), f"{name} must be committed with mode 755"


@needs_tool("/usr/sbin/apache2", install="the Debian package apache2")
@pytest.mark.parametrize("sample", ["apache-passenger.conf", "apache-fcgid.conf"])
def test_apache_samples_pass_apache_syntax_check(sample, tmp_path):
    (tmp_path / "html" / "qr").mkdir(parents=True)
    text = (PROJECT_ROOT / "deploy" / sample).read_text().replace("/var/www/html", str(tmp_path / "html"))
    (tmp_path / "sample.conf").write_text(text)
    modules = ["mpm_prefork", "authz_core", "mime", "dir", "rewrite", "cgi", "fcgid", "passenger"]
    loads = "\n".join(f"LoadModule {name}_module {MODULES}/mod_{name}.so" for name in modules
                      if (MODULES / f"mod_{name}.so").exists())
    (tmp_path / "httpd.conf").write_text(
        f"ServerRoot {tmp_path}\nListen 127.0.0.1:1\nErrorLog {tmp_path}/error.log\nPidFile {tmp_path}/pid\n"
        f"DefaultRuntimeDir {tmp_path}\n{loads}\n"
        "PassengerRoot /usr/lib/ruby/vendor_ruby/phusion_passenger/locations.ini\n" * ("passenger" in loads)
        + f"Include {tmp_path}/sample.conf\n")
    result = subprocess.run(["/usr/sbin/apache2", "-t", "-f", tmp_path / "httpd.conf"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
