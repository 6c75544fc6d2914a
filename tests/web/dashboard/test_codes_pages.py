"""Dashboard code pages through the test client: list, create, edit, pause, delete, detail, analytics, CSV."""
from __future__ import annotations

import csv
import html
import io
import re
import uuid as uuid_module
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from PIL import Image
from sqlalchemy import insert

from qrtrack import analytics, codes, rollups
from qrtrack.clock import now_epoch
from qrtrack.errors import ValidationError
from qrtrack.store import scans as scan_store
from qrtrack.store.schema import codes as codes_table

from ...conftest import cached_images, gen_code, gen_user, make_app
from ...dashboard_helpers import csrf_token, log_in, text

CODE_PAGES = ["/codes/{uuid}", "/codes/{uuid}/edit", "/codes/{uuid}/delete", "/codes/{uuid}/scans.csv"]
CODE_POSTS = [("/codes/{uuid}/edit", {"destination": "https://evil.example/", "label": "mine"}),
              ("/codes/{uuid}/status", {"status": "paused"}), ("/codes/{uuid}/delete", {"confirm": "{slug}"})]
INLINE_SCRIPT_OR_STYLE = re.compile(r"<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=", re.IGNORECASE)


@pytest.fixture
def browser(app, alice):
    """A test client signed in as alice, with CSRF checks off (one test below keeps them on)."""
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    assert log_in(client).status_code == 302
    return client


