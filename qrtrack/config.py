"""Settings: every knob in one table, read once at start-up into a frozen Settings object.

Load order, later wins: the table's defaults, then ``TiCore/.env``, then the process
environment, then the ``overrides`` a test or embedding program passes in.

A CGI scan loads the settings on every request, and under CGI import time is request time: this
module imports only os. Not typing, re or pathlib: together they cost a CGI scan about a third of its
time here; nor collections (see records.py). So paths are plain strings, the tuples are records, and
the few patterns are matched by hand.
"""
from __future__ import annotations

import os

from .records import record

TYPE_CHECKING = False  # typing's own would make a CGI scan 1.65× as long (bench/run.py devices)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DEFAULT_ENV_FILE = os.path.join(PROJECT_ROOT, "TiCore", ".env")
RATE_LIMIT_UNITS = frozenset({"second", "minute", "hour", "day", "month", "year"})
SUPPORTED_DATABASES = frozenset({"sqlite", "postgresql"})


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and says what is expected."""


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _parse_int(name: str, raw: str, *, minimum: int = 0) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _parse_base_url(name: str, raw: str) -> str | None:
    value = raw.strip().rstrip("/")
    if not value:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{name} must be an http(s) origin with an optional path, got {raw!r}")
    if any(character.isspace() or ord(character) < 32 or ord(character) == 127 for character in value):
        raise ConfigError(f"{name} must not contain spaces or control characters (percent-encode them), got {raw!r}")
    return value


def _parse_rate_limit(name: str, raw: str) -> str:
    """A bare integer means per minute; anything else must be a flask-limiter string. Each limit in it must
    allow at least one request: a 0 does not turn limiting off, it refuses every API call."""
    value = raw.strip()
    if _is_number(value):
        value = f"{int(value)} per minute"
    if _has_a_zero_period(value):
        raise ConfigError(f"{name} must count over periods of at least 1 (like '5 per 2 minutes'), got {raw!r}")
    simple_amount = simple_rate_limit_amount(value)
    amounts = [simple_amount] if simple_amount is not None else _parse_rate_limit_amounts(name, raw, value)
    if min(amounts) < 1:
        raise ConfigError(f"{name} must allow at least 1 request in each period (0 would refuse every API call), "
                          f"got {raw!r}")
    return value


def _parse_rate_limit_amounts(name: str, raw: str, value: str) -> list[int]:
    """The request counts of the limits in value, by the limits library, the authority on what it accepts."""
    from limits import parse_many

    try:
        amounts = [item.amount for item in parse_many(value)]
        if not amounts:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name} must be a number per minute or a limit like '100/hour', got {raw!r}") from None
    return amounts


def _has_a_zero_period(value: str) -> bool:
    """True for "5 per 0 minutes", which the limits library reads as 5 per minute: a mistake to name, not guess."""
    words = _rate_limit_words(value)
    pairs = zip(words, words[1:], strict=False)
    return any(word == "per" and _is_number(after) and int(after) == 0 for word, after in pairs)


def _rate_limit_words(value: str) -> list[str]:
    """value's words in lower case, "/" read as "per" and the separators of several limits as spaces."""
    words = value.lower().replace("/", " per ")
    for separator in ",;|":  # what the limits library splits several limits on
        words = words.replace(separator, " ")
    return words.split()


def simple_rate_limit_amount(value: str) -> int | None:
    """The request count of the common forms, "100/hour", "5 per 2 minutes": a subset of what the limits
    library accepts, read without importing it. None for anything else, left to the library to accept or refuse."""
    words = _rate_limit_words(value)
    if len(words) == 4 and _is_number(words[2]):
        del words[2]
    is_simple = (len(words) == 3 and _is_number(words[0]) and words[1] == "per"
                 and (words[2] in RATE_LIMIT_UNITS or (words[2].endswith("s") and words[2][:-1] in RATE_LIMIT_UNITS)))
    return int(words[0]) if is_simple else None


def _is_number(word: str) -> bool:
    return word.isascii() and word.isdigit()


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str, str], str | None]:
    def parse(name: str, raw: str) -> str | None:
        value = raw.strip().lower()
        if not value or value == "none":
            return None
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)} or empty, got {raw!r}")
        return value

    return parse


def _parse_synchronous(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"NORMAL", "FULL"}:
        raise ConfigError(f"{name} must be NORMAL or FULL, got {raw!r}")
    return value


def _parse_paths(name: str, raw: str) -> tuple[str, ...]:
    paths = tuple(part.strip() for part in raw.split(",") if part.strip())
    for path in paths:
        if not os.path.isfile(path):
            raise ConfigError(f"{name}: no readable file at {path!r}")
    return paths


def _parse_text(name: str, raw: str) -> str:
    return raw.strip()


