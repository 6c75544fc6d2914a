"""Fixtures shared by the suite: an app on a fresh database, its clients, and short builders.

The database is a fresh SQLite file. In modules and tests marked `postgresql`, every test that uses the
database (through `app`, `db` or `database_url`) runs twice: on SQLite and on a fresh PostgreSQL database
copied from a template that already has the schema, in a throwaway cluster started once per session.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from qrtrack import accounts, codes, config, create_app, keys
from qrtrack.config import SETTING_NAMES, load_settings
from qrtrack.store.db import Database, make_engine, upgrade_schema
from qrtrack.web.context import AppServices

from .postgres_server import INITDB, PostgresServer

PROJECT_ROOT = Path(config.PROJECT_ROOT)

PASSWORD = "correct horse battery"
TEMPLATE_DATABASE = "qrtrack_template"
SQLITE_FILE_NAME = "qrtrack.db"  # where the app keeps its SQLite database in the instance folder


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: run each database test on SQLite and again on PostgreSQL")


SUITE_WORKERS = 3
"""pytest-xdist workers for the suite: some tests wait on servers, so one more than this machine's two cores keeps
both busy. Measured here: about 300 s on three, 320-340 s on two (a core idle at times), 315-325 s on four."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """What `-n auto` (pyproject.toml) means: SUITE_WORKERS for the suite or a folder of it, and none (every test
    in this process, as without pytest-xdist) when only files or single tests are named, since a module runs on
    one worker anyway and starting the others would take longer than the file."""
    only_files = all(Path(arg.split("::")[0]).is_file() for arg in config.args)
    return 0 if only_files else SUITE_WORKERS


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that start servers or a browser first, in their order, then the rest in theirs.

    Under pytest-xdist (--dist loadscope --no-loadscope-reorder in pyproject.toml) each module goes to one worker
    in this order: these are the longest and spend much of their time waiting on other processes, so they start
    at once beside the quick in-process tests instead of running last, each alone on a worker.
    """
    items.sort(key=lambda item: not any(item.get_closest_marker(name) for name in ("server", "browser")))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("postgresql"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings in the developer's shell must not leak into tests."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


def make_app(instance: Path, **settings: object) -> Flask:
    config = {"TESTING": True, "ENV_FILE": None, "INSTANCE_PATH": str(instance), **settings}
    app = create_app(config)
    upgrade_schema(app.extensions["qrtrack"].db)
    return app


def close_app(app: Flask) -> None:
    """Close the app's connections: its engine's, and the scan path's own engine outside SQLite."""
    services = app.extensions["qrtrack"]
    services.db.dispose()
    dispose = getattr(services.recorder.scan_store, "dispose", None)
    if dispose is not None:
        dispose()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """"sqlite", or "postgresql" in the second run of a test marked postgresql."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's cluster, with TEMPLATE_DATABASE migrated to the newest schema by the app's own migrations."""
    server = PostgresServer()
    try:
        server.start()
        db = database_at(server.create_database(TEMPLATE_DATABASE))
        upgrade_schema(db)
        db.dispose()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to the newest schema once per session, as postgres_server's template is.

    Each test's app starts on a copy of it: running the migrations was most of an app's start (~35 of ~60 ms).
    """
    instance = tmp_path_factory.mktemp("sqlite-template")
    close_app(make_app(instance))
    return instance / SQLITE_FILE_NAME


def seed_instance(request: pytest.FixtureRequest, instance: Path, database_url: str) -> Path:
    """The instance folder, holding a copy of the migrated SQLite template when the app's database is SQLite."""
    if database_url == "":
        instance.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("sqlite_template"), instance / SQLITE_FILE_NAME)
    return instance


@contextlib.contextmanager
def fresh_database(request: pytest.FixtureRequest, backend: str, *, with_schema: bool = True) -> Iterator[str]:
    """DATABASE_URL for a new database, dropped afterwards: "" (SQLite in the app's instance folder, new
    with each folder) or a PostgreSQL database copied from the migrated template, or empty."""
    if backend == "sqlite":
        yield ""
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database(template=TEMPLATE_DATABASE if with_schema else "template0")
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, backend: str) -> Iterator[str]:
    """DATABASE_URL for this test's fresh database with the newest schema."""
    with fresh_database(request, backend) as url:
        yield url


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, backend: str) -> Iterator[str]:
    """Like database_url, but the database has no tables yet (on SQLite: name an INSTANCE_PATH for the file)."""
    with fresh_database(request, backend, with_schema=False) as url:
        yield url