def png_bytes(size: tuple[int, int] = (64, 64), *, noise: bool = False) -> bytes:
    image = Image.effect_noise(size, 90).convert("RGB") if noise else Image.new("RGB", size, (200, 40, 90))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def image_bytes(kind: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(out, format=kind)
    return out.getvalue()


def create_form(**fields) -> dict:
    return {"type": "url", "destination": "https://example.com/menu", "label": "Spring menu", **fields}


def scan_row(code_id: int, *, ts: int | None = None, is_bot: bool = False, visitor: str = "v", **values) -> dict:
    return {"code_id": code_id, "ts": ts or now_epoch() - 3600, "country": "FR", "city": "Paris", "device": "iPhone",
            "os": "iOS 17.4", "browser": "Mobile Safari 17.4", "is_bot": is_bot, "referrer_host": None,
            "user_agent": "", "visitor": visitor, **values}


def add_scans(db, rows: list[dict]) -> None:
    with db.write() as conn:
        scan_store.insert_scans(conn, rows)


# --- access ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/codes", "/codes/new", "/analytics", *CODE_PAGES])
def test_code_pages_need_a_signed_in_user(client, db, alice, path):
    code = gen_code(db, alice)
    response = client.get(path.format(uuid=code.uuid))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", CODE_PAGES)
def test_another_users_code_is_not_found_on_every_page(browser, db, path):
    bobs = gen_code(db, gen_user(db, "bob"))
    assert browser.get(path.format(uuid=bobs.uuid)).status_code == 404
    assert browser.get(path.format(uuid=str(uuid_module.uuid4()))).status_code == 404
    assert browser.get(path.format(uuid="not-a-uuid")).status_code == 404


@pytest.mark.parametrize(("path", "data"), CODE_POSTS)
def test_another_users_code_cannot_be_changed(browser, db, path, data):
    bob = gen_user(db, "bob")
    bobs = gen_code(db, bob, destination="https://bob.example/")
    filled = {name: value.format(slug=bobs.slug) for name, value in data.items()}
    assert browser.post(path.format(uuid=bobs.uuid), data=filled).status_code == 404
    unchanged = codes.get_code(db, owner_id=bob, uuid=bobs.uuid)
    assert (unchanged.destination, unchanged.status, unchanged.label) == ("https://bob.example/", "active", "")


def test_a_form_posted_without_its_csrf_token_is_refused(app, db, alice):
    client = app.test_client()
    log_in(client)
    response = client.post("/codes/new", data=create_form())
    assert response.status_code == 400
    assert codes.list_codes(db, owner_id=alice)[1] == 0
    token = csrf_token(client, "/codes/new")
    assert client.post("/codes/new", data={**create_form(), "csrf_token": token}).status_code == 302


def test_pages_carry_no_inline_script_style_or_handlers(browser, db, alice):
    code = gen_code(db, alice, label="Menu")
    add_scans(db, [scan_row(code.id)])
    for path in ("/codes", "/codes/new", f"/codes/{code.uuid}", f"/codes/{code.uuid}/edit",
                 f"/codes/{code.uuid}/delete", "/analytics"):
        page = text(browser.get(path))
        assert not INLINE_SCRIPT_OR_STYLE.search(page), path


# --- list --------------------------------------------------------------------------------------

def test_an_empty_list_invites_creating_the_first_code(browser):
    page = text(browser.get("/codes"))
    assert "Create your first QR code" in page
    assert 'href="/codes/new"' in page


def test_the_list_shows_each_codes_qr_short_url_destination_and_scans(browser, db, alice):
    code = gen_code(db, alice, destination="https://example.com/a/very/long/path?with=query", label="Table cards")
    add_scans(db, [scan_row(code.id), scan_row(code.id, visitor="w")])
    page = text(browser.get("/codes"))
    assert re.search(rf'src="/img/{code.slug}\.png\?size=96&amp;v=[0-9a-f]{{16}}"', page)
    assert f'<span class="url-base">http://localhost/p/</span><span class="url-slug">{code.slug}</span>' in page
    assert f'data-copy-target="url-{code.slug}"' in page
    assert 'title="https://example.com/a/very/long/path?with=query"' in page
    assert "Table cards" in page and "badge-active" in page
    assert re.search(r"<strong>2</strong>", page)


def test_search_finds_codes_by_label_or_destination(browser, db, alice):
    gen_code(db, alice, label="Summer menu", destination="https://cafe.example/")
    gen_code(db, alice, label="Flyer", destination="https://shop.example/summer-sale")
    gen_code(db, alice, label="Poster", destination="https://other.example/")
    page = text(browser.get("/codes?q=summer"))
    assert "Summer menu" in page and "Flyer" in page and "Poster" not in page
    assert "2 codes matching “summer”" in page
    assert "No codes match “winter”" in text(browser.get("/codes?q=winter"))


@pytest.mark.parametrize(("sort", "order", "expected"), [
    ("label", "asc", ["Apple", "Banana", "Cherry"]), ("label", "desc", ["Cherry", "Banana", "Apple"]),
    ("scans", "desc", ["Banana", "Cherry", "Apple"]), ("scans", "asc", ["Apple", "Cherry", "Banana"]),
    ("created", "desc", ["Cherry", "Apple", "Banana"]), ("created", "asc", ["Banana", "Apple", "Cherry"]),
    ("updated", "desc", ["Banana", "Cherry", "Apple"]), ("updated", "asc", ["Apple", "Cherry", "Banana"]),
])
def test_the_list_sorts_by_each_column_both_ways(browser, db, alice, sort, order, expected):
    now = now_epoch()
    rows = {"Banana": (now - 300, now - 10, 9), "Apple": (now - 200, now - 200, 1), "Cherry": (now - 100, now - 50, 4)}
    with db.write() as conn:
        for label, (created, updated, scans) in rows.items():
            conn.execute(insert(codes_table).values(
                uuid=str(uuid_module.uuid4()), slug=f"s{label[:5]}", owner_id=alice, type="url",
                destination="https://example.com/", label=label, status="active", created_at=created,
                updated_at=updated, scan_count=scans))
    page = text(browser.get(f"/codes?sort={sort}&order={order}"))
    assert re.findall(r'class="code-name"[^>]*>(\w+)<', page) == expected


def test_pagination_stays_quick_with_ten_thousand_codes(browser, db, alice):
    now = now_epoch()
    with db.write() as conn:
        conn.execute(insert(codes_table), [
            {"uuid": str(uuid_module.uuid4()), "slug": f"p{number:06d}", "owner_id": alice, "type": "url",
             "destination": f"https://example.com/{number}", "label": f"Code {number:05d}", "status": "active",
             "created_at": now - number, "updated_at": now - number, "scan_count": number % 97}
            for number in range(10_000)])
    first = text(browser.get("/codes"))
    assert "1–25 of 10,000" in first and "Code 00000" in first and "Code 00025" not in first
    assert 'href="/codes?page=400"' in first and 'rel="next">Next →</a>' in first
    last = text(browser.get("/codes?page=400"))
    assert "9,976–10,000 of 10,000" in last and "Code 09999" in last and "Code 09974" not in last
    beyond = browser.get("/codes?page=999")
    assert beyond.status_code == 302 and beyond.headers["Location"].endswith("page=400")
    by_label = text(browser.get("/codes?sort=label&order=desc&page=400"))
    assert "Code 00000" in by_label


def test_a_list_of_one_page_shows_its_count_without_page_links(browser, db, alice):
    for number in range(3):
        gen_code(db, alice, label=f"Code {number}")
    page = text(browser.get("/codes"))
    assert "1–3 of 3" in page and "pager-links" not in page and "Next →" not in page


@pytest.mark.parametrize(("page", "location"), [
    ("9223372036854775807", "/codes?page=2"), ("99999999999999999999", "/codes?page=2"),  # past the end: the last
    ("1e9", None), ("-3", None), ("0", None)])  # not a page number: the first
def test_a_huge_or_odd_page_number_leads_to_a_page_that_exists(browser, db, alice, page, location):
    for number in range(30):
        gen_code(db, alice, label=f"Code {number}")
    response = browser.get(f"/codes?page={page}")
    if location is not None:
        assert response.status_code == 302 and response.headers["Location"] == location
    else:
        assert response.status_code == 200 and "1–25 of 30" in text(response)


# --- create ------------------------------------------------------------------------------------

def test_creating_a_code_with_a_logo_stores_the_sanitised_logo(browser, services, alice):
    response = browser.post("/codes/new", data=create_form(logo=(io.BytesIO(png_bytes()), "logo.png")))
    assert response.status_code == 302
    (code,), total = codes.list_codes(services.db, owner_id=alice)
    assert response.headers["Location"] == f"/codes/{code.uuid}"
    assert (code.destination, code.label, code.type, code.status) == (
        "https://example.com/menu", "Spring menu", "url", "active")
    assert codes.logo_path(services.logo_dir, code.logo).is_file()
    page = text(browser.get(response.headers["Location"]))
    assert "Your code is ready" in page and f"/logo/{code.logo}.png" in page


@pytest.mark.parametrize("status", ["paused", "archived", "bogus"])
def test_the_create_form_makes_an_active_code_whatever_status_is_posted(browser, services, alice, status):
    assert browser.post("/codes/new", data=create_form(status=status)).status_code == 302
    (code,), _ = codes.list_codes(services.db, owner_id=alice)
    assert code.status == "active"


@pytest.mark.parametrize(("content", "filename"), [
    (image_bytes("GIF"), "logo.gif"), (image_bytes("BMP"), "logo.png"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.svg"), (b"not an image", "logo.png"),
], ids=["gif", "bmp-named-png", "svg", "text"])
def test_a_logo_that_is_not_png_jpeg_or_webp_is_refused_and_the_typed_values_kept(browser, services, alice, content,
                                                                                   filename):
    response = browser.post("/codes/new", data=create_form(logo=(io.BytesIO(content), filename)))
    page = text(response)
    assert response.status_code == 400
    assert re.search(r'id="logo-error">Logo must be a PNG, JPEG or WebP image', page)
    assert 'value="https://example.com/menu"' in page and 'value="Spring menu"' in page
    assert codes.list_codes(services.db, owner_id=alice)[1] == 0


def test_a_logo_the_server_cannot_store_is_refused_next_to_the_field_and_the_typed_values_kept(browser, services,
                                                                                              alice, caplog):
    services.logo_dir.parent.mkdir(parents=True, exist_ok=True)
    services.logo_dir.write_text("a file where the folder should be")  # what a folder the app cannot write does
    response = browser.post("/codes/new", data=create_form(logo=(io.BytesIO(png_bytes()), "logo.png")))
    page = text(response)
    assert response.status_code == 400
    assert re.search(r'id="logo-error">The logo could not be stored on the server \(the error log says why\)', page)
    assert 'value="https://example.com/menu"' in page and 'value="Spring menu"' in page
    assert codes.list_codes(services.db, owner_id=alice)[1] == 0
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == [
        f"could not store an uploaded logo in {services.logo_dir}"]


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
def test_jpeg_and_webp_logos_are_accepted(browser, services, alice, kind):
    response = browser.post("/codes/new", data=create_form(logo=(io.BytesIO(image_bytes(kind)), "logo.bin")))
    assert response.status_code == 302
    assert codes.list_codes(services.db, owner_id=alice)[0][0].logo


def test_an_oversized_logo_is_refused_next_to_the_field(tmp_path, db):
    app = make_app(tmp_path / "small", MAX_LOGO_BYTES=4096)
    app.config["WTF_CSRF_ENABLED"] = False
    gen_user(app.extensions["qrtrack"].db, "alice")
    client = app.test_client()
    log_in(client)
    big = png_bytes((200, 200), noise=True)
    assert 4096 < len(big) < 4096 + 256 * 1024
    response = client.post("/codes/new", data=create_form(logo=(io.BytesIO(big), "big.png")))
    assert response.status_code == 400
    assert re.search(r'id="logo-error">Logo must be at most 4 kB', text(response))
    assert 'value="Spring menu"' in text(response)
    too_big_to_read = client.post("/codes/new", data=create_form(logo=(io.BytesIO(b"x" * 300_000), "huge.png")))
    assert too_big_to_read.status_code == 400
    assert "larger than the 4 kB logo limit" in text(too_big_to_read)
    code = gen_code(app.extensions["qrtrack"].db, 1, label="Kept")
    too_big_edit = client.post(f"/codes/{code.uuid}/edit", data={"logo": (io.BytesIO(b"x" * 300_000), "huge.png")})
    assert too_big_edit.status_code == 400 and 'value="Kept"' in text(too_big_edit)
    app.extensions["qrtrack"].db.dispose()


def test_an_upload_past_the_request_limit_gets_a_readable_page_when_the_csrf_check_reads_it_first(tmp_path):
    """With CSRF checked, as always outside this file's tests, the check reads the form before the page can say
    'too large' beside the field: a browser without JavaScript got werkzeug's 'exceeds the capacity limit'."""
    app = make_app(tmp_path / "small", MAX_LOGO_BYTES=4096)
    gen_user(app.extensions["qrtrack"].db, "alice")
    client = app.test_client()
    log_in(client)
    token = csrf_token(client, "/codes/new")
    response = client.post("/codes/new", data=create_form(logo=(io.BytesIO(b"x" * 300_000), "huge.png"),
                                                          csrf_token=token))
    assert response.status_code == 413 and response.mimetype == "text/html"
    assert "That upload is larger than the 4 kB logo limit, so nothing was saved." in text(response)
    assert codes.list_codes(app.extensions["qrtrack"].db, owner_id=1)[1] == 0
    app.extensions["qrtrack"].db.dispose()


def test_a_destination_pasted_with_spaces_around_it_is_saved_without_them(browser, services, alice):
    response = browser.post("/codes/new", data=create_form(destination=" https://example.com/menu \n"))
    assert response.status_code == 302
    assert codes.list_codes(services.db, owner_id=alice)[0][0].destination == "https://example.com/menu"


def test_a_bad_destination_is_shown_next_to_its_field_with_the_typed_values(browser, services, alice):
    response = browser.post("/codes/new", data=create_form(destination="example.com/menu", label="Flyer"))
    page = text(response)
    assert response.status_code == 400
    assert re.search(r'id="destination-error">Destination must be an absolute http or https URL', page)
    assert 'value="example.com/menu"' in page and 'value="Flyer"' in page
    assert 'id="label-error"' not in page


def test_an_accepted_logo_is_kept_when_another_field_is_refused(browser, services, alice):
    refused = browser.post("/codes/new", data=create_form(destination="", logo=(io.BytesIO(png_bytes()), "l.png")))
    kept = re.search(r'name="kept_logo" value="([0-9a-f]{64})"', text(refused))
    assert refused.status_code == 400 and kept
    assert browser.post("/codes/new", data=create_form(kept_logo=kept.group(1))).status_code == 302
    assert codes.list_codes(services.db, owner_id=alice)[0][0].logo == kept.group(1)


def test_a_kept_logo_must_name_a_stored_logo(browser, services, alice):
    browser.post("/codes/new", data=create_form(kept_logo="../../etc/passwd"))
    browser.post("/codes/new", data=create_form(kept_logo="a" * 64))
    assert [code.logo for code in codes.list_codes(services.db, owner_id=alice)[0]] == [None, None]


# --- edit, pause, delete -------------------------------------------------------------------------

IMAGE_PATHS = ("/img/{slug}.png", "/img/{slug}.png?size=96", "/img/{slug}.svg")


def rendered_images(browser, slug: str) -> list[bytes]:
    """The code's PNG at two sizes and its SVG, as /img/ serves them (rendering them into the cache)."""
    responses = [browser.get(path.format(slug=slug)) for path in IMAGE_PATHS]
    assert [response.status_code for response in responses] == [200] * len(IMAGE_PATHS)
    return [response.data for response in responses]


def test_editing_destination_and_label_changes_the_code_and_keeps_its_cached_images(browser, services, alice):
    code = gen_code(services.db, alice, label="Old")
    images = rendered_images(browser, code.slug)
    cached = {name: (Path(services.images.directory) / name).stat().st_mtime_ns
              for name in cached_images(services, code.slug)}
    assert len(cached) == len(IMAGE_PATHS)
    form = text(browser.get(f"/codes/{code.uuid}/edit"))
    assert 'value="https://example.com/"' in form and 'value="Old"' in form
    response = browser.post(f"/codes/{code.uuid}/edit", data={"type": "url", "destination": "https://new.example/",
                                                              "label": "New"})
    assert response.status_code == 302 and response.headers["Location"] == f"/codes/{code.uuid}"
    changed = codes.get_code(services.db, owner_id=alice, uuid=code.uuid)
    assert (changed.destination, changed.label, changed.slug) == ("https://new.example/", "New", code.slug)
    # The image encodes the short URL, not the destination: the cached files stand, not rendered again.
    assert {name: (Path(services.images.directory) / name).stat().st_mtime_ns
            for name in cached_images(services, code.slug)} == cached
    assert rendered_images(browser, code.slug) == images
    assert "Changes saved" in text(browser.get(f"/codes/{code.uuid}"))


def test_pointing_a_code_at_its_own_short_url_is_refused_on_the_form(browser, services, alice):
    code = gen_code(services.db, alice)
    response = browser.post(f"/codes/{code.uuid}/edit", data={"type": "url", "label": "",
                                                              "destination": f"http://localhost/p/{code.slug}"})
    assert response.status_code == 400
    assert "Destination leads back to this code&#39;s own short URL" in text(response)
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid).destination == code.destination


def test_changing_the_logo_discards_the_cached_images(browser, services, alice):
    code = gen_code(services.db, alice)
    before = rendered_images(browser, code.slug)
    old_files = cached_images(services, code.slug)
    browser.post(f"/codes/{code.uuid}/edit", data={"destination": code.destination, "label": "",
                                                   "logo": (io.BytesIO(png_bytes()), "logo.png")})
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid).logo
    assert cached_images(services, code.slug) == {}
    after = rendered_images(browser, code.slug)
    assert all(new != old for new, old in zip(after, before, strict=True))
    assert set(cached_images(services, code.slug)).isdisjoint(old_files)


