"""The dashboard in a real browser: Debian's Chromium driven by Playwright against the app on a live server.

The journey of issue 4 runs as one test, from /setup to logging out; the other tests check that
one user cannot open another's code pages, that a form without its CSRF token is refused, and
save screenshots of the main pages at desktop and phone width, light and dark, for people to look at.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from sqlalchemy import update

from qrtrack import codes, keys
from qrtrack.clock import now_epoch
from qrtrack.scans import ScanTarget
from qrtrack.store import schema

from ..browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORTS,
    BrowserErrors,
    LiveServer,
    ResponseLog,
    log_in,
    log_out,
    make_logo,
    seed_showcase,
    serve_live_app,
    take_docs_screenshot,
    take_screenshots,
)
from ..conftest import PASSWORD, gen_code, gen_user, require

pytestmark = pytest.mark.browser
TIMEOUT_MS = 10_000
SHOWCASE_BASE_URL = "https://qr.example.com"


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    require([] if Path(CHROMIUM).exists() else [f"Chromium at {CHROMIUM} (apt-get install chromium, or set "
                                                   "CHROMIUM_PATH)"], "drive a browser")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def chromium(playwright_driver: Playwright) -> Iterator[Browser]:
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with serve_live_app(tmp_path / "instance") as live:
        yield live


@pytest.fixture
def browser_errors() -> BrowserErrors:
    return BrowserErrors()


@pytest.fixture
def new_page(chromium: Browser, browser_errors: BrowserErrors) -> Iterator[Callable[..., Page]]:
    """Opens a page in a fresh context (its own cookies); every context is closed after the test."""
    opened: list[BrowserContext] = []

    def open_page(**context_options) -> Page:
        context = chromium.new_context(**{"viewport": VIEWPORTS["desktop"], **context_options})
        context.set_default_timeout(TIMEOUT_MS)
        browser_errors.watch(context)
        opened.append(context)
        return context.new_page()

    yield open_page
    for context in opened:
        context.close()


def test_whole_journey_from_setup_to_logout(live_server: LiveServer, new_page, browser_errors: BrowserErrors,
                                            playwright_driver: Playwright, tmp_path: Path):
    base = live_server.url
    page = new_page()
    responses = ResponseLog()
    page.context.on("response", responses.record)

    # First run: / leads to the one-time setup page, which creates the admin and signs them in.
    page.goto(base + "/")
    expect(page).to_have_url(base + "/setup")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_role("button", name="Create admin and log in").click()
    expect(page).to_have_url(base + "/codes")
    expect(page.get_by_role("status")).to_contain_text("Welcome to QR Track")
    assert page.request.get(base + "/setup").status == 404

    log_out(page)
    expect(page.get_by_role("status")).to_contain_text("You are logged out")
    log_in(page, base, "admin")

    # A code with a logo, pointing at a page of this same server so the phone below stays offline.
    destination = base + "/login?from=qr"
    page.get_by_role("link", name="Create a code").click()
    page.get_by_label("Destination").fill(destination)
    page.get_by_label("Label").fill("Spring menu")
    page.get_by_label("Logo").set_input_files(make_logo(tmp_path / "logo.png"))
    page.get_by_role("button", name="Create code").click()
    expect(page).to_have_url(re.compile(re.escape(base) + r"/codes/[0-9a-f-]{36}$"))
    expect(page.get_by_role("status")).to_contain_text("Your code is ready")
    uuid = page.url.rsplit("/", 1)[1]
    expect(page.get_by_alt_text("The code's logo")).to_be_visible()

    # The QR code is on the page, and the downloaded PNG decodes to the short URL shown beside it.
    qr = page.locator("img.qr-large")
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.complete && img.naturalWidth") == 512
    short_url = page.locator(".short-url-field .copy-value").inner_text().strip()
    assert re.fullmatch(re.escape(base) + r"/p/[A-Za-z0-9]+", short_url)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="PNG 512").click()
    download = download_info.value
    slug = short_url.rsplit("/", 1)[1]
    assert download.suggested_filename == f"qr-{slug}-512.png"
    png_path = tmp_path / download.suggested_filename
    download.save_as(png_path)
    with Image.open(png_path) as image:
        assert image.size == (512, 512)
        decoded = zxingcpp.read_barcodes(image)
    assert [(result.format, result.text) for result in decoded] == [(zxingcpp.BarcodeFormat.QRCode, short_url)]

    # A phone scans the code: the short URL answers 302 and the phone lands on the destination.
    phone_device = {k: v for k, v in playwright_driver.devices["iPhone 13"].items() if k != "default_browser_type"}
    phone = new_page(**phone_device)
    landed = phone.goto(short_url)
    assert phone.url == destination
    assert landed.status == 200
    scan_answer = landed.request.redirected_from.response()
    assert (scan_answer.status, scan_answer.headers["cache-control"]) == (302, "no-store")
    expect(phone).to_have_title(re.compile("Log in"))

    # The scan shows in the analytics: one scan, from an iPhone.
    page.reload()
    stat = page.locator(".stat").filter(has=page.locator(".stat-label", has_text=re.compile(r"^Scans$")))
    expect(stat.locator(".stat-value")).to_have_text("1")
    devices = page.locator("section.breakdown").filter(has=page.get_by_role("heading", name="Devices"))
    expect(devices.locator(".breakdown-row")).to_have_count(1)
    expect(devices.locator(".breakdown-name")).to_have_text("iPhone")
    expect(devices.locator(".breakdown-count")).to_contain_text("1")
    expect(page.locator(".latest-table tbody tr")).to_have_count(1)
    expect(page.locator(".latest-table tbody tr td.latest-first")).to_have_text("iPhone")

    # An API key, shown once.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("console test")
    page.get_by_role("button", name="Generate key").click()
    api_key = page.locator("#new-key-value").inner_text().strip()
    assert api_key.startswith(keys.KEY_PREFIX) and len(api_key) > 30
    secret_part = api_key[keys.DISPLAY_PREFIX_LENGTH:]

    # The Live Console lists the codes as that key, and the page never holds the key.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Live Console").click()
    expect(page.get_by_label("API key")).to_contain_text("console test")
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-status")).to_have_text("200 OK")
    expect(page.locator("#console-body-out")).to_contain_text(uuid)
    expect(page.locator("#console-history .call")).to_have_count(1)
    assert secret_part not in page.content()

    # Revoked in another tab while the console is open: the console's next call is refused.
    keys_tab = page.context.new_page()
    keys_tab.goto(base + "/settings/api-keys")
    keys_tab.get_by_role("link", name="Revoke…").click()
    keys_tab.get_by_role("button", name="Revoke key").click()
    expect(keys_tab.get_by_role("status")).to_contain_text("Revoked console test")
    keys_tab.close()
    # After each answer the console fetches its history; the reload below must not cut that fetch short before
    # the response log has read its body (on a busy machine it can), so the click waits for the history too.
    with page.expect_response(base + "/console/history"):
        page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-status")).to_have_text("401 Unauthorized")
    expect(page.locator("#console-body-out")).to_contain_text("revoked")
    assert secret_part not in page.content()
    page.reload()
    expect(page.get_by_role("heading", name="Create an API key first")).to_be_visible()

    log_out(page)
    expect(page.get_by_role("status")).to_contain_text("You are logged out")
    page.goto(base + "/codes")
    expect(page).to_have_url(re.compile(re.escape(base) + r"/login\?next="))

    # Of everything the browser received, only the page that revealed the key holds it.
    # A static file's body can be gone before it is read when the page moves on; those are shipped files.
    unreadable = [(entry.url, entry.unreadable) for entry in responses.seen
                  if entry.unreadable and not entry.url.startswith(base + "/static/")]
    assert not unreadable
    leaks = [(entry.method, entry.url, entry.status) for entry in responses.containing(secret_part)]
    assert leaks == [("POST", base + "/settings/api-keys", 201)]
    assert any(entry.url == base + "/console/send" for entry in responses.seen)
    assert browser_errors.messages == []


def test_another_user_cannot_open_someone_elses_code_pages(live_server: LiveServer, new_page,
                                                           browser_errors: BrowserErrors):
    base, db = live_server.url, live_server.services.db
    alice_id = gen_user(db, "alice", is_admin=True)
    code = gen_code(db, alice_id, destination="https://example.com/alice", label="Alice's menu")

    # The admin adds bob in Settings → Users.
    admin = new_page()
    log_in(admin, base, "alice")
    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    admin.get_by_label("Username").fill("bob")
    admin.get_by_label("Password").fill(PASSWORD)
    admin.get_by_role("button", name="Add user").click()
    expect(admin.get_by_role("status")).to_contain_text("Added bob")

    bob = new_page()
    log_in(bob, base, "bob")
    expect(bob.get_by_role("heading", name="Create your first QR code")).to_be_visible()
    for path in (f"/codes/{code.uuid}", f"/codes/{code.uuid}/edit", f"/codes/{code.uuid}/delete"):
        response = bob.goto(base + path)
        assert response.status == 404, path
        expect(bob.get_by_role("heading", name="Page not found")).to_be_visible()
    csv = bob.request.get(f"{base}/codes/{code.uuid}/scans.csv")
    assert csv.status == 404
    assert "attachment" not in csv.headers.get("content-disposition", "")

    # Bob's own valid CSRF token does not let him pause alice's code either.
    bob.goto(base + "/codes")
    token = bob.locator("input[name=csrf_token]").first.get_attribute("value")
    paused = bob.request.post(f"{base}/codes/{code.uuid}/status", form={"status": "paused", "csrf_token": token})
    assert paused.status == 404
    assert codes.get_code(db, owner_id=alice_id, uuid=code.uuid).status == "active"
    assert browser_errors.messages == []


def test_form_posted_without_its_csrf_token_is_refused(live_server: LiveServer, new_page,
                                                       browser_errors: BrowserErrors):
    base, db = live_server.url, live_server.services.db
    alice_id = gen_user(db, "alice")
    page = new_page()
    log_in(page, base, "alice")

    # The create form with its token taken out, submitted by the browser itself.
    page.goto(base + "/codes/new")
    page.locator("form.code-form input[name=csrf_token]").evaluate("input => input.remove()")
    page.get_by_label("Destination").fill("https://example.com/forged")
    with page.expect_response(base + "/codes/new") as answer:
        page.get_by_role("button", name="Create code").click()
    assert answer.value.status == 400
    expect(page.get_by_role("heading", name="That did not work")).to_be_visible()
    expect(page.locator("main")).to_contain_text("nothing was changed")

    # A script's POST with the session cookie but no token: no API key is made.
    forged = page.request.post(base + "/settings/api-keys", form={"name": "forged"})
    assert forged.status == 400
    assert "nothing was changed" in forged.text()
    assert codes.list_codes(db, owner_id=alice_id)[1] == 0
    assert keys.list_api_keys(db, user_id=alice_id) == []
    assert browser_errors.messages == []


@pytest.fixture
def showcase_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A live server whose short URLs read like a real install's (the browser still talks to 127.0.0.1)."""
    with serve_live_app(tmp_path / "instance", BASE_URL=SHOWCASE_BASE_URL, SESSION_COOKIE_SECURE="false") as live:
        yield live


