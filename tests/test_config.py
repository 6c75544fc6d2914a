"""Settings: load order, parsing, clear one-line errors, and .env.example kept in step with the table."""
from __future__ import annotations

import importlib.util
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from qrtrack.config import SETTING_NAMES, SETTINGS, ConfigError, load_settings, url_without_password

from .conftest import PROJECT_ROOT, env_without_settings


def settings_from(tmp_path: Path, env_text: str = "", environ: dict | None = None, **overrides):
    env_file = tmp_path / ".env"
    env_file.write_text(env_text)
    return load_settings(env_file=env_file, environ=environ or {}, overrides=overrides)


def test_defaults_put_everything_in_the_instance_folder(tmp_path):
    settings = settings_from(tmp_path, "SECRET_KEY=s\n")
    assert settings.INSTANCE_PATH == str(PROJECT_ROOT / "instance")
    assert settings.DATABASE_URL == f"sqlite:///{PROJECT_ROOT / 'instance' / 'qrtrack.db'}"
    assert settings.API_RATE_LIMIT == "60 per minute"
    assert settings.RATELIMIT_STORAGE_URI.startswith("qrtrack+sqlite:////")
    assert settings.BASE_URL is None and settings.TRUST_PROXY == 0 and settings.TRUST_CDN is None


def test_environment_overrides_env_file_and_overrides_win(tmp_path):
    settings = settings_from(tmp_path, "SECRET_KEY=file\nAPI_RATE_LIMIT=10\n",
                             environ={"API_RATE_LIMIT": "20", "SECRET_KEY": "env"}, TRUST_PROXY=2)
    assert settings.SECRET_KEY == "env"
    assert settings.API_RATE_LIMIT == "20 per minute"
    assert settings.TRUST_PROXY == 2


def test_settings_are_shown_without_the_secret_key_or_passwords(tmp_path):
    """What a log line, a traceback's locals or a debugger would show of them."""
    settings = settings_from(tmp_path, "SECRET_KEY=the-signing-secret\n", environ={
        "DATABASE_URL": "postgresql+psycopg://qrtrack:pass%40word@db.example:5432/qrtrack",
        "RATELIMIT_STORAGE_URI": "redis://:the-redis-password@cache.example:6379/0"}, TRUST_PROXY=1)
    shown = repr(settings)
    assert "the-signing-secret" not in shown and "pass%40word" not in shown and "the-redis-password" not in shown
    assert shown.startswith("Settings(SECRET_KEY='***', BASE_URL=None, ")
    assert "DATABASE_URL='postgresql+psycopg://qrtrack:***@db.example:5432/qrtrack'" in shown
    assert "RATELIMIT_STORAGE_URI='redis://:***@cache.example:6379/0'" in shown
    assert "TRUST_PROXY=1" in shown and shown.endswith(", TESTING=False)")
    assert settings.SECRET_KEY == "the-signing-secret"  # only the display hides it


@pytest.mark.parametrize("url", ["sqlite:////srv/qr/instance/qrtrack.db", "redis://cache.example:6379",
                                 "postgresql://qrtrack@/qrtrack?host=/var/run/postgresql"])
def test_urls_without_a_password_are_shown_as_they_are(url):
    assert url_without_password(url) == url


@pytest.mark.parametrize("raw, expected", [("60", "60 per minute"), ("100/hour", "100/hour"),
                                           ("5 per second", "5 per second"), ("1", "1 per minute"),
                                           ("1000/hour;10/second", "1000/hour;10/second")])
def test_api_rate_limit_accepts_numbers_and_limiter_strings(tmp_path, raw, expected):
    assert settings_from(tmp_path, f"SECRET_KEY=s\nAPI_RATE_LIMIT={raw}\n").API_RATE_LIMIT == expected


@pytest.mark.parametrize("line, named", [
    ("API_RATE_LIMIT=lots", "API_RATE_LIMIT"),
    ("TRUST_PROXY=-1", "TRUST_PROXY"),
    ("TRUST_PROXY=two", "TRUST_PROXY"),
    ("TRUST_CDN=akamai", "TRUST_CDN"),
    ("BASE_URL=ftp://example.com", "BASE_URL"),
    ("BASE_URL=example.com", "BASE_URL"),
    ("BASE_URL='https://example.com/q r'", "BASE_URL must not contain spaces"),  # a probe's short URLs had one
    ("BASE_URL='https://example.com/q\tr'", "BASE_URL must not contain spaces"),
    ("SQLITE_WAL=maybe", "SQLITE_WAL"),
    ("SQLITE_SYNCHRONOUS=OFF", "SQLITE_SYNCHRONOUS"),
    ("GEOIP_DB=/nonexistent/city.mmdb", "GEOIP_DB"),
])
def test_invalid_setting_is_refused_with_its_name(tmp_path, line, named):
    with pytest.raises(ConfigError, match=named):
        settings_from(tmp_path, f"SECRET_KEY=s\n{line}\n")