def edit_form_fields(page: str) -> dict[str, str]:
    """The values the edit form would post as it was rendered: every input with a value, unescaped."""
    inputs = re.findall(r'<input type="(?:hidden|text|url)"[^>]* name="(\w+)" value="([^"]*)"', page)
    return {name: html.unescape(value) for name, value in inputs if name != "csrf_token"}


def test_an_edit_applies_only_the_fields_changed_in_the_form_keeping_a_change_made_meanwhile(browser, services,
                                                                                             alice):
    code = gen_code(services.db, alice, destination="https://example.com/old", label="Menu & drinks")
    fields = edit_form_fields(text(browser.get(f"/codes/{code.uuid}/edit")))
    assert (fields["destination"], fields["label"]) == ("https://example.com/old", "Menu & drinks")
    codes.update_code(services.db, owner_id=alice, uuid=code.uuid, logo_dir=services.logo_dir, images=services.images,
                      changes=codes.CodeChanges(destination="https://example.com/from-the-api"))
    response = browser.post(f"/codes/{code.uuid}/edit", data={**fields, "label": "Summer menu"})
    assert response.status_code == 302
    saved = codes.get_code(services.db, owner_id=alice, uuid=code.uuid)
    assert (saved.destination, saved.label) == ("https://example.com/from-the-api", "Summer menu")
    page = text(browser.get(f"/codes/{code.uuid}"))
    assert "Changes saved" in page
    assert "The destination was changed elsewhere since you opened the form" in page and "that change is kept" in page


