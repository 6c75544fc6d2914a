"""What the browser tests share: the live server, the Chromium launch, a response log, screenshots, seed data."""
from __future__ import annotations

import io
import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from PIL import Image, ImageDraw
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Response
from werkzeug.serving import WSGIRequestHandler, make_server

from qrtrack import codes, keys
from qrtrack.clock import now_epoch
from qrtrack.images import qr
from qrtrack.scans import ScanTarget
from qrtrack.web.context import AppServices

from .conftest import PASSWORD, gen_user, make_app

CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
# Debian's Chromium as root in a container: no sandbox, no GPU, small /dev/shm, and nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
SCREENSHOT_DIR = Path(__file__).parent / "artifacts" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
THEMES = ("light", "dark")
# Content types whose bodies are searched for a leaked key.
TEXT_TYPES = ("text/", "application/json", "application/javascript", "image/svg+xml")


@dataclass
class LiveServer:
    url: str
    app: Flask

    @property
    def services(self) -> AppServices:
        return self.app.extensions["qrtrack"]


class QuietRequestHandler(WSGIRequestHandler):
    """Leaves out the line per request; errors are still logged."""

    def log_request(self, code="-", size="-") -> None:
        pass


@contextmanager
def serve_live_app(instance: Path, **settings: object) -> Iterator[LiveServer]:
    """The real app on a fresh database, served by werkzeug on a free port of 127.0.0.1 in a thread."""
    app = make_app(instance, SECRET_KEY="browser-test-secret-" + os.urandom(8).hex(), **settings)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="live-server",
                              daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}", app=app)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        app.extensions["qrtrack"].recorder.scan_store.close()
        app.extensions["qrtrack"].db.dispose()


@dataclass
class SeenResponse:
    method: str
    url: str
    status: int
    headers: dict[str, str]
    text: str | None
    unreadable: str | None = None


@dataclass
class ResponseLog:
    """Every response a browser context received, with the body of each text response.

    Bodies are read as the response arrives: Chromium forgets them once the page navigates away.
    """

    seen: list[SeenResponse] = field(default_factory=list)

    def record(self, response: Response) -> None:
        headers = response.headers
        entry = SeenResponse(response.request.method, response.url, response.status, headers, None)
        is_text = headers.get("content-type", "").startswith(TEXT_TYPES)
        if is_text and not 300 <= response.status < 400:
            try:
                entry.text = response.body().decode("utf-8", "replace")
            except Exception as error:  # noqa: BLE001 - kept so the test can say which body it could not check
                entry.unreadable = str(error).splitlines()[0]
        self.seen.append(entry)

    def containing(self, secret: str) -> list[SeenResponse]:
        return [entry for entry in self.seen
                if secret in (entry.text or "") or secret in entry.url
                or any(secret in value for value in entry.headers.values())]


@dataclass
class BrowserErrors:
    """JavaScript errors and console errors (a Content-Security-Policy refusal is one) in a browser context."""

    messages: list[str] = field(default_factory=list)

    def watch(self, context: BrowserContext) -> BrowserErrors:
        context.on("console", self._on_console)
        context.on("weberror", lambda error: self.messages.append(f"uncaught: {error.error}"))
        return self

    def _on_console(self, message: ConsoleMessage) -> None:
        url = message.location.get("url")
        # A page answered with a 4xx status on purpose (a form's validation errors) logs its own status.
        is_page_status = message.text.startswith("Failed to load resource") and message.page and url == message.page.url
        if message.type == "error" and not is_page_status:
            self.messages.append(f"console: {message.text} ({url})")