def test_screenshots_of_the_main_pages(showcase_server: LiveServer, new_page, browser_errors: BrowserErrors,
                                      tmp_path: Path):
    """Saved under tests/artifacts/screenshots/ for people to look at; the test checks only that each page rendered."""
    base = showcase_server.url
    showcase = seed_showcase(showcase_server, tmp_path)
    page = new_page()
    shots = []

    page.goto(base + "/login")
    shots += take_screenshots(page, "login")
    log_in(page, base, showcase["username"])
    expect(page.locator(".codes-table tbody tr")).to_have_count(len(showcase["codes"]))
    shots += take_screenshots(page, "codes-list")

    page.goto(f"{base}/codes/{showcase['codes'][0].uuid}")
    expect(page.locator(".latest-table")).to_be_visible()
    shots += take_screenshots(page, "code-detail")
    shots.append(take_docs_screenshot(page, "code-detail-top", down_to=".chart-card", theme="dark"))

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Analytics").click()
    expect(page.locator(".latest-table")).to_be_visible()
    shots += take_screenshots(page, "analytics")

    page.goto(base + "/codes/new")
    page.get_by_label("Destination").fill("example.com/menu")
    page.get_by_label("Label").fill("Autumn menu")
    page.get_by_role("button", name="Create code").click()
    expect(page.locator("#destination-error")).to_be_visible()
    shots += take_screenshots(page, "code-new-error")

    page.goto(base + "/settings/api-keys")
    page.get_by_label("Name").fill("Zapier")
    page.get_by_role("button", name="Generate key").click()
    expect(page.locator("#new-key-value")).to_be_visible()
    shots += take_screenshots(page, "api-keys")

    page.goto(base + "/console")
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-status")).to_have_text("200 OK")
    shots += take_screenshots(page, "console")

    page.goto(base + "/settings/users")
    shots += take_screenshots(page, "users")
    page.goto(base + "/api-reference")
    shots += take_screenshots(page, "api-reference")

    assert browser_errors.messages == []
    assert len(shots) == 9 * 4 + 1
    assert all(path.stat().st_size > 10_000 for path in shots)