def test_a_field_changed_both_elsewhere_and_in_the_form_takes_the_forms_value_and_says_so(browser, services, alice):
    code = gen_code(services.db, alice, label="Menu")
    fields = edit_form_fields(text(browser.get(f"/codes/{code.uuid}/edit")))
    codes.update_code(services.db, owner_id=alice, uuid=code.uuid, logo_dir=services.logo_dir, images=services.images,
                      changes=codes.CodeChanges(label="From the API"))
    browser.post(f"/codes/{code.uuid}/edit", data={**fields, "label": "From the form"})
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid).label == "From the form"
    page = text(browser.get(f"/codes/{code.uuid}"))
    assert "The label was changed elsewhere since you opened the form; yours replaced that change." in page


def test_an_edit_with_nothing_changed_elsewhere_says_only_that_it_was_saved(browser, services, alice):
    code = gen_code(services.db, alice, label="Menu")
    fields = edit_form_fields(text(browser.get(f"/codes/{code.uuid}/edit")))
    browser.post(f"/codes/{code.uuid}/edit", data={**fields, "destination": "https://example.com/new"})
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid).destination == "https://example.com/new"
    page = text(browser.get(f"/codes/{code.uuid}"))
    assert "Changes saved" in page and "elsewhere" not in page


def test_a_refused_edit_keeps_the_values_the_form_was_opened_with(browser, services, alice):
    code = gen_code(services.db, alice, label="Menu")
    fields = edit_form_fields(text(browser.get(f"/codes/{code.uuid}/edit")))
    codes.update_code(services.db, owner_id=alice, uuid=code.uuid, logo_dir=services.logo_dir, images=services.images,
                      changes=codes.CodeChanges(destination="https://example.com/from-the-api"))
    refused = browser.post(f"/codes/{code.uuid}/edit", data={**fields, "destination": "nope", "label": "New"})
    assert refused.status_code == 400
    again = edit_form_fields(text(refused))
    assert again["original_destination"] == "https://example.com/"
    browser.post(f"/codes/{code.uuid}/edit", data={**again, "destination": "https://example.com/"})
    saved = codes.get_code(services.db, owner_id=alice, uuid=code.uuid)
    assert (saved.destination, saved.label) == ("https://example.com/from-the-api", "New")


