"""The app factory: settings, database, services, blueprints, error handlers."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from limits.errors import ConfigurationError as LimitsConfigurationError
from sqlalchemy.exc import ArgumentError, OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from .config import DEFAULT_ENV_FILE, PROJECT_ROOT, ConfigError, Settings, default_database_url, load_settings
from .store.db import Database, ensure_schema, make_engine, unavailable_hint
from .store.schema import MAX_INTEGER
from .web.fastpath import FastPath

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class DatabaseIntegerConverter(IntegerConverter):
    """`<int:...>` in every route: Werkzeug's, but a number past MAX_INTEGER matches no route (a 404), as
    no row can have it; the database driver would otherwise fail on it with a 500."""

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = MAX_INTEGER,
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def build_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. test_config overrides settings; its ENV_FILE key picks another .env (None: none)."""
    overrides = dict(test_config or {})
    env_file = overrides.pop("ENV_FILE", DEFAULT_ENV_FILE)
    settings = load_settings(env_file=env_file or None, overrides=overrides)
    app = Flask(__name__, template_folder=str(Path(PROJECT_ROOT, "templates")), instance_path=settings.INSTANCE_PATH)
    # Before any route is added: a rule picks its converter when it is added to the map.
    app.url_map.converters["int"] = DatabaseIntegerConverter
    _configure_flask(app, settings)
    _build_services(app, settings)
    _register_blueprints(app, settings)
    _register_error_handlers(app)
    from .cli import register_commands

    register_commands(app)
    app_services = app.extensions["qrtrack"]
    app.wsgi_app = FastPath(app.wsgi_app, app_services.recorder, images=app_services.images,
                            base_url=settings.BASE_URL)
    if settings.TRUST_PROXY:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.TRUST_PROXY, x_proto=settings.TRUST_PROXY,
                                x_host=settings.TRUST_PROXY, x_prefix=settings.TRUST_PROXY)
    return app


def _configure_flask(app: Flask, settings: Settings) -> None:
    from .store.ratelimit import storage_options  # importing it registers its storages with limits (ratelimit.py)

    app.config.update(
        SECRET_KEY=settings.SECRET_KEY,
        TESTING=settings.TESTING,
        MAX_CONTENT_LENGTH=settings.MAX_LOGO_BYTES + 256 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.SESSION_COOKIE_SECURE,
        SESSION_COOKIE_NAME="qrtrack_session",
        RATELIMIT_STORAGE_URI=settings.RATELIMIT_STORAGE_URI,
        RATELIMIT_STORAGE_OPTIONS=storage_options(settings.RATELIMIT_STORAGE_URI),
        RATELIMIT_HEADERS_ENABLED=True,
        JSON_SORT_KEYS=False,
        # Tokens live as long as the sign-in, not Flask-WTF's default hour: a page left open over lunch must
        # still save its form and sign out. The token is bound to the session, which signing out ends.
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.json.sort_keys = False

    from .web.context import TemplateBytecodeCache, discard_unread_body

    app.jinja_env.bytecode_cache = TemplateBytecodeCache(str(Path(settings.INSTANCE_PATH, "cache", "templates")))

    app.after_request(discard_unread_body)

    @app.after_request
    def add_security_headers(response):
        # Registered before the limiter, so it runs after the limiter has added its headers:
        # flask-limiter sends Retry-After on every limited response, which only means something on a 429
        # (a 503 sets its own: web.handle_rate_limit_storage_error).
        if response.status_code not in (429, 503):
            response.headers.pop("Retry-After", None)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _build_services(app: Flask, settings: Settings) -> None:
    from .geo import GeoLocator
    from .images.cache import instance_image_cache
    from .web.context import AppServices
    from .web.fastpath import make_recorder

    instance = Path(settings.INSTANCE_PATH)
    try:
        instance.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"INSTANCE_PATH: cannot create the folder {str(instance)!r}: {error.strerror}") from None
    db, found_schema = _open_database(settings)
    geo = GeoLocator(mmdb_paths=settings.GEOIP_DB, trust_cdn=settings.TRUST_CDN)
    recorder = make_recorder(settings, geo=geo)
    app.extensions["qrtrack"] = AppServices(
        settings=settings, db=db, geo=geo, recorder=recorder,
        images=instance_image_cache(settings.INSTANCE_PATH), logo_dir=instance / "logos", found_schema=found_schema)


def _open_database(settings: Settings) -> tuple[Database, str | None]:
    """The database with its schema current, and the revision it was at; ConfigError naming the setting when it
    cannot be used."""
    name = _database_setting_name(settings)
    try:
        db = Database(make_engine(settings))
    except ArgumentError as error:
        raise ConfigError(f"DATABASE_URL is not a database URL SQLAlchemy understands: {error}") from None
    except ImportError as error:
        raise ConfigError(f"DATABASE_URL needs a database driver that is not installed: {error}") from None
    except OSError as error:
        raise ConfigError(f"{name}: cannot create the database's folder {error.filename!r}: {error.strerror}") from None
    try:
        found_schema = ensure_schema(db)
    except OperationalError as error:  # cannot connect or open the file; any other failure is a bug to show
        where = db.engine.url.render_as_string(hide_password=True)
        db.dispose()
        reason = " ".join(str(error.orig).split())
        hint = unavailable_hint(db)
        raise ConfigError(f"{name}: cannot open the database {where}: {reason}; {hint}") from None
    return db, found_schema


def _database_setting_name(settings: Settings) -> str:
    """The setting to fix when the database cannot be opened: INSTANCE_PATH holds the default SQLite file."""
    return "INSTANCE_PATH" if settings.DATABASE_URL == default_database_url(settings.INSTANCE_PATH) else "DATABASE_URL"


def _register_blueprints(app: Flask, settings: Settings) -> None:
    from flask_limiter import Limiter

    from .web import api, dashboard, public
    from .web.dashboard import init_dashboard

    try:
        limiter = Limiter(key_func=api.rate_limit_key, app=app, default_limits=[])
    except LimitsConfigurationError as error:
        raise ConfigError(f"RATELIMIT_STORAGE_URI cannot be used: {error}") from None
    limiter.shared_limit(settings.API_RATE_LIMIT, scope="api", key_func=api.rate_limit_key)(api.bp)
    limiter.exempt(public.bp)
    app.extensions["qrtrack_limiter"] = limiter
    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    init_dashboard(app)
    dashboard.csrf.exempt(api.bp)


def _register_error_handlers(app: Flask) -> None:
    from limits.errors import StorageError
    from sqlalchemy.exc import OperationalError

    from .errors import QrTrackError
    from .web.error_responses import (
        handle_database_error,
        handle_http_exception,
        handle_qrtrack_error,
        handle_rate_limit_storage_error,
        handle_unexpected_error,
    )

    app.register_error_handler(QrTrackError, handle_qrtrack_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(StorageError, handle_rate_limit_storage_error)
    app.register_error_handler(OperationalError, handle_database_error)
    if not app.testing:
        app.register_error_handler(Exception, handle_unexpected_error)