def _parse_database_url(name: str, raw: str) -> str:
    """Empty (the SQLite default) or a URL of a database QR Track is tested on: SQLite or PostgreSQL.

    Any other database SQLAlchemy can drive would start and mostly work, which is worse than refusing: MySQL and
    MariaDB, for one, compare text without regard to case by default, so two codes whose slugs differ only in case
    would be one. A URL without a scheme is left to SQLAlchemy, whose own error names what is wrong with it.
    """
    value = raw.strip()
    scheme, separator, _ = value.partition("://")
    dialect = scheme.partition("+")[0].lower()
    if separator and dialect not in SUPPORTED_DATABASES:
        raise ConfigError(f"{name} must be a SQLite or PostgreSQL URL (or empty, for the SQLite file in the instance "
                          f"folder); QR Track does not run on {dialect}: got {url_without_password(value)!r}")
    return value


class Setting(record("Setting", "name default parse help")):
    """One row of the table: name, default (as .env text), parse(name, raw) -> value, and help text."""

    __slots__ = ()


SETTINGS: tuple[Setting, ...] = (
    Setting("SECRET_KEY", "", _parse_text,
            "Signs sessions and CSRF tokens. Long and random; `python3 manage.py serve` writes one."),
    Setting("BASE_URL", "", _parse_base_url,
            "Public origin (and path, if mounted in a sub-folder) used in short_url and qr_image_url, "
            "e.g. https://qr.example.com. Empty: derived from each request."),
    Setting("INSTANCE_PATH", "", _parse_text,
            "Folder for the database, rate-limit counters, logos and cached images. Empty: ./instance."),
    Setting("DATABASE_URL", "", _parse_database_url,
            "SQLAlchemy URL. Empty: SQLite file qrtrack.db in the instance folder. For PostgreSQL: "
            "postgresql+psycopg://user:password@host/database, after pip install 'psycopg[binary]'. "
            "Other databases (MySQL, MariaDB) are refused."),
    Setting("SQLITE_WAL", "true", _parse_bool,
            "Use SQLite's WAL journal (fast, concurrent readers). Set false when the instance folder "
            "sits on a network filesystem (NFS), where WAL is unsafe."),
    Setting("SQLITE_SYNCHRONOUS", "NORMAL", _parse_synchronous,
            "NORMAL survives a crash of the app; FULL also survives a power cut, at some speed."),
    Setting("API_RATE_LIMIT", "60", _parse_rate_limit,
            "Requests allowed per API key, at least 1: a bare number means per minute, or a string like "
            "'100/hour'."),
    Setting("RATELIMIT_STORAGE_URI", "", _parse_text,
            "Where rate-limit counters live. Empty: a SQLite file in the instance folder, shared by all "
            "processes. For big sites: redis://host:6379 or memcached://host:11211."),
    Setting("GEOIP_DB", "", _parse_paths,
            "Optional comma-separated paths to City or Country .mmdb files (MaxMind GeoLite2, DB-IP "
            "Lite, ip-location-db). Empty: country only, from data bundled with iptocc."),
    Setting("TRUST_PROXY", "0", lambda n, r: _parse_int(n, r, minimum=0),
            "How many reverse proxies in front of the app to trust for X-Forwarded-For. 0: none."),
    Setting("TRUST_CDN", "", _parse_choice(("cloudflare", "cloudfront", "vercel")),
            "Believe this CDN's visitor-location headers (cloudflare, cloudfront, vercel). Empty: none, "
            "since anyone can forge them on direct requests."),
    Setting("MAX_LOGO_BYTES", "2000000", lambda n, r: _parse_int(n, r, minimum=1024),
            "Largest logo upload accepted, in bytes."),
    Setting("SESSION_COOKIE_SECURE", "auto", _parse_text,
            "auto: Secure cookies when BASE_URL is https. true/false to force."),
)

SETTING_NAMES_IN_ORDER = tuple(setting.name for setting in SETTINGS)
SETTING_NAMES = frozenset(SETTING_NAMES_IN_ORDER)
SECRET_SETTINGS = frozenset({"SECRET_KEY"})
URL_SETTINGS = frozenset({"DATABASE_URL", "RATELIMIT_STORAGE_URI"})
"""Settings whose value may carry a password (postgresql://user:password@host, redis://:password@host)."""
HIDDEN = "***"