def test_an_edit_refused_keeps_what_was_typed(browser, services, alice):
    code = gen_code(services.db, alice, label="Old")
    response = browser.post(f"/codes/{code.uuid}/edit", data={"destination": "ftp://files.example/", "label": "Newer"})
    assert response.status_code == 400
    assert 'value="ftp://files.example/"' in text(response) and 'value="Newer"' in text(response)
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid).destination == "https://example.com/"


def test_a_logo_can_be_replaced_and_removed(browser, services, alice):
    code = gen_code(services.db, alice)
    edit = f"/codes/{code.uuid}/edit"
    fields = {"destination": code.destination, "label": ""}
    browser.post(edit, data={**fields, "logo": (io.BytesIO(png_bytes()), "a.png")})
    first = codes.get_code(services.db, owner_id=alice, uuid=code.uuid).logo
    browser.post(edit, data={**fields, "logo": (io.BytesIO(image_bytes("JPEG")), "b.jpg"), "remove_logo": "1"})
    second = codes.get_code(services.db, owner_id=alice, uuid=code.uuid).logo
    assert first and second and first != second
    assert not codes.logo_path(services.logo_dir, first).exists()  # no code uses the replaced logo any more
    browser.get(f"/img/{code.slug}.png")
    browser.post(edit, data={**fields, "remove_logo": "1"})
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid).logo is None
    assert cached_images(services, code.slug) == {}
    assert not codes.logo_path(services.logo_dir, second).exists()


def test_deleting_a_code_deletes_its_logo_file_unless_another_code_uses_it(browser, services, alice):
    browser.post("/codes/new", data=create_form(logo=(io.BytesIO(png_bytes()), "logo.png")))
    browser.post("/codes/new", data=create_form(logo=(io.BytesIO(png_bytes()), "logo.png")))
    first, second = codes.list_codes(services.db, owner_id=alice)[0]
    assert first.logo == second.logo
    for code, is_kept in ((first, True), (second, False)):
        browser.post(f"/codes/{code.uuid}/delete", data={"confirm": code.slug})
        assert codes.logo_path(services.logo_dir, code.logo).exists() is is_kept


