"""What the shared-hosting entries (passenger_wsgi.py, app.cgi, app.fcgi) share: the venv and the mount folder.

Standard library only, and kept to old Python syntax: it runs first, under whatever Python the host
started, often not the one that has our dependencies. Paths are plain strings: pathlib would cost a
CGI scan, which imports this module on every request, several milliseconds (it pulls in re and enum).
"""
import os
import sys

ROOT = os.path.dirname(os.path.realpath(__file__))
VENV_VARIABLE = "QRTRACK_VENV"
_REEXEC_MARK = "QRTRACK_REEXECUTED_INTO"
_site_has_run = not sys.flags.no_site


def find_venv():
    """The app's virtual environment: $QRTRACK_VENV when set, else .venv beside this file; None if it has no python."""
    venv = os.environ.get(VENV_VARIABLE) or os.path.join(ROOT, ".venv")
    return venv if os.path.isfile(os.path.join(venv, "bin", "python")) else None


def use_venv(*python_options):
    """Re-execute this process under the venv's python unless it already runs there, or there is no venv.

    The same process image is replaced, so Passenger's loader arguments, the CGI environment and
    mod_fcgid's listening socket on fd 0 all carry over. python_options go before the script: app.cgi
    passes -S (see add_venv_packages).
    """
    venv = find_venv()
    if venv is None or runs_in(venv):
        return
    if os.environ.get(_REEXEC_MARK) == venv:
        sys.exit(f"QR Track: {venv} did not start inside its virtual environment; recreate the venv")
    os.environ[_REEXEC_MARK] = venv
    python = os.path.join(venv, "bin", "python")
    os.execv(python, [python, *python_options] + sys.argv)


def runs_in(venv):
    """Whether this process runs the venv's python: sys.prefix says so once site has run; under python -S,
    which skips site, only the path the interpreter was started by does."""
    venv = os.path.realpath(venv)
    started_from = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    return os.path.realpath(sys.prefix) == venv or os.path.realpath(started_from) == venv


def add_venv_packages():
    """Under python -S, put the venv's site-packages on sys.path without running site.

    app.cgi runs under -S: site's work (reading pyvenv.cfg, the .pth files, sitecustomize) costs every
    CGI request ~2 ms, while its lean path needs only the packages' folder. Outside a plain venv (none,
    or one that includes the system's packages) site runs after all. The full app calls run_site first.
    """
    if _site_has_run:
        return
    venv = find_venv()
    if venv is not None and runs_in(venv) and not _includes_system_packages(venv):
        packages = os.path.join(venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
        if os.path.isdir(packages):
            sys.path.append(packages)
            return
    run_site()


def run_site():
    """Set up sys.path and the rest as python does at start-up without -S; once, and only if it has not."""
    global _site_has_run
    if not _site_has_run:
        _site_has_run = True
        import site

        site.main()


def import_sqlite_without_functools():
    """Import SQLite's C module for a one-shot CGI process without importing functools and collections.

    _sqlite3 imports functools only to take lru_cache for its statement cache, and functools imports
    collections: without this a CGI scan takes 1.24× as long (bench/run.py devices), the most its imports had
    left (records.py keeps the app's own modules off collections). A CGI process runs each statement about
    once, so _sqlite3 is given, while it loads, a stand-in functools whose lru_cache caches nothing; then the
    stand-in is gone, and the real functools imports as usual (the full app, when the lean path leaves a
    request to it, only loses statement caching for that one request). Should _sqlite3 want more of functools
    (another Python), it is imported the usual way. Long-running processes must not call this: they keep the
    statement cache.
    """
    if "_sqlite3" in sys.modules or "functools" in sys.modules:
        return
    stand_in = type(sys)("functools")
    stand_in.lru_cache = _caches_nothing
    sys.modules["functools"] = stand_in
    try:
        import _sqlite3  # noqa: F401 - kept in sys.modules for qrtrack.store.sqlite_scans
    except (AttributeError, ImportError):  # it wanted more than lru_cache, or there is no SQLite here
        pass
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]


def _caches_nothing(maxsize=128, typed=False):
    return lambda function: function


def _includes_system_packages(venv):
    try:
        with open(os.path.join(venv, "pyvenv.cfg")) as config:
            lines = config.read().lower().splitlines()
    except OSError:
        return True  # not a venv python made: let site decide
    return any(line.replace(" ", "") == "include-system-site-packages=true" for line in lines)


def load_app():
    """app.py's app, imported now: what app.fcgi and passenger_wsgi.py hand qrtrack.web.fastpath.lean_until_loaded."""
    from app import app

    return app


def mounted_at_folder(wsgi_app):
    """Wrap wsgi_app so links follow the folder the app is mounted at, not the script serving it (see follow_mount)."""
    def app(environ, start_response):
        follow_mount(environ)
        return wsgi_app(environ, start_response)

    return app


def follow_mount(environ):
    """Change a WSGI environ from the script serving the app to the folder it is mounted at.

    .htaccess rewrites /qr/api.php to /qr/app.cgi/api.php, so Apache reports SCRIPT_NAME=/qr/app.cgi and
    url_for() would build /qr/app.cgi/p/<slug>. The script's own name is dropped from SCRIPT_NAME.
    The Authorization header that .htaccess saved through a rewrite (REDIRECT_HTTP_AUTHORIZATION) is put back.
    """
    script_name = environ.get("SCRIPT_NAME", "")
    folder, _, last = script_name.rpartition("/")
    if last and last == os.path.basename(environ.get("SCRIPT_FILENAME", "")):
        environ["SCRIPT_NAME"] = folder
    if not environ.get("HTTP_AUTHORIZATION") and environ.get("REDIRECT_HTTP_AUTHORIZATION"):
        environ["HTTP_AUTHORIZATION"] = environ["REDIRECT_HTTP_AUTHORIZATION"]


def cgi_wsgi_environ():
    """This CGI request as the WSGI environ the app gets from wsgiref's CGIHandler through mounted_at_folder.

    For app.cgi's lean path (qrtrack.web.fastpath.serve_cgi), whose image cache keys are built from the
    request's URL and so must see the URL the full app saw when it cached the image.
    """
    environ = dict(os.environ)
    environ["wsgi.url_scheme"] = "https" if environ.get("HTTPS") in ("yes", "on", "1") else "http"
    follow_mount(environ)
    return environ
