"""Fixtures shared by the suite: an app on a fresh SQLite file, its clients, and short builders."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from qrtrack import accounts, codes, config, create_app, keys
from qrtrack.config import SETTING_NAMES
from qrtrack.db import Database, upgrade_schema
from qrtrack.web import AppServices

PROJECT_ROOT = Path(config.PROJECT_ROOT)

PASSWORD = "correct horse battery"


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


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path / "instance")
    yield app
    app.extensions["qrtrack"].db.dispose()


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


def gen_code(db: Database, owner_id: int, destination: str = "https://example.com/", label: str = ""):
    return codes.create_code(db, owner_id=owner_id, destination=destination, label=label)


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


def needs_tool(command: str, *, install: str) -> pytest.MarkDecorator:
    """Skip when `command` is missing on a developer's machine; in CI (CI set) run anyway, so it fails loudly.

    manage.py test installs every tool the suite drives, so a missing one in CI is a broken set-up, not a skip.
    """
    missing = shutil.which(command) is None and not os.path.exists(command)
    return pytest.mark.skipif(missing and not os.environ.get("CI"), reason=f"{command} not found; install {install}")