def open_console(live_server: LiveServer, new_page) -> Page:
    """The Live Console of a new user alice, who has one key."""
    db = live_server.services.db
    keys.issue_api_key(db, user_id=gen_user(db, "alice"), name="console")
    page = new_page()
    log_in(page, live_server.url, "alice")
    page.goto(live_server.url + "/console")
    return page


def test_console_shows_no_earlier_answer_beside_a_new_call_or_a_refusal(live_server: LiveServer, new_page,
                                                                        browser_errors: BrowserErrors):
    page = open_console(live_server, new_page)
    response, meta = page.locator("#console-response"), page.locator("#console-response-meta")

    page.get_by_label("Endpoint").select_option("create")
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-status")).to_have_text("201 Created")

    # Refused in the page: no uuid. The 201 goes; the placeholder says nothing has been sent.
    page.get_by_label("Endpoint").select_option("update")
    page.get_by_label("Code uuid").fill("")
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-uuid-error")).to_be_visible()
    expect(response).to_be_hidden()
    expect(meta).to_be_hidden()
    expect(page.locator("#console-placeholder")).to_contain_text("Send a request")

    # Refused by the server: a query longer than the console sends. Only its error shows.
    page.get_by_label("Endpoint").select_option("list")
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-status")).to_have_text("200 OK")
    page.get_by_label("Query parameters").fill("label=" + "x" * 1200)
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-error")).to_contain_text("too long")
    expect(response).to_be_hidden()
    expect(meta).to_be_hidden()
    expect(page.locator("#console-placeholder")).to_be_hidden()
    refused = [text for text in browser_errors.messages if "status of 400" in text and "/console/send" in text]
    assert browser_errors.messages == refused and len(refused) == 1