def image_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/img/[^"]+)"', page)


def test_the_pages_qr_image_urls_change_with_the_logo_so_no_browser_shows_a_cached_old_one(browser, services, alice):
    code = gen_code(services.db, alice, label="Menu")
    pages = ("/codes", f"/codes/{code.uuid}", f"/codes/{code.uuid}/edit", f"/codes/{code.uuid}/delete")
    before = {path: image_urls(text(browser.get(path))) for path in pages}
    assert all(before.values())
    assert before == {path: image_urls(text(browser.get(path))) for path in pages}  # stable while nothing changes
    browser.post(f"/codes/{code.uuid}/edit", data={"destination": code.destination, "label": "Menu",
                                                   "logo": (io.BytesIO(png_bytes()), "logo.png")})
    after = {path: image_urls(text(browser.get(path))) for path in pages}
    for path in pages:
        assert len(after[path]) == len(before[path]) and set(after[path]).isdisjoint(before[path]), path
    for url in after[f"/codes/{code.uuid}"]:
        image = browser.get(url)
        parts = urlsplit(html.unescape(url))
        query = urlencode([(name, value) for name, value in parse_qsl(parts.query) if name != "v"])
        plain = browser.get(parts.path + (f"?{query}" if query else ""))
        assert image.status_code == 200 and image.data == plain.data, url
    # What the image encodes is the short URL, so a page served under another address names another image.
    elsewhere = image_urls(text(browser.get(f"/codes/{code.uuid}", base_url="https://qr.example.org")))
    assert set(elsewhere).isdisjoint(after[f"/codes/{code.uuid}"])


def test_pause_and_resume(browser, services, alice):
    code = gen_code(services.db, alice)
    response = browser.post(f"/codes/{code.uuid}/status", data={"status": "paused"})
    assert response.status_code == 302
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid).status == "paused"
    page = text(browser.get(f"/codes/{code.uuid}"))
    assert "Paused. Anyone scanning it" in page and ">Resume</button>" in page
    assert browser.get(f"/p/{code.slug}").status_code == 410
    browser.post(f"/codes/{code.uuid}/status", data={"status": "active"})
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid).status == "active"
    assert browser.get(f"/codes/{code.uuid}/status").status_code == 405


def test_archive_from_the_code_page_and_the_list_leaves_archived_codes_out_unless_asked(browser, services, alice):
    """A browser probe found archiving only in the API, and the list's 'All statuses' showing archived codes
    the API leaves out."""
    kept, shelved = gen_code(services.db, alice, label="Kept"), gen_code(services.db, alice, label="Shelved")
    assert 'name="status" value="archived">Archive</button>' in text(browser.get(f"/codes/{shelved.uuid}"))
    assert browser.post(f"/codes/{shelved.uuid}/status", data={"status": "archived"}).status_code == 302
    assert codes.get_code(services.db, owner_id=alice, uuid=shelved.uuid).status == "archived"
    page = text(browser.get(f"/codes/{shelved.uuid}"))
    assert "Archived. Scans see a notice" in page and ">Resume</button>" in page and ">Archive</button>" not in page
    assert browser.get(f"/p/{shelved.slug}").status_code == 410

    def listed(query: str = "") -> list[str]:
        return re.findall(r'class="code-name"[^>]*>([^<]+)<', text(browser.get(f"/codes{query}")))

    assert "Kept" in listed() and "Shelved" not in listed()
    assert "Shelved" in listed("?status=archived") and "Kept" not in listed("?status=archived")
    assert {"Kept", "Shelved"} <= set(listed("?status=all"))
    assert '<option value="all">All, archived too</option>' in text(browser.get("/codes"))
    browser.post(f"/codes/{kept.uuid}/status", data={"status": "archived"})
    only_archived = text(browser.get("/codes"))  # not the first-code welcome: the user has codes
    assert "Create your first QR code" not in only_archived and "Archived codes are left out" in only_archived
    browser.post(f"/codes/{shelved.uuid}/status", data={"status": "active"})
    assert codes.get_code(services.db, owner_id=alice, uuid=shelved.uuid).status == "active"


def test_delete_asks_for_the_slug_and_only_a_post_deletes(browser, services, alice):
    code = gen_code(services.db, alice, label="Doomed")
    confirm = text(browser.get(f"/codes/{code.uuid}/delete"))
    assert f"Type <code class=\"confirm-slug\">{code.slug}</code> to confirm" in confirm
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid)
    wrong = browser.post(f"/codes/{code.uuid}/delete", data={"confirm": "yes"})
    assert wrong.status_code == 400 and f"Type {code.slug} exactly" in text(wrong)
    assert codes.get_code(services.db, owner_id=alice, uuid=code.uuid)
    rendered_images(browser, code.slug)
    assert len(cached_images(services, code.slug)) == len(IMAGE_PATHS)
    done = browser.post(f"/codes/{code.uuid}/delete", data={"confirm": code.slug})
    assert done.status_code == 302 and done.headers["Location"] == "/codes"
    assert codes.list_codes(services.db, owner_id=alice)[1] == 0
    assert cached_images(services, code.slug) == {}
    assert "Deleted Doomed and its scan history" in text(browser.get("/codes"))
    assert [browser.get(path.format(slug=code.slug)).status_code for path in IMAGE_PATHS] == [404] * len(IMAGE_PATHS)