def log_in(page: Page, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/codes")


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")


def make_logo(path: Path) -> Path:
    """A small two-colour PNG, as a user would upload."""
    image = Image.new("RGB", (96, 96), "#0f766e")
    ImageDraw.Draw(image).ellipse((18, 18, 78, 78), fill="#fde68a")
    image.save(path, format="PNG")
    return path


def take_screenshots(page: Page, name: str) -> list[Path]:
    """Full-page shots of what the page shows now, at each width and in each theme."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for width_name, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        for theme in THEMES:
            page.emulate_media(color_scheme=theme)
            path = SCREENSHOT_DIR / f"{name}-{width_name}-{theme}.png"
            page.screenshot(path=path, full_page=True, animations="disabled", caret="hide")
            paths.append(path)
    page.set_viewport_size(VIEWPORTS["desktop"])
    page.emulate_media(color_scheme="light")
    return paths


def take_docs_screenshot(page: Page, name: str, *, down_to: str, theme: str) -> Path:
    """A desktop shot from the top of the page down to the bottom of the element down_to, for the README."""
    page.set_viewport_size(VIEWPORTS["desktop"])
    page.emulate_media(color_scheme=theme)
    box = page.locator(down_to).bounding_box()
    clip = {"x": 0, "y": 0, "width": VIEWPORTS["desktop"]["width"], "height": box["y"] + box["height"] + 12}
    path = SCREENSHOT_DIR / f"{name}-desktop-{theme}.png"
    page.screenshot(path=path, full_page=True, clip=clip, animations="disabled", caret="hide")
    page.emulate_media(color_scheme="light")
    return path


# README pictures: docs file <- (screenshot, height to keep or None for all). Refresh them after a visible change with
#   .venv/bin/python -m pytest tests/web/test_browser.py -k screenshots && \
#   .venv/bin/python -c "from tests.browser_support import export_docs_screenshots; export_docs_screenshots()"
DOCS_DIR = Path(__file__).parent.parent / "docs"
DOCS_SCREENSHOTS = {
    "screenshot-codes-list.png": ("codes-list-desktop-light.png", None),
    "screenshot-code-analytics-dark.png": ("code-detail-top-desktop-dark.png", None),
    "screenshot-phone-codes-list.png": ("codes-list-phone-light.png", VIEWPORTS["phone"]["height"]),
}


def export_docs_screenshots(max_bytes: int = 150_000) -> list[Path]:
    """Shrink the chosen screenshots into docs/ as palette PNGs, each under max_bytes."""
    written = []
    for docs_name, (shot, height) in DOCS_SCREENSHOTS.items():
        with Image.open(SCREENSHOT_DIR / shot) as image:
            image = image.convert("RGB")
            if height is not None:
                image = image.crop((0, 0, image.width, min(height, image.height)))
            for colours in (256, 128, 64):
                small = image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                buffer = io.BytesIO()
                small.save(buffer, format="PNG", optimize=True)
                if buffer.tell() <= max_bytes:
                    break
        if buffer.tell() > max_bytes:
            raise ValueError(f"{shot} stays above {max_bytes} bytes even with {colours} colours")
        DOCS_DIR.mkdir(exist_ok=True)
        (DOCS_DIR / docs_name).write_bytes(buffer.getvalue())
        written.append(DOCS_DIR / docs_name)
    return written


# --- seed data for the screenshots ---------------------------------------------------------------

SEED_CODES = (
    ("Spring menu, table cards", "https://example.com/menu/spring"),
    ("Shop window poster", "https://example.com/offers/window"),
    ("Business card", "https://example.com/team/alex"),
    ("Conference booth", "https://example.com/events/booth-42"),
    ("Product manual", "https://example.com/support/manuals/qx-200.pdf"),
    ("", "https://example.com/wifi"),
)
# (User-Agent, country, city, weight)
SEED_VISITORS = (
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Mobile/15E148 Safari/604.1", "DE", "Berlin", 9),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Mobile Safari/537.36", "FR", "Paris", 6),
    ("Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", "GB", "London", 4),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
     "Safari/537.36", "NL", "Amsterdam", 2),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15", "US", "New York", 2),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "US", None, 1),
)


def seed_showcase(live: LiveServer, tmp_path: Path) -> dict:
    """An admin with a handful of codes made over past weeks, the newest with a logo and a month of scans;
    a second user and an API key."""
    db = live.services.db
    admin = gen_user(db, "alex", is_admin=True)
    gen_user(db, "sam")
    now = now_epoch()
    logo_png = qr.sanitize_logo(make_logo(tmp_path / "seed-logo.png").read_bytes())
    logo = codes.save_logo(live.services.logo_dir, logo_png)
    made = []
    with pytest.MonkeyPatch.context() as patch:
        for age_days, (label, destination) in reversed(list(enumerate(SEED_CODES, start=31))):
            patch.setattr(codes, "now_epoch", lambda age_days=age_days: now - age_days * 86400)
            made.append(codes.create_code(db, owner_id=admin, destination=destination, label=label,
                                          logo=logo if age_days == 31 else None, logo_dir=live.services.logo_dir))
    rng = random.Random(4)
    for rank, code in enumerate(reversed(made)):
        count = 240 if rank == 0 else rng.randint(0, 40)
        write_scans(live, code, count=count, now=now, rng=rng)
    keys.issue_api_key(db, user_id=admin, name="build server")
    return {"username": "alex", "codes": list(reversed(made))}


def write_scans(live: LiveServer, code, *, count: int, now: int, rng: random.Random) -> None:
    """count scans of code over the last 30 days, more of them recently, from the seed visitors."""
    recorder = live.services.recorder
    target = ScanTarget(code_id=code.id, destination=code.destination)
    weights = [visitor[3] for visitor in SEED_VISITORS]
    rows = []
    for _ in range(count):
        agent, country, city, _weight = rng.choices(SEED_VISITORS, weights)[0]
        age = int(30 * 86400 * rng.random() ** 1.6)
        environ = {"HTTP_USER_AGENT": agent, "REMOTE_ADDR": f"203.0.113.{rng.randint(1, 60)}",
                   "HTTP_REFERER": rng.choice([None, None, "https://www.instagram.com/"])}
        row = recorder.scan_row(target, environ, now=now - age)
        rows.append({**row, "country": country, "city": city})
    if rows:
        recorder.scan_store.write(rows)
