#!/usr/bin/env python3
"""Set up and run QR Track, or run its tests, on a fresh machine with only python3.

    python3 manage.py serve     # venv, dependencies, TiCore/.env, database, first admin; serves on 127.0.0.1:8000
    python3 manage.py test      # the same set-up plus test tools and Chromium, then lint and the whole test suite

Standard library only: this runs before the virtual environment exists.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
ENV_FILE = ROOT / "TiCore" / ".env"
ENV_EXAMPLE = ROOT / "TiCore" / ".env.example"


def say(message: str) -> None:
    print(f"[qrtrack] {message}", flush=True)


def run(*command: str | os.PathLike, **kwargs) -> None:
    subprocess.run([str(part) for part in command], check=True, cwd=ROOT, **kwargs)


def can_apt() -> bool:
    return shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0


def apt_install(*packages: str) -> None:
    if not can_apt():
        raise SystemExit(f"Please install these system packages first: {' '.join(packages)}")
    say(f"installing system packages: {' '.join(packages)}")
    run("apt-get", "update", "-qq")
    run("apt-get", "install", "-y", "-qq", *packages,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_venv() -> None:
    if VENV_PYTHON.exists():
        return
    say("creating .venv")
    try:
        run(sys.executable, "-m", "venv", VENV)
    except subprocess.CalledProcessError:
        shutil.rmtree(VENV, ignore_errors=True)
        apt_install("python3-venv")
        run(sys.executable, "-m", "venv", VENV)


def ensure_requirements(requirements: str) -> None:
    """pip install the file unless the same content was installed into this venv before."""
    digest = hashlib.sha256()
    for name in ("requirements.txt", requirements):
        digest.update((ROOT / name).read_bytes())
    marker = VENV / f".installed-{requirements}"
    if marker.exists() and marker.read_text() == digest.hexdigest():
        return
    say(f"installing {requirements}")
    run(VENV_PYTHON, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", requirements)
    marker.write_text(digest.hexdigest())


def ensure_env_file() -> None:
    """TiCore/.env from the example, with a fresh random SECRET_KEY, unless it exists already."""
    if ENV_FILE.exists():
        return
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        lines.append(f"SECRET_KEY={secrets.token_urlsafe(48)}" if line.startswith("SECRET_KEY=") else line)
    ENV_FILE.write_text("\n".join(lines) + "\n")
    ENV_FILE.chmod(0o600)
    say("wrote TiCore/.env with a new random SECRET_KEY")


def flask(*args: str) -> None:
    run(VENV_PYTHON, "-m", "flask", "--app", "app", *args)


def serve(args: argparse.Namespace) -> None:
    ensure_venv()
    ensure_requirements("requirements.txt")
    ensure_env_file()
    flask("init-db")
    flask("ensure-admin")
    say(f"serving on http://{args.host}:{args.port}  (Ctrl+C stops)")
    os.chdir(ROOT)
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), "-m", "gunicorn", "--bind", f"{args.host}:{args.port}",
                           "--workers", str(args.workers), "--access-logfile", "-",
                           "app:app"])


TEST_SYSTEM_PACKAGES = {
    # Debian package: a file it installs, to tell whether it is there
    "chromium": "/usr/bin/chromium",                      # browser tests (Playwright drives it)
    "librsvg2-bin": "/usr/bin/rsvg-convert",              # SVG QR codes rasterised for decoding
    "php-cli": "/usr/bin/php",                            # the API page's PHP example
    "php-curl": "/usr/share/doc/php-curl",
    "curl": "/usr/bin/curl",                              # the API page's curl example
    "apache2": "/usr/sbin/apache2",                       # shared-hosting deployments under CGI...
    "libapache2-mod-fcgid": "/usr/lib/apache2/modules/mod_fcgid.so",          # ...FastCGI...
    "libapache2-mod-passenger": "/usr/lib/apache2/modules/mod_passenger.so",  # ...and Passenger
    "python3-venv": "/usr/share/doc/python3-venv",        # the deployment tests' venv on Debian's python3
    "nginx": "/usr/sbin/nginx",                           # the VPS guide: gunicorn behind nginx...
    "openssl": "/usr/bin/openssl",                        # ...over TLS with a throwaway certificate
    "wrk": "/usr/bin/wrk",                                # the benchmark's smoke test
    "postgresql": "/usr/share/doc/postgresql",            # database tests run on PostgreSQL too (its own cluster)
    "redis-server": "/usr/bin/redis-server",              # RATELIMIT_STORAGE_URI=redis://... (its own server)
    "memcached": "/usr/bin/memcached",                    # RATELIMIT_STORAGE_URI=memcached://...
}


def ensure_test_system_packages() -> None:
    missing = [package for package, path in TEST_SYSTEM_PACKAGES.items() if not os.path.exists(path)]
    if shutil.which("node") is None:
        missing.append("nodejs")  # the API page's Node fetch example (Debian 12's v18 has fetch)
    if missing:
        apt_install(*missing)


def test(args: argparse.Namespace) -> None:
    ensure_venv()
    ensure_requirements("requirements-dev.txt")
    ensure_test_system_packages()
    say("ruff check")
    run(VENV_PYTHON, "-m", "ruff", "check", ".")
    say("pytest")
    result = subprocess.run([str(VENV_PYTHON), "-m", "pytest", *args.pytest_args], cwd=ROOT)
    if result.returncode == 5:
        raise SystemExit("pytest collected no tests: that is a failure")
    raise SystemExit(result.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="set up and serve the app")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--workers", type=int, default=2)
    commands.add_parser("test", help="set up and run lint and the test suite; further arguments go to pytest")
    args, extra = parser.parse_known_args()
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra
    try:
        {"serve": serve, "test": test}[args.command](args)
    except subprocess.CalledProcessError as error:
        raise SystemExit(error.returncode) from None  # the step said what failed, in its own one line


if __name__ == "__main__":
    main()