def test_html_in_a_label_is_shown_as_text_everywhere(browser, db, alice):
    label = '<script>alert("x")</script><b>bold</b>'
    code = gen_code(db, alice, label=label)
    add_scans(db, [scan_row(code.id, city="<i>Paris</i>", referrer_host="<img src=x>")])
    for path in ("/codes", f"/codes/{code.uuid}", f"/codes/{code.uuid}/edit", f"/codes/{code.uuid}/delete",
                 "/analytics"):
        page = text(browser.get(path))
        assert "<script>alert" not in page and "<b>bold" not in page and "<i>Paris" not in page, path
        assert "&lt;b&gt;bold&lt;/b&gt;" in page, path


# --- detail, analytics, CSV ----------------------------------------------------------------------

def test_the_detail_page_offers_downloads_and_the_short_url(browser, db, alice):
    code = gen_code(db, alice, label="Menu")
    page = text(browser.get(f"/codes/{code.uuid}"))
    for size in (256, 512, 1024, 2048):
        url = rf"/img/{code.slug}\.png\?size={size}&amp;v=[0-9a-f]{{16}}"
        assert re.search(rf'href="{url}" download="qr-{code.slug}-{size}.png"', page)
    assert re.search(rf'href="/img/{code.slug}\.svg\?v=[0-9a-f]{{16}}" download="qr-{code.slug}.svg"', page)
    assert f'<code id="short-url-{code.slug}" class="copy-value">http://localhost/p/{code.slug}</code>' in page
    assert browser.get(f"/img/{code.slug}.png?size=1024").status_code == 200


def test_the_detail_page_shows_the_codes_analytics_with_bots_on_request(browser, db, alice):
    code = gen_code(db, alice)
    other = gen_code(db, alice)
    add_scans(db, [scan_row(code.id, visitor="a"), scan_row(code.id, visitor="a"), scan_row(code.id, visitor="b"),
                   scan_row(code.id, is_bot=True, device="Bot", visitor="bot"), scan_row(other.id)])
    page = text(browser.get(f"/codes/{code.uuid}"))
    assert stat(page, "Scans") == "3" and stat(page, "Unique scans") == "2" and stat(page, "Bot scans") == "1"
    assert 'data-country="FR"' in page and "Paris" in page and "Mobile Safari 17.4" in page
    assert "Left out of these figures" in page
    with_bots = text(browser.get(f"/codes/{code.uuid}?bots=1&granularity=week"))
    assert stat(with_bots, "Scans") == "4" and stat(with_bots, "Unique scans") == "3"
    assert "Scans by week" in with_bots
    # A bot whose device reads Bot is not badged Bot again (a probe saw "Bot Bot"); one that looks like a phone is.
    assert '<td class="latest-what latest-first">Bot</td>' in with_bots and "badge-bot" not in with_bots
    add_scans(db, [scan_row(code.id, is_bot=True, device="iPhone", visitor="preview")])
    assert 'iPhone <span class="badge badge-bot">Bot</span>' in text(browser.get(f"/codes/{code.uuid}?bots=1"))


def test_the_search_box_stops_at_the_length_the_list_searches_for(browser, db, alice):
    """A probe typed 5,000 characters: the query string passed what gunicorn reads, which answered a bare 414."""
    gen_code(db, alice)
    page = text(browser.get("/codes"))
    assert re.search(r'<input type="search" id="q" name="q"[^>]* maxlength="200">', page)


def stat(page: str, label: str) -> str:
    match = re.search(rf'<div class="stat-label">{label}</div>\s*<div class="stat-value">([^<]*)</div>', page)
    assert match, label
    return match.group(1)


def test_the_period_can_be_chosen_and_a_bad_one_falls_back_to_30_days(browser, db, alice):
    code = gen_code(db, alice)
    add_scans(db, [scan_row(code.id, ts=1_700_000_000)])  # 2023-11-14
    assert stat(text(browser.get(f"/codes/{code.uuid}")), "Scans") == "0"
    page = text(browser.get(f"/codes/{code.uuid}?from=2023-11-01&to=2023-11-30&granularity=month"))
    assert stat(page, "Scans") == "1" and 'value="2023-11-01"' in page
    bad = text(browser.get(f"/codes/{code.uuid}?from=2023-12-01&to=2023-11-01"))
    assert "The start date is after the end date. Showing the last 30 days." in bad
    assert "Dates and times are UTC" in bad


def test_the_csv_link_leaves_bots_out_exactly_when_the_page_does(browser, db, alice):
    """A browser probe exported a page showing 6 scans, bots left out, and got 10 rows, 4 of them bots."""
    code = gen_code(db, alice)
    today = analytics.today_utc()
    add_scans(db, [scan_row(code.id, ts=now_epoch() - 60), scan_row(code.id, ts=now_epoch() - 30, is_bot=True)])
    for query, rows in (("", 1), ("&bots=1", 2)):
        page = text(browser.get(f"/codes/{code.uuid}?from={today - timedelta(days=6)}&to={today}{query}"))
        export_url = html.unescape(re.search(r'href="([^"]*/scans\.csv[^"]*)"', page)[1])
        assert len(list(csv.reader(io.StringIO(text(browser.get(export_url)))))) == 1 + rows, (query, export_url)