def test_console_format_says_why_it_leaves_invalid_json_as_typed(live_server: LiveServer, new_page,
                                                                 browser_errors: BrowserErrors):
    """A browser probe pressed Format on {bad and saw nothing happen."""
    page = open_console(live_server, new_page)
    page.get_by_label("Endpoint").select_option("create")
    body, problem = page.get_by_label("JSON body"), page.locator("#console-format-error")
    body.fill("{bad")
    page.get_by_role("button", name="Format").click()
    expect(problem).to_contain_text("Not valid JSON, so it cannot be formatted")
    expect(body).to_have_value("{bad")
    body.fill('{"destination":"https://example.com"}')
    expect(problem).to_be_hidden()
    page.get_by_role("button", name="Format").click()
    expect(body).to_have_value('{\n  "destination": "https://example.com"\n}')
    assert browser_errors.messages == []


def test_console_says_a_body_past_the_request_limit_is_too_large_not_that_the_session_ended(
        live_server: LiveServer, new_page, browser_errors: BrowserErrors):
    """An outsider pasted 3 MB and was told to log in again."""
    page = open_console(live_server, new_page)
    page.get_by_label("Endpoint").select_option("create")
    page.get_by_label("JSON body").evaluate("(body) => { body.value = 'x'.repeat(3 * 1024 * 1024); }")
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-error")).to_contain_text("the request is larger than")
    expect(page.locator("#console-error")).not_to_contain_text("session")
    refused = [text for text in browser_errors.messages if "status of 413" in text and "/console/send" in text]
    assert browser_errors.messages == refused and len(refused) == 1


def test_narrow_phones_show_whole_dates_and_a_method_badge_on_one_line(live_server: LiveServer, new_page,
                                                                      browser_errors: BrowserErrors):
    """An outsider saw "11/09/202" in the date fields at 320 px and DELETE broken into DELE / TE at 390 px."""
    page = open_console(live_server, new_page)
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_label("Endpoint").select_option("delete")
    page.get_by_label("Code uuid").fill("fad17713-fe85-43f9-b0ef-d8c1f8f6550b")
    badge = page.locator("#console-method")
    expect(badge).to_have_text("DELETE")
    one_line = "el => el.getBoundingClientRect().height <= 1.5 * parseFloat(getComputedStyle(el).lineHeight)"
    assert badge.evaluate(one_line)
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto(live_server.url + "/analytics")
    for field in ("From", "To"):
        assert page.get_by_label(field).bounding_box()["width"] >= 150, field
    assert browser_errors.messages == []