def database_at(url: str, **settings: object) -> Database:
    """A Database on url without an app ("" is SQLite in the instance folder, which settings must then name)."""
    overrides = {"TESTING": True, "DATABASE_URL": url, **settings}
    return Database(make_engine(load_settings(env_file=None, environ={}, overrides=overrides)))


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[Flask]:
    app = make_app(seed_instance(request, tmp_path / "instance", database_url), DATABASE_URL=database_url)
    yield app
    close_app(app)


@pytest.fixture
def make_test_app(request: pytest.FixtureRequest, tmp_path: Path,
                  database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build apps with other settings on database_url (on SQLite each app gets a new file; closed at the end)."""
    apps: list[Flask] = []

    def build(**settings: object) -> Flask:
        instance = seed_instance(request, tmp_path / f"instance-{len(apps)}", database_url)
        apps.append(make_app(instance, DATABASE_URL=database_url, **settings))
        return apps[-1]

    yield build
    for app in apps:
        close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture
def services(app: Flask) -> AppServices:
    return app.extensions["qrtrack"]


@pytest.fixture
def db(services: AppServices) -> Database:
    return services.db


def gen_user(db: Database, username: str = "alice", *, is_admin: bool = False) -> int:
    return accounts.create_user(db, username=username, password=PASSWORD, is_admin=is_admin)


def gen_key(db: Database, user_id: int, name: str = "test key") -> str:
    return keys.issue_api_key(db, user_id=user_id, name=name)[0]


# gen_code has only a database, not the app, and its codes have no logo, so create_code never looks in the
# logo folder. The null device is no folder: a logo given through it would be refused, not pass silently.
NO_LOGO_DIR = Path(os.devnull)


def gen_code(db: Database, owner_id: int, destination: str = "https://example.com/", label: str = ""):
    """A code without a logo; for one with a logo, call codes.create_code with the app's logo_dir."""
    return codes.create_code(db, owner_id=owner_id, destination=destination, label=label, logo_dir=NO_LOGO_DIR)


@pytest.fixture
def alice(db: Database) -> int:
    return gen_user(db, "alice")


@pytest.fixture
def alice_key(db: Database, alice: int) -> str:
    return gen_key(db, alice)


@pytest.fixture
def api_headers(alice_key: str) -> dict[str, str]:
    return {"X-Api-Key": alice_key}


def env_without_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}


def cached_images(services: AppServices, slug: str) -> dict[str, bytes]:
    """The image cache's files for the code with this slug, by file name."""
    directory = Path(services.images.directory)
    return {path.name: path.read_bytes() for path in directory.glob(f"{slug}-*")} if directory.exists() else {}


def in_ci() -> bool:
    """CI is set (to anything but 0, false or no): manage.py test has installed every tool the suite drives,
    so a missing one is a broken set-up, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def needs_tool(command: str, *, install: str) -> pytest.MarkDecorator:
    """Skip when `command` is missing on a developer's machine; in CI run anyway, so it fails loudly."""
    missing = shutil.which(command) is None and not os.path.exists(command)
    return pytest.mark.skipif(missing and not in_ci(), reason=f"{command} not found; install {install}")


def require(missing: list[str], what: str) -> None:
    """Skip when something in missing is lacking on a developer's machine; in CI fail (see in_ci)."""
    if not missing:
        return
    message = f"cannot {what}: missing {', '.join(missing)}"
    if in_ci():
        pytest.fail(message + " (CI must run these tests: manage.py test installs what they need)")
    pytest.skip(message)


NEEDS_POSTGRESQL = needs_tool(str(INITDB), install="postgresql")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=NEEDS_POSTGRESQL)]
"""The databases a test marked postgresql runs on; a fixture of its own can take them as params too."""