class Settings(record("Settings", " ".join((*SETTING_NAMES_IN_ORDER, "TESTING")), defaults=(False,))):
    """The settings in force, one field per row of SETTINGS (parsed: INSTANCE_PATH an absolute folder
    path as str, SQLITE_WAL a bool, TRUST_PROXY an int, GEOIP_DB a tuple of paths, BASE_URL and
    TRUST_CDN None when empty), plus TESTING. A record, not a dataclass or typing.NamedTuple,
    for a CGI scan's import time (see the module docstring)."""

    __slots__ = ()

    def __repr__(self) -> str:
        """Every field but the secrets: SECRET_KEY and the passwords in URLs are shown as ***, so that a log line,
        a traceback or a debugger showing the settings never shows them."""
        shown = ", ".join(f"{name}={_shown_value(name, value)}" for name, value in zip(self._fields, self, strict=True))
        return f"{type(self).__name__}({shown})"

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")

    @property
    def sqlite_path(self) -> str | None:
        """The database file for a file-backed SQLite URL (sqlite:///path), else None."""
        prefix = "sqlite:///"
        if not self.DATABASE_URL.startswith(prefix) or self.DATABASE_URL == prefix + ":memory:":
            return None
        return self.DATABASE_URL[len(prefix):].split("?", 1)[0] or None


def _shown_value(name: str, value: object) -> str:
    if name in SECRET_SETTINGS and value:
        return repr(HIDDEN)
    if name in URL_SETTINGS and value:
        return repr(url_without_password(value))
    return repr(value)


def url_without_password(url: str) -> str:
    """url with the password of its user part, if any, shown as ***."""
    from urllib.parse import urlsplit  # here: a CGI scan loads the settings on every request, never shows them

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return HIDDEN
    if password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user.partition(':')[0]}:{HIDDEN}@{host}").geturl()


NOT_IN_PLAIN_VALUES = frozenset("'\"\\$#")


def read_env_file(path: str | os.PathLike | None) -> dict[str, str]:
    if path is None or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as env_file:
        simple = parse_simple_env(env_file.read())
    if simple is not None:
        return simple
    from dotenv import dotenv_values

    return {key: value or "" for key, value in dotenv_values(path).items()}


def parse_simple_env(text: str) -> dict[str, str] | None:
    """Read a .env made only of comments and plain KEY=value lines (what manage.py writes); else None.

    A CGI scan reads the settings on every request, and importing python-dotenv costs it about as
    much as everything else it imports together. Anything beyond plain lines (quotes, escapes,
    ${VARIABLES}, export, inline comments) returns None and is left to python-dotenv, the authority.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = stripped.partition("=")
        if not (equals and _is_plain_name(name)) or not NOT_IN_PLAIN_VALUES.isdisjoint(value):
            return None
        values[name] = value.strip()
    return values


def _is_plain_name(name: str) -> bool:
    """[A-Za-z_][A-Za-z0-9_]*, the names python-dotenv reads the same way we do."""
    return name.isascii() and name.isidentifier()


def load_settings(
    *,
    env_file: str | os.PathLike | None = DEFAULT_ENV_FILE,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from the layers; raise ConfigError naming the first bad setting."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    testing = bool(overrides.pop("TESTING", False))
    raw = {setting.name: setting.default for setting in SETTINGS}
    raw.update({k: v for k, v in read_env_file(env_file).items() if k in SETTING_NAMES})
    raw.update({k: v for k, v in environ.items() if k in SETTING_NAMES})
    raw.update({k: str(v) for k, v in overrides.items() if k in SETTING_NAMES})
    unknown = set(overrides) - SETTING_NAMES
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values = {s.name: s.parse(s.name, raw[s.name]) for s in SETTINGS}
    return _finish(values, testing=testing)


def default_database_url(instance_path: str) -> str:
    """The SQLite file in the instance folder: the database when DATABASE_URL is empty."""
    return f"sqlite:///{os.path.join(instance_path, 'qrtrack.db')}"


def _finish(values: dict[str, Any], *, testing: bool) -> Settings:
    if not values["SECRET_KEY"]:
        if not testing:
            raise ConfigError("SECRET_KEY is not set: put a long random value in TiCore/.env "
                              "(python3 manage.py serve writes one)")
        values["SECRET_KEY"] = "testing-secret-key"
    instance = os.path.normpath(os.path.join(PROJECT_ROOT, values["INSTANCE_PATH"] or "instance"))
    values["INSTANCE_PATH"] = instance
    values["DATABASE_URL"] = values["DATABASE_URL"] or default_database_url(instance)
    if not values["RATELIMIT_STORAGE_URI"]:
        journal = "wal" if values["SQLITE_WAL"] else "delete"
        database = os.path.join(instance, "ratelimit.db")
        values["RATELIMIT_STORAGE_URI"] = f"qrtrack+sqlite:///{database}?journal_mode={journal}"
    secure = values["SESSION_COOKIE_SECURE"].lower()
    if secure == "auto":
        values["SESSION_COOKIE_SECURE"] = bool(values["BASE_URL"] and values["BASE_URL"].startswith("https:"))
    else:
        values["SESSION_COOKIE_SECURE"] = _parse_bool("SESSION_COOKIE_SECURE", secure)
    return Settings(**values, TESTING=testing)