def test_a_lone_surrogate_in_the_code_uuid_is_sent_and_answered_not_left_sending(live_server: LiveServer, new_page,
                                                                                browser_errors: BrowserErrors):
    """encodeURIComponent threw on it: the call never left and the button stayed on Sending… until a reload."""
    page = open_console(live_server, new_page)
    page.get_by_label("Endpoint").select_option("get")
    page.get_by_label("Code uuid").evaluate("(field) => { field.value = 'abc' + String.fromCharCode(0xD800); }")
    page.get_by_role("button", name="Send request").click()
    expect(page.locator("#console-status")).to_have_text("404 Not Found")
    expect(page.get_by_role("button", name="Send request")).to_be_enabled()
    assert browser_errors.messages == []


def test_ctrl_enter_while_a_call_is_running_sends_nothing_more(live_server: LiveServer, new_page,
                                                               browser_errors: BrowserErrors,
                                                               monkeypatch: pytest.MonkeyPatch):
    base, db = live_server.url, live_server.services.db
    alice_id = gen_user(db, "alice")
    keys.issue_api_key(db, user_id=alice_id, name="console")
    answer_now, authenticate = threading.Event(), keys.authenticate_key_id

    def slow_authenticate(*args, **kwargs):  # the server holds each call until the test lets it answer
        answer_now.wait(timeout=TIMEOUT_MS / 1000)
        return authenticate(*args, **kwargs)

    monkeypatch.setattr(keys, "authenticate_key_id", slow_authenticate)
    page = new_page()
    log_in(page, base, "alice")
    page.goto(base + "/console")
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.method) if request.url.endswith("/console/send") else None)
    params = page.get_by_label("Query parameters")
    params.press("Control+Enter")
    expect(page.get_by_role("button", name="Sending…")).to_be_disabled()
    params.press("Control+Enter")
    params.press("Control+Enter")
    page.get_by_label("Endpoint").press("Control+Enter")
    answer_now.set()
    expect(page.locator("#console-status")).to_have_text("200 OK")
    expect(page.get_by_role("button", name="Send request")).to_be_enabled()
    assert sent == ["POST"]
    assert len(keys.list_recent_api_calls(db, user_id=alice_id)) == 1
    assert browser_errors.messages == []


LONG_LABELS = ("shop.example.com/collections/summer-2026-promo-table-cards", "L" * 200)


def test_long_labels_and_destinations_wrap_on_every_page_at_phone_and_desktop_width(
        live_server: LiveServer, new_page, browser_errors: BrowserErrors, tmp_path: Path):
    base, db = live_server.url, live_server.services.db
    alice_id = gen_user(db, "alice", is_admin=True)
    made = [gen_code(db, alice_id, destination="https://example.com/" + "d" * 400, label=label)
            for label in LONG_LABELS]
    keys.issue_api_key(db, user_id=alice_id, name="k" * 100)
    recorder = live_server.services.recorder
    recorder.scan_store.write([recorder.scan_row(ScanTarget(code_id=code.id, destination=code.destination),
                                                 {"HTTP_USER_AGENT": "Mozilla/5.0", "REMOTE_ADDR": "203.0.113.9"},
                                                 now=now_epoch() - 60) for code in made])
    page = new_page()
    log_in(page, base, "alice")
    key_id = keys.list_api_keys(db, user_id=alice_id)[0].id
    paths = ["/codes", "/analytics", "/settings/api-keys", f"/settings/api-keys/{key_id}/revoke", "/console",
             "/settings/users", "/codes?q=" + "L" * 150]
    for code in made:
        paths += [f"/codes/{code.uuid}", f"/codes/{code.uuid}/edit", f"/codes/{code.uuid}/delete"]
    for path in paths:
        page.goto(base + path)
        for viewport in VIEWPORTS.values():
            page.set_viewport_size(viewport)
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= viewport["width"], (path, viewport["width"], scroll_width)
        page.set_viewport_size(VIEWPORTS["desktop"])
    assert browser_errors.messages == []


# The texts the page shows cut short with an ellipsis, each with the title that gives it whole (or more), if any.
CUT_TEXT_JS = """() => [...document.querySelectorAll("body *")]
    .filter(el => getComputedStyle(el).textOverflow === "ellipsis" && el.scrollWidth > el.clientWidth)
    .map(el => ({text: el.textContent.trim().replace(/\\s+/g, " "),
                 title: (el.closest("[title]") || el.querySelector("[title]") || {title: null}).title}))"""