def test_the_csv_export_streams_the_scan_log_of_the_period(browser, db, alice):
    code = gen_code(db, alice)
    add_scans(db, [scan_row(code.id, ts=1_700_000_000, city="=cmd|' /C calc'!A0", referrer_host="news.example"),
                   scan_row(code.id, ts=1_700_000_060, is_bot=True), scan_row(code.id, ts=1_600_000_000)])
    response = browser.get(f"/codes/{code.uuid}/scans.csv?from=2023-11-01&to=2023-11-30&bots=1")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="qrtrack-{code.slug}-scans-2023-11-01-to-2023-11-30-with-bots.csv"')
    header = ["timestamp", "country", "city", "device", "os", "browser", "is_bot", "referrer_host"]
    human = ["2023-11-14T22:13:20Z", "FR", "'=cmd|' /C calc'!A0", "iPhone", "iOS 17.4", "Mobile Safari 17.4", "false",
             "news.example"]
    bot = ["2023-11-14T22:14:20Z", "FR", "Paris", "iPhone", "iOS 17.4", "Mobile Safari 17.4", "true", ""]
    assert list(csv.reader(io.StringIO(text(response)))) == [header, human, bot]
    without_bots = browser.get(f"/codes/{code.uuid}/scans.csv?from=2023-11-01&to=2023-11-30")
    assert without_bots.headers["Content-Disposition"].endswith('-2023-11-30.csv"')
    assert list(csv.reader(io.StringIO(text(without_bots)))) == [header, human]
    assert f'href="/codes/{code.uuid}/scans.csv?from=' in text(browser.get(f"/codes/{code.uuid}"))
    assert browser.get(f"/codes/{code.uuid}/scans.csv?from=someday").status_code == 400


def test_the_overview_adds_up_all_the_users_codes_only(browser, db, alice):
    first = gen_code(db, alice, label="First")
    second = gen_code(db, alice, label="Second")
    bobs = gen_code(db, gen_user(db, "bob"), label="Bobs")
    add_scans(db, [scan_row(first.id, visitor="a"), scan_row(first.id, visitor="b"), scan_row(second.id, visitor="a"),
                   scan_row(bobs.id)])
    page = text(browser.get("/analytics"))
    assert stat(page, "Scans") == "3" and stat(page, "Unique scans") == "3" and stat(page, "Codes scanned") == "2"
    assert "First" in page and "Second" in page and "Bobs" not in page
    assert page.index("First") < page.index("Second")


def test_the_overview_and_an_unscanned_code_say_there_is_nothing_yet(browser, db, alice):
    code = gen_code(db, alice)
    for path in ("/analytics", f"/codes/{code.uuid}"):
        page = text(browser.get(path))
        assert "No scans in this period" in page and "No scans in this period yet." in page


def test_a_page_says_so_while_a_big_backlog_of_scans_is_still_being_added_up(browser, db, alice, monkeypatch):
    monkeypatch.setattr(rollups, "ROLLUP_BATCH", 2)
    monkeypatch.setattr(analytics, "REFRESH_BUDGET_SECONDS", 0)
    monkeypatch.setattr(analytics, "MAX_TAIL_SCANS", 3)
    code = gen_code(db, alice)
    add_scans(db, [scan_row(code.id, visitor=str(index)) for index in range(8)])
    page = text(browser.get(f"/codes/{code.uuid}"))
    assert "still adding up 6 recent scans" in page and stat(page, "Scans") == "2"
    browser.get("/analytics")
    assert "still adding up" not in text(browser.get(f"/codes/{code.uuid}"))


def test_a_refusal_only_the_service_knows_still_shows_beside_its_field(browser, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValidationError("label is taken by a rule the form does not know", field="label")

    monkeypatch.setattr(codes, "create_code", refuse)
    response = browser.post("/codes/new", data=create_form())
    assert response.status_code == 400
    assert 'id="label-error">Label is taken by a rule the form does not know.' in text(response)


@pytest.mark.parametrize(("tallest", "ticks"), [
    (0, [4, 3, 2, 1, 0]), (3, [4, 3, 2, 1, 0]), (9, [20, 15, 10, 5, 0]), (830, [1000, 750, 500, 250, 0]),
    (1001, [2000, 1500, 1000, 500, 0]),
])
def test_the_chart_scale_is_round_and_the_tallest_bar_fills_about_half_or_more(tallest, ticks):
    from datetime import date

    from qrtrack.web.dashboard.charts import scans_chart

    series = [analytics.Bucket(start=date(2026, 4, day), scans=scans, unique_scans=scans // 2)
              for day, scans in ((1, tallest), (2, tallest // 2))]
    report = analytics.Report(period=analytics.Period(date(2026, 4, 1), date(2026, 4, 2)), granularity="day",
                              include_bots=False, scans=tallest, unique_scans=0, bot_scans=0, series=series,
                              breakdowns={}, latest=[])
    chart = scans_chart(report)
    assert chart.tick_labels == ticks
    assert chart.is_empty == (tallest == 0)
    if tallest >= 10:
        assert chart.bars[0].height >= chart.height / 2 and chart.bars[0].y + chart.bars[0].height == chart.height
    assert "Wed 1 Apr 2026" in chart.bars[0].title