@pytest.mark.parametrize("url, dialect", [
    ("mysql+pymysql://u:p@localhost/qrtrack", "mysql"),
    ("MySQL://u@localhost/qrtrack", "mysql"),
    ("mariadb+mariadbconnector://u:p@localhost/qrtrack", "mariadb"),
    ("mssql+pyodbc://u:p@dsn", "mssql"),
    ("oracle+oracledb://u:p@localhost/qrtrack", "oracle"),
])
def test_a_database_qr_track_is_not_tested_on_is_refused_before_anything_connects(tmp_path, url, dialect):
    """MySQL and MariaDB would start and mostly work, with slugs that differ only in case taken for one code."""
    refusal = rf"^DATABASE_URL must be a SQLite or PostgreSQL URL .* not run on {dialect}: "
    with pytest.raises(ConfigError, match=refusal) as refused:
        settings_from(tmp_path, f"SECRET_KEY=s\nDATABASE_URL={url}\n")
    assert ":p@" not in str(refused.value)


@pytest.mark.parametrize("url", ["sqlite:////srv/qrtrack/qrtrack.db", "sqlite+pysqlite:///qrtrack.db",
                                 "postgresql://u:p@localhost/qrtrack", "postgresql+psycopg://u:p@localhost/qrtrack",
                                 "postgresql+psycopg2://u:p@/qrtrack?host=/var/run/postgresql"])
def test_sqlite_and_postgresql_urls_are_taken_as_they_are(tmp_path, url):
    assert settings_from(tmp_path, f"SECRET_KEY=s\nDATABASE_URL={url}\n").DATABASE_URL == url


@pytest.mark.parametrize("raw", ["0", "00", "0/hour", "0 per 2 minutes", "1000/hour;0/second", "10/day, 0 per hour",
                                 "-5"])
def test_an_api_rate_limit_that_allows_no_request_is_refused(tmp_path, raw):
    """0 would not turn limiting off: every API call would be answered 429."""
    with pytest.raises(ConfigError, match=r"API_RATE_LIMIT must (allow at least 1 request|be a number)"):
        settings_from(tmp_path, f"SECRET_KEY=s\nAPI_RATE_LIMIT={raw}\n")


@pytest.mark.parametrize("raw", ["5 per 0 minutes", "5/0 minutes", "5 per 00 hours", "100/hour;5 per 0 seconds"])
def test_an_api_rate_limit_over_a_period_of_0_is_refused(tmp_path, raw):
    """The limits library reads "5 per 0 minutes" as 5 per minute; the user meant something else."""
    with pytest.raises(ConfigError, match=r"API_RATE_LIMIT must count over periods of at least 1"):
        settings_from(tmp_path, f"SECRET_KEY=s\nAPI_RATE_LIMIT={raw}\n")


def test_missing_secret_key_stops_start_up_outside_tests(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        settings_from(tmp_path)
    assert settings_from(tmp_path, TESTING=True).SECRET_KEY


def test_base_url_may_carry_a_path_and_loses_its_trailing_slash(tmp_path):
    settings = settings_from(tmp_path, "SECRET_KEY=s\nBASE_URL=https://example.com/qr/\n")
    assert settings.BASE_URL == "https://example.com/qr"
    assert settings.SESSION_COOKIE_SECURE is True


def test_unknown_override_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="NOT_A_SETTING"):
        settings_from(tmp_path, "SECRET_KEY=s\n", NOT_A_SETTING=1)