def cut_texts(page: Page, base: str, paths: list[str]) -> list[dict]:
    """What CUT_TEXT_JS finds on each page at each width."""
    found = []
    for path in paths:
        page.goto(base + path)
        for viewport in VIEWPORTS.values():
            page.set_viewport_size(viewport)
            found += [{**cut, "path": path} for cut in page.evaluate(CUT_TEXT_JS)]
    page.set_viewport_size(VIEWPORTS["desktop"])
    return found


def assert_cut_texts_have_titles(page: Page, base: str, paths: list[str], *,
                                 is_expected: Callable[[str], bool]) -> None:
    """Logged in as alice, every text cut short on these pages has its whole text in a title; one cut text
    is_expected, so the check is not of nothing."""
    log_in(page, base, "alice")
    cut = cut_texts(page, base, paths)
    assert any(is_expected(element["text"]) for element in cut)
    assert [element for element in cut if element["text"] not in (element["title"] or "")] == []


def test_text_cut_short_on_the_settings_pages_has_its_whole_text_in_a_title(live_server: LiveServer, new_page,
                                                                           browser_errors: BrowserErrors):
    base, db = live_server.url, live_server.services.db
    alice_id = gen_user(db, "alice", is_admin=True)
    gen_user(db, "u" * 64)
    raw_key, _ = keys.issue_api_key(db, user_id=alice_id, name="k" * 100)
    with live_server.app.test_client() as client:
        client.get("/api.php?label=" + "x" * 300, headers={"X-Api-Key": raw_key})
    assert_cut_texts_have_titles(new_page(), base, ["/settings/api-keys", "/settings/users", "/console",
                                                     "/api-reference"],
                                 is_expected=lambda text: text.startswith("/api.php?label=xxx"))
    assert browser_errors.messages == []


def test_text_cut_short_on_the_code_pages_has_its_whole_text_in_a_title(live_server: LiveServer, new_page,
                                                                       browser_errors: BrowserErrors):
    base, db = live_server.url, live_server.services.db
    alice_id = gen_user(db, "alice", is_admin=True)
    made = [gen_code(db, alice_id, destination="https://example.com/" + "d" * 400, label=label)
            for label in LONG_LABELS]
    recorder = live_server.services.recorder
    recorder.scan_store.write([recorder.scan_row(ScanTarget(code_id=code.id, destination=code.destination),
                                                 {"HTTP_USER_AGENT": "Mozilla/5.0", "REMOTE_ADDR": "203.0.113.9"},
                                                 now=now_epoch() - 60) for code in made])
    assert_cut_texts_have_titles(new_page(), base, ["/analytics", "/codes"] + [f"/codes/{code.uuid}" for code in made],
                                 is_expected=lambda text: text == "L" * 200)  # Top codes
    assert browser_errors.messages == []


def test_key_and_user_rows_read_as_label_and_value_lines_on_a_phone(live_server: LiveServer, new_page,
                                                                     browser_errors: BrowserErrors):
    base, db = live_server.url, live_server.services.db
    alice_id = gen_user(db, "alice", is_admin=True)
    keys.issue_api_key(db, user_id=alice_id, name="build server")
    with db.write() as conn:
        conn.execute(update(schema.api_keys).values(created_at=now_epoch() - 6 * 60, last_used_at=now_epoch() - 300))
        conn.execute(update(schema.users).values(created_at=now_epoch() - 14 * 60))
    page = new_page(viewport=VIEWPORTS["phone"])
    log_in(page, base, "alice")
    for path in ("/settings/api-keys", "/settings/users"):
        page.goto(base + path)
        cells = page.locator("table.table-stack td[data-label]")
        expect(cells.first).to_be_visible()
        assert page.locator("table.table-stack td[data-label] time.when").count() > 0, path  # the "ago" checked below
        for index in range(cells.count()):
            cell = cells.nth(index)
            # Each value starts on its label's line, beside it, and "6 minutes ago" stays on one line.
            layout = cell.evaluate("""td => {
                const box = td.getBoundingClientRect();
                const range = document.createRange();
                range.selectNodeContents(td);
                const lines = [...range.getClientRects()].filter(r => r.width > 0 && r.left > box.left + 90);
                const ago = td.querySelector("time.when");
                return {first: lines.length ? lines[0].top - box.top : null,
                        agoLines: ago ? ago.getClientRects().length : 1,
                        agoHeight: ago ? ago.getBoundingClientRect().height : 0};
            }""")
            label = cell.get_attribute("data-label")
            assert layout["first"] is not None and layout["first"] < 12, (path, label, layout)
            assert layout["agoLines"] == 1 and layout["agoHeight"] < 30, (path, label, layout)
    assert browser_errors.messages == []
