"""The data a run measures, in a fresh instance folder: users, API keys, 10,000 codes, one with 1,000,000 scans.

Users, keys and codes go through the app's own services, in-process; the million scans go in with
sqlite3's executemany in one transaction, into the columns qrtrack/store/schema.py declares. The full set is
built once into a cache folder under the system's temp dir, keyed by a hash of the schema and its
migrations, and copied into each run's fresh instance folder, so reruns start in seconds.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Bump when build_instance writes something different, so caches built by older versions are not used.
DATA_VERSION = "1"
CACHE_ROOT = Path(tempfile.gettempdir()) / "qrtrack-bench-cache"
BUILDING_PREFIX = ".building-"
BUILD_HOURS_AT_MOST = 3  # building the full data set takes minutes; an older build folder was cut short
PASSWORD = "bench-password-1234"
CREATOR = "creator"  # the user whose key api-create uses
SCAN_DESTINATION = "https://example.com/landing?utm_source=poster"
SCAN_DAYS = 90
SCAN_VISITORS = 250_000
# (User-Agent, device, os, browser, is_bot, weight): what the app's classifier makes of each, stored as it stores them.
USER_AGENTS = (
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Mobile/15E148 Safari/604.1", "iPhone", "iOS 17.5", "Mobile Safari", False, 45),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Mobile Safari/537.36", "Android", "Android 14", "Chrome Mobile", False, 33),
    ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 "
     "Chrome/117.0.0.0 Mobile Safari/537.36", "Android", "Android 14", "Samsung Internet", False, 7),
    ("Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
     "Mobile/15E148 Safari/604.1", "iPad", "iOS 17.5", "Mobile Safari", False, 5),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Safari/537.36", "Windows PC", "Windows 10", "Chrome", False, 8),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Bot", "Other", "Googlebot",
     True, 2),
)
COUNTRIES = (("DE", 30), ("US", 25), ("FR", 12), ("GB", 10), ("NL", 8), ("ES", 7), (None, 8))
CITIES = {"DE": "Berlin", "US": "New York", "FR": "Paris", "GB": "London"}
SCAN_COLUMNS = ("code_id", "ts", "country", "city", "device", "os", "browser", "is_bot", "referrer_host",
                "user_agent", "visitor")


@dataclass(frozen=True)
class DataSize:
    codes: int
    big_scans: int


FULL_SIZE = DataSize(codes=10_000, big_scans=1_000_000)
QUICK_SIZE = DataSize(codes=50, big_scans=2_000)


@dataclass(frozen=True)
class Dataset:
    """What the cases need to know about the data they measure."""

    instance: Path
    username: str  # owns `codes` codes, one of them (big_uuid) with `big_scans` scans
    password: str
    api_key: str
    creator_key: str  # another user's key, so codes made by api-create never change what api-list reads
    scan_slug: str
    scan_code_id: int
    image_slug: str
    big_uuid: str
    big_code_id: int
    codes: int
    big_scans: int

    @property
    def database(self) -> Path:
        return self.instance / "qrtrack.db"


def app_settings(instance: Path, *, secret_key: str, **changes: str) -> dict[str, str]:
    """Every QR Track setting, as environment values: the table's defaults, this instance, then changes.

    Naming every setting keeps a developer's TiCore/.env or shell (a DATABASE_URL, say) out of the run.
    """
    from qrtrack.config import SETTINGS

    values = {setting.name: setting.default for setting in SETTINGS}
    values.update(INSTANCE_PATH=str(instance), SECRET_KEY=secret_key,
                  DATABASE_URL=f"sqlite:///{instance / 'qrtrack.db'}", RATELIMIT_STORAGE_URI="", BASE_URL="")
    values.update(changes)
    return values


def clean_environ() -> dict[str, str]:
    """This process's environment without any QR Track setting, for the servers' environments to build on."""
    from qrtrack.config import SETTING_NAMES

    return {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}


def prepare_dataset(run_dir: Path, *, quick: bool, say) -> Dataset:
    """A fresh instance folder in run_dir holding the data set: tiny for --quick, else the full (cached) one."""
    instance = run_dir / "instance"
    if quick:
        return build_instance(instance, QUICK_SIZE)
    cached = CACHE_ROOT / cache_key(FULL_SIZE)
    if not (cached / "dataset.json").is_file():
        say(f"building the data set once into {cached} (10,000 codes, 1,000,000 scans)")
        _build_cache(cached, FULL_SIZE)
    shutil.copytree(cached / "instance", instance)
    fields = json.loads((cached / "dataset.json").read_text())
    return Dataset(instance=instance, **fields)


def cache_key(size: DataSize) -> str:
    digest = hashlib.sha256(f"{DATA_VERSION}|{size.codes}|{size.big_scans}".encode())
    digest.update((PROJECT_ROOT / "qrtrack" / "store" / "schema.py").read_bytes())
    for migration in sorted((PROJECT_ROOT / "qrtrack" / "migrations" / "versions").glob("*.py")):
        digest.update(migration.read_bytes())
    return digest.hexdigest()[:16]


def _build_cache(cached: Path, size: DataSize) -> None:
    """Build beside the cache and rename into place, so a run cut short never leaves half a cache behind.

    Another run may be building at the same time: its folder is left alone while it is recent, and whichever
    run finishes second keeps the first one's data set.
    """
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_ROOT.iterdir():  # data sets of older schemas (hundreds of MB each), builds cut short
        if stale.name != cached.name and not _is_being_built(stale):
            shutil.rmtree(stale, ignore_errors=True)
    building = Path(tempfile.mkdtemp(prefix=BUILDING_PREFIX, dir=CACHE_ROOT))
    try:
        dataset = build_instance(building / "instance", size)
        fields = {key: value for key, value in asdict(dataset).items() if key != "instance"}
        (building / "dataset.json").write_text(json.dumps(fields, indent=2))
        try:
            building.rename(cached)
        except OSError:  # the other run's data set is already in place
            if not (cached / "dataset.json").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _is_being_built(folder: Path) -> bool:
    """A build folder another run may still be writing: one younger than any build takes."""
    if not folder.name.startswith(BUILDING_PREFIX):
        return False
    try:
        return time.time() - folder.stat().st_mtime < BUILD_HOURS_AT_MOST * 3600
    except OSError:
        return False


def build_instance(instance: Path, size: DataSize) -> Dataset:
    from qrtrack import accounts, codes, create_app, keys
    from qrtrack.images import qr
    from qrtrack.store.db import upgrade_schema

    app = create_app({"ENV_FILE": None, **app_settings(instance, secret_key="bench-build")})
    services = app.extensions["qrtrack"]
    db = services.db
    try:
        upgrade_schema(db)
        owner = accounts.create_user(db, username="bench", password=PASSWORD)
        creator = accounts.create_user(db, username=CREATOR, password=PASSWORD)
        poster = accounts.create_user(db, username="poster", password=PASSWORD)
        api_key = keys.issue_api_key(db, user_id=owner, name="bench")[0]
        creator_key = keys.issue_api_key(db, user_id=creator, name="bench api-create")[0]
        logo_dir = services.logo_dir
        scan_code = codes.create_code(db, owner_id=poster, destination=SCAN_DESTINATION, label="Poster",
                                      logo_dir=logo_dir)
        logo = codes.save_logo(logo_dir, qr.sanitize_logo(logo_png()))
        image_code = codes.create_code(db, owner_id=poster, destination=SCAN_DESTINATION, label="Logo", logo=logo,
                                       logo_dir=logo_dir)
        big = codes.create_code(db, owner_id=owner, destination="https://example.com/tv-ad", label="TV ad",
                                logo_dir=logo_dir)
        for number in range(1, size.codes):
            codes.create_code(db, owner_id=owner, destination=f"https://example.com/products/{number}",
                              label=f"Product {number}", logo_dir=logo_dir)
    finally:
        db.dispose()
    dataset = Dataset(instance=instance, username="bench", password=PASSWORD, api_key=api_key,
                      creator_key=creator_key, scan_slug=scan_code.slug, scan_code_id=scan_code.id,
                      image_slug=image_code.slug, big_uuid=big.uuid, big_code_id=big.id, codes=size.codes,
                      big_scans=size.big_scans)
    insert_scans(dataset.database, code_id=big.id, count=size.big_scans)
    return dataset


def logo_png() -> bytes:
    """A 300 px square logo: a coloured disc with a white bar, the kind of mark people upload."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 290, 290), fill=(220, 60, 40, 255))
    draw.rectangle((70, 130, 230, 170), fill=(255, 255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def insert_scans(database: Path, *, code_id: int, count: int) -> None:
    """`count` scans of one code over the last SCAN_DAYS days, oldest first, and its scan_count to match."""
    columns = _scan_columns()
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            f"INSERT INTO scans ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            _scan_rows(code_id, count, columns))
        connection.execute("UPDATE codes SET scan_count = scan_count + ? WHERE id = ?", (count, code_id))
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def _scan_columns() -> tuple[str, ...]:
    """SCAN_COLUMNS, checked against qrtrack/store/schema.py: a column we would miss must be optional there."""
    from qrtrack.store.schema import scans

    declared = {column.name: column for column in scans.columns if not column.primary_key}
    unknown = [name for name in SCAN_COLUMNS if name not in declared]
    required = [name for name, column in declared.items() if name not in SCAN_COLUMNS and not column.nullable
                and column.default is None and column.server_default is None]
    if unknown or required:
        raise RuntimeError(f"bench/data.py is out of step with qrtrack/store/schema.py: scans has no {unknown}, "
                           f"and needs {required}; update SCAN_COLUMNS and _scan_rows")
    return SCAN_COLUMNS


def _scan_rows(code_id: int, count: int, columns: tuple[str, ...]):
    chooser = random.Random(6)
    agents = chooser.choices(USER_AGENTS, weights=[agent[-1] for agent in USER_AGENTS], k=4096)
    countries = chooser.choices([c for c, _ in COUNTRIES], weights=[w for _, w in COUNTRIES], k=4096)
    visitors = [f"{chooser.getrandbits(128):032x}" for _ in range(min(SCAN_VISITORS, max(count // 4, 1)))]
    start = int(time.time()) - SCAN_DAYS * 86400
    step = SCAN_DAYS * 86400 / max(count, 1)
    for number in range(count):
        user_agent, device, os_name, browser, is_bot, _ = agents[number % 4093]
        country = countries[number % 4091]
        values = {"code_id": code_id, "ts": start + int(number * step), "country": country,
                  "city": CITIES.get(country), "device": device, "os": os_name, "browser": browser,
                  "is_bot": is_bot, "referrer_host": None, "user_agent": user_agent,
                  "visitor": visitors[chooser.randrange(len(visitors))]}
        yield tuple(values[name] for name in columns)


RUN_DIR_PREFIX = "qrtrack-bench-run-"


def new_run_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))


def remove_run_dir(run_dir: Path) -> None:
    """Delete a folder new_run_dir made, and nothing else."""
    if run_dir.name.startswith(RUN_DIR_PREFIX) and run_dir.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def secret_key() -> str:
    return os.urandom(32).hex()