def test_env_example_documents_every_setting_and_nothing_else():
    example = (PROJECT_ROOT / "TiCore" / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    assert names == SETTING_NAMES
    for setting in SETTINGS:
        assert setting.help.split()[0] in example


def test_app_with_a_bad_setting_exits_with_one_clear_line(tmp_path):
    env = {**env_without_settings(), "SECRET_KEY": "s", "TRUST_PROXY": "lots", "INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import app"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "QR Track cannot start: TRUST_PROXY must be a whole number, got 'lots'"]


SIMPLE_ENV_FILES = [
    "SECRET_KEY=abc-DEF_123\nBASE_URL=https://qr.example.com/sub\n",
    "# comment\n\nAPI_RATE_LIMIT=100 per hour   \nTRUST_CDN=\n  GEOIP_DB=/a/b.mmdb,/c/d.mmdb\n",
    (PROJECT_ROOT / "TiCore" / ".env.example").read_text(),
]
DOTENV_ONLY_FILES = [
    "SECRET_KEY='quoted value'\n", 'SECRET_KEY="a\\nb"\n', "export SECRET_KEY=x\n", "BASE=x\nURL=${BASE}/y\n",
    "SECRET_KEY=value # inline comment\n", "JUST_A_NAME\n",
]


@pytest.mark.parametrize("text", SIMPLE_ENV_FILES)
def test_plain_env_files_are_read_exactly_as_python_dotenv_reads_them(tmp_path, text):
    from dotenv import dotenv_values

    from qrtrack.config import parse_simple_env, read_env_file

    path = tmp_path / ".env"
    path.write_text(text)
    expected = {key: value or "" for key, value in dotenv_values(path).items()}
    assert parse_simple_env(text) == expected == read_env_file(path)


@pytest.mark.parametrize("text", DOTENV_ONLY_FILES)
def test_anything_beyond_plain_lines_is_left_to_python_dotenv(tmp_path, text):
    from dotenv import dotenv_values

    from qrtrack.config import parse_simple_env, read_env_file

    path = tmp_path / ".env"
    path.write_text(text)
    assert parse_simple_env(text) is None
    assert read_env_file(path) == {key: value or "" for key, value in dotenv_values(path).items()}


@pytest.mark.parametrize("name, value", [("DATABASE_URL", "nonsense"), ("RATELIMIT_STORAGE_URI", "bogus://x")])
def test_settings_checked_by_their_libraries_also_stop_start_up_with_one_line(tmp_path, name, value):
    env = {**env_without_settings(), "SECRET_KEY": "s", "INSTANCE_PATH": str(tmp_path), name: value}
    result = subprocess.run([sys.executable, "-c", "import app"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"QR Track cannot start: {name} ")


@pytest.mark.parametrize("value, simple", [
    ("100/hour", True), ("100 / hour", True), ("5 per second", True), ("5 per 2 minutes", True), ("1/DAY", True),
    ("7 per years", True), ("100perminute", False), ("100 per fortnight", False), ("per minute", False),
    ("1.5/hour", False), ("100/hour;5/second", False), ("10 per 2", False), ("", False), ("\u0661\u0662/hour", False),
])
def test_rate_limits_read_without_the_limits_library_are_ones_it_accepts(value, simple):
    """The hand-written check is a shortcut for the common forms; the limits library stays the authority."""
    from limits import parse_many

    from qrtrack.config import simple_rate_limit_amount

    assert (simple_rate_limit_amount(value) is not None) is simple
    if simple:
        assert parse_many(value)


def run_init_db(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {**env_without_settings(), "SECRET_KEY": "s", "INSTANCE_PATH": str(tmp_path / "instance"), **settings}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", "init-db"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


START_UP_FAILURES = [
    ({"INSTANCE_PATH": "TMP/a-file/instance"}, "INSTANCE_PATH: cannot create the folder"),
    ({"DATABASE_URL": "sqlite:///TMP/a-file/instance/qrtrack.db"}, "DATABASE_URL: cannot create the database's folder"),
    ({"DATABASE_URL": "sqlite:///TMP"}, "DATABASE_URL: cannot open the database sqlite:///TMP: unable to open database "
     "file; the database is TMP, owned by USER; this process runs as USER, which must be able to write it"),
    ({"DATABASE_URL": "postgresql+psycopg://qrtrack:secret-pw@127.0.0.1:1/qrtrack"},
     "DATABASE_URL: cannot open the database postgresql+psycopg://qrtrack:***@127.0.0.1:1/qrtrack: "),
    pytest.param({"DATABASE_URL": "postgresql+pg8000://qrtrack:secret-pw@127.0.0.1:1/qrtrack"},
                 "DATABASE_URL needs a database driver that is not installed: No module named 'pg8000'",
                 marks=pytest.mark.skipif(importlib.util.find_spec("pg8000") is not None,
                                          reason="needs pg8000 not to be installed")),
    ({"DATABASE_URL": "mysql+pymysql://qrtrack:secret-pw@127.0.0.1:1/qrtrack"},
     "DATABASE_URL must be a SQLite or PostgreSQL URL (or empty, for the SQLite file in the instance folder); "
     "QR Track does not run on mysql: got 'mysql+pymysql://qrtrack:***@127.0.0.1:1/qrtrack'"),
]


@pytest.mark.parametrize("settings, message", START_UP_FAILURES)
def test_a_folder_or_database_that_cannot_be_used_stops_a_command_with_one_line(tmp_path, settings, message):
    """TMP stands for tmp_path, where a-file is a file, not a folder; USER for the user running the tests."""
    (tmp_path / "a-file").write_text("not a folder")
    result = run_init_db(tmp_path, **{name: value.replace("TMP", str(tmp_path)) for name, value in settings.items()})
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    expected = message.replace("TMP", str(tmp_path)).replace("USER", pwd.getpwuid(os.geteuid()).pw_name)
    assert line.startswith("QR Track cannot start: " + expected), line
    assert "secret-pw" not in result.stderr
