"""Codes service: slugs, destination and label validation, create/update/delete, owner scoping."""
from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from qrtrack import codes, links
from qrtrack.errors import NotFound, ValidationError
from qrtrack.images.cache import ImageCache, cache_key, image_fingerprint
from qrtrack.store import codes as code_store

from .conftest import gen_code, gen_user

pytestmark = pytest.mark.postgresql


@pytest.fixture
def images(services):
    """The app's image cache, which codes.update_code and delete_code keep in step with the codes."""
    return services.images


def test_slugs_are_short_url_safe_and_random():
    slugs = {codes.new_slug() for _ in range(2000)}
    assert len(slugs) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9]{6,8}", slug) for slug in slugs)


def test_slug_collision_is_retried(db, alice, monkeypatch):
    first = gen_code(db, alice)
    candidates = iter([first.slug, first.slug, "Fresh23"])
    monkeypatch.setattr(codes, "new_slug", lambda: next(candidates))
    assert gen_code(db, alice).slug == "Fresh23"


@pytest.mark.parametrize("destination", [
    "https://example.com", "http://example.com/a?b=c#d", "https://xn--bcher-kva.example/ü", "HTTPS://EXAMPLE.COM/x",
    "https://example.com:8443/path", "https://" + "a" * 2000 + ".com", "https://faß.de/", "https://i❤.ws/",
    "https://[2001:db8::1]:8443/", "https://[::ffff:192.0.2.1]/", "https://example.com./",
])
def test_valid_destinations_are_accepted(destination):
    assert codes.validate_destination(destination) == destination


@pytest.mark.parametrize("destination", [
    None, "", "   ", 42, "javascript:alert(1)", "data:text/html,hi", "/relative/path", "example.com",
    "ftp://example.com/file", "https://", "http:///nohost", "https://exa mple.com", "https://example.com:99999/",
    "https://example.com/\nx", "https://" + "a" * 2040 + ".com", "mailto:a@example.com",
    "https://a..b/", "https://./", "https://xn--/", "https://[::1]x/", "https://[v1.x]/", "https://[fe80::1%25eth0]/",
    "https://exa<mple.com/",
])
def test_invalid_destinations_are_refused(destination):
    with pytest.raises(ValidationError) as caught:
        codes.validate_destination(destination)
    assert caught.value.code == "invalid_destination" and caught.value.field == "destination"


def test_labels_are_bounded_and_stored_verbatim_apart_from_whitespace():
    assert codes.validate_label("  <b>Summer</b>   promo ") == "<b>Summer</b> promo"
    assert codes.validate_label(None) == ""
    with pytest.raises(ValidationError):
        codes.validate_label("x" * 201)
    with pytest.raises(ValidationError):
        codes.validate_label(["list"])


def test_only_url_type_is_offered():
    assert codes.validate_type(None) == "url"
    with pytest.raises(ValidationError, match="type"):
        codes.validate_type("vcard")


def test_create_code_gives_uuid4_slug_and_timestamps(services, db, alice):
    code = codes.create_code(db, owner_id=alice, destination="https://example.com/a", label="A",
                             logo_dir=services.logo_dir)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", code.uuid)
    assert code.status == "active" and code.scan_count == 0 and code.created_at == code.updated_at


@pytest.mark.parametrize("status", codes.STATUSES)
def test_create_code_takes_a_status(services, db, alice, status):
    code = codes.create_code(db, owner_id=alice, destination="https://example.com/", status=status,
                             logo_dir=services.logo_dir)
    assert code.status == status


@pytest.mark.parametrize("status", ["deleted", "Paused", None, 1])
def test_create_code_refuses_a_status_update_refuses_too(services, db, alice, status):
    with pytest.raises(ValidationError) as refused:
        codes.create_code(db, owner_id=alice, destination="https://example.com/", status=status,
                          logo_dir=services.logo_dir)
    assert (refused.value.code, refused.value.field) == ("invalid_status", "status")
    assert codes.list_codes(db, owner_id=alice)[1] == 0
    if status is not None:  # None in CodeChanges means "leave the status as it is"
        code = gen_code(db, alice)
        with pytest.raises(ValidationError) as refused_update:
            codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(status=status),
                              logo_dir=services.logo_dir, images=services.images)
        assert (refused_update.value.code, refused_update.value.field) == ("invalid_status", "status")


def test_update_changes_only_what_is_given(services, db, alice):
    code = gen_code(db, alice, label="keep me")
    updated = codes.update_code(db, owner_id=alice, uuid=code.uuid, logo_dir=services.logo_dir, images=services.images,
                                changes=codes.CodeChanges(destination="https://example.org/new"))
    assert updated.destination == "https://example.org/new" and updated.label == "keep me"
    paused = codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(status="paused"),
                               logo_dir=services.logo_dir, images=services.images)
    assert paused.status == "paused"
    with pytest.raises(ValidationError):
        codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(status="deleted"),
                          logo_dir=services.logo_dir, images=services.images)


def test_a_destination_leading_back_to_the_code_is_refused_and_changes_nothing(services, db, alice):
    """A browser probe saved a code pointing at its own short URL: each visit went round 20 times, each counted."""
    site = "https://qr.example.com"
    first, second, third = (gen_code(db, alice, destination=f"https://example.com/{n}") for n in range(3))

    def point(code, destination):
        return codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(destination=destination),
                                 logo_dir=services.logo_dir, images=services.images, site_base_url=site)

    for loop in (links.short_url(site, first.slug), f"http://QR.example.com/p/{first.slug}?from=poster"):
        with pytest.raises(ValidationError, match="leads back to this code's own short URL") as refused:
            point(first, loop)
        assert (refused.value.code, refused.value.field) == ("invalid_destination", "destination")
    point(second, links.short_url(site, first.slug))
    point(third, links.short_url(site, second.slug))
    with pytest.raises(ValidationError, match="leads back"):
        point(first, links.short_url(site, third.slug))  # first -> third -> second -> first
    assert codes.get_code(db, owner_id=alice, uuid=first.uuid).destination == "https://example.com/0"
    assert point(first, links.short_url("https://elsewhere.example", first.slug)).destination.startswith(
        "https://elsewhere.example")  # another site's short URL with the same slug is no loop


def test_a_chain_of_codes_that_loops_among_others_does_not_stop_an_update(services, db, alice):
    site = "https://qr.example.com"
    first, second, third = (gen_code(db, alice) for _ in range(3))
    for code, target in ((second, third), (third, second)):  # a loop made before loops were refused
        with db.write() as conn:
            code_store.update_code(conn, code.id, {"destination": links.short_url(site, target.slug)})
    updated = codes.update_code(db, owner_id=alice, uuid=first.uuid, logo_dir=services.logo_dir,
                                images=services.images, site_base_url=site,
                                changes=codes.CodeChanges(destination=links.short_url(site, second.slug)))
    assert updated.destination == links.short_url(site, second.slug)


def test_other_users_code_is_not_found_like_an_unknown_one(services, db, alice):
    bob = gen_user(db, "bob")
    code = gen_code(db, alice)
    for uuid in (code.uuid, "00000000-0000-4000-8000-000000000000", "not-a-uuid", None):
        with pytest.raises(NotFound):
            codes.get_code(db, owner_id=bob, uuid=uuid)
    with pytest.raises(NotFound):
        codes.delete_code(db, owner_id=bob, uuid=code.uuid, logo_dir=services.logo_dir, images=services.images)
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).id == code.id


def test_list_is_newest_first_searchable_and_paged(db, alice):
    for index in range(5):
        gen_code(db, alice, destination=f"https://example.com/{index}", label=f"label {index}")
    rows, total = codes.list_codes(db, owner_id=alice, limit=2, offset=0)
    assert total == 5 and len(rows) == 2
    assert [row.label for row in rows] == ["label 4", "label 3"]
    rows, total = codes.list_codes(db, owner_id=alice, search="label 2")
    assert total == 1 and rows[0].label == "label 2"
    rows, total = codes.list_codes(db, owner_id=alice, search="100%_")
    assert total == 0


@pytest.mark.parametrize(("limit", "offset", "shown"), [
    (None, 0, 5), (10, 0, 5), (5, 0, 5), (2, 0, 2), (2, 4, 1), (2, 5, 0), (2, 50, 0), (None, 3, 2), (None, 9, 0),
])
@pytest.mark.parametrize("list_codes", [codes.list_codes, codes.list_code_summaries])
def test_list_total_counts_every_match_whichever_page_is_asked_for(db, alice, list_codes, limit, offset, shown):
    for index in range(5):
        gen_code(db, alice, destination=f"https://example.com/{index}")
    gen_code(db, gen_user(db, "bob"))
    rows, total = list_codes(db, owner_id=alice, limit=limit, offset=offset)
    assert (len(rows), total) == (shown, 5)


def test_a_last_page_needs_no_count_query(db, alice, monkeypatch):
    gen_code(db, alice)
    monkeypatch.setattr(code_store, "count_codes", None)
    assert codes.list_code_summaries(db, owner_id=alice)[1] == 1
    assert codes.list_codes(db, owner_id=alice, limit=5)[1] == 1


def test_delete_removes_the_code(services, db, alice):
    code = gen_code(db, alice)
    codes.delete_code(db, owner_id=alice, uuid=code.uuid, logo_dir=services.logo_dir, images=services.images)
    with pytest.raises(NotFound):
        codes.get_code(db, owner_id=alice, uuid=code.uuid)


def test_logos_are_stored_once_by_content(tmp_path):
    first = codes.save_logo(tmp_path, b"png bytes")
    second = codes.save_logo(tmp_path, b"png bytes")
    assert first == second and codes.logo_path(tmp_path, first).read_bytes() == b"png bytes"
    assert [path.name for path in tmp_path.iterdir()] == [f"{first}.png"]


# --- logo files ------------------------------------------------------------------------------------

def with_logo(db, owner_id: int, logo_dir, content: bytes = b"logo A"):
    logo = codes.save_logo(logo_dir, content)
    return codes.create_code(db, owner_id=owner_id, destination="https://example.com/", logo=logo,
                             logo_dir=logo_dir)


def stored_logos(logo_dir) -> set[str]:
    return {path.stem for path in logo_dir.glob("*.png")}


def test_unused_logo_files_older_than_the_grace_period_are_removed(db, alice, tmp_path):
    used = with_logo(db, alice, tmp_path, b"in use").logo
    old_unused, new_unused = codes.save_logo(tmp_path, b"old"), codes.save_logo(tmp_path, b"new")
    two_days_ago = time.time() - 2 * 86400
    for logo in (used, old_unused):
        os.utime(codes.logo_path(tmp_path, logo), (two_days_ago, two_days_ago))
    assert codes.remove_unused_logos(db, tmp_path) == 1
    assert stored_logos(tmp_path) == {used, new_unused}
    assert codes.remove_unused_logos(db, tmp_path, older_than_seconds=0) == 1
    assert stored_logos(tmp_path) == {used}
    assert codes.remove_unused_logos(db, tmp_path / "missing") == 0


def test_removing_unused_logos_spares_one_a_code_took_on_after_the_list_was_read(db, alice, tmp_path, monkeypatch):
    """On PostgreSQL another transaction can attach an old unused logo between the list of used logos and the
    deletion; each file is checked again under its lock before it goes. The code is attached right after the
    list is read, in the same transaction, so this holds on SQLite too, whose writers never interleave."""
    code = gen_code(db, alice)
    logo = codes.save_logo(tmp_path, b"old, about to be used")
    two_days_ago = time.time() - 2 * 86400
    os.utime(codes.logo_path(tmp_path, logo), (two_days_ago, two_days_ago))
    list_used_logos = code_store.list_used_logos

    def listed_then_taken(conn):
        used = list_used_logos(conn)
        code_store.update_code(conn, code.id, {"logo": logo})
        return used

    monkeypatch.setattr(code_store, "list_used_logos", listed_then_taken)
    assert codes.remove_unused_logos(db, tmp_path) == 0
    assert stored_logos(tmp_path) == {logo}
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).logo == logo


def test_uploading_an_old_unused_logo_again_restarts_its_grace_period(db, tmp_path):
    logo = codes.save_logo(tmp_path, b"uploaded twice")
    two_days_ago = time.time() - 2 * 86400
    os.utime(codes.logo_path(tmp_path, logo), (two_days_ago, two_days_ago))
    assert codes.save_logo(tmp_path, b"uploaded twice") == logo
    assert codes.remove_unused_logos(db, tmp_path) == 0
    assert stored_logos(tmp_path) == {logo}


def test_replaced_logo_file_is_deleted(db, alice, tmp_path, images):
    code = with_logo(db, alice, tmp_path)
    new_logo = codes.save_logo(tmp_path, b"logo B")
    updated = codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(logo=new_logo),
                                logo_dir=tmp_path, images=images)
    assert updated.logo == new_logo and stored_logos(tmp_path) == {new_logo}


def test_removed_logo_file_is_deleted(db, alice, tmp_path, images):
    code = with_logo(db, alice, tmp_path)
    codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(remove_logo=True),
                      logo_dir=tmp_path, images=images)
    assert stored_logos(tmp_path) == set()


def test_deleted_codes_logo_file_is_deleted(db, alice, tmp_path, images):
    code = with_logo(db, alice, tmp_path)
    codes.delete_code(db, owner_id=alice, uuid=code.uuid, logo_dir=tmp_path, images=images)
    assert stored_logos(tmp_path) == set()


def test_other_changes_leave_the_logo_file(db, alice, tmp_path, images):
    code = with_logo(db, alice, tmp_path)
    codes.update_code(db, owner_id=alice, uuid=code.uuid, logo_dir=tmp_path, images=images,
                      changes=codes.CodeChanges(label="renamed", logo=code.logo))
    assert stored_logos(tmp_path) == {code.logo}


def test_shared_logo_file_stays_until_no_code_uses_it(db, alice, tmp_path, images):
    first, second = with_logo(db, alice, tmp_path), with_logo(db, gen_user(db, "bob"), tmp_path)
    third = with_logo(db, alice, tmp_path)
    assert first.logo == second.logo == third.logo
    codes.update_code(db, owner_id=alice, uuid=first.uuid, changes=codes.CodeChanges(remove_logo=True),
                      logo_dir=tmp_path, images=images)
    codes.delete_code(db, owner_id=alice, uuid=third.uuid, logo_dir=tmp_path, images=images)
    assert stored_logos(tmp_path) == {first.logo}  # bob's code still shows it
    codes.delete_code(db, owner_id=second.owner_id, uuid=second.uuid, logo_dir=tmp_path, images=images)
    assert stored_logos(tmp_path) == set()


def test_failed_change_keeps_the_logo_file(db, alice, tmp_path, monkeypatch, images):
    code = with_logo(db, alice, tmp_path)

    def failing_after(query):
        def run_then_fail(conn, *args):
            query(conn, *args)
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))  # before the commit
        return run_then_fail

    monkeypatch.setattr(code_store, "update_code", failing_after(code_store.update_code))
    monkeypatch.setattr(code_store, "delete_code", failing_after(code_store.delete_code))
    with pytest.raises(OperationalError):
        codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(remove_logo=True),
                          logo_dir=tmp_path, images=images)
    with pytest.raises(OperationalError):
        codes.delete_code(db, owner_id=alice, uuid=code.uuid, logo_dir=tmp_path, images=images)
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).logo == code.logo
    assert stored_logos(tmp_path) == {code.logo}


def test_a_logo_taken_on_as_its_last_code_lets_it_go_keeps_its_file(db, alice, tmp_path, images, monkeypatch):
    """Bob's new code takes on the logo alice's code is dropping, and is held between checking for the file
    and committing while alice's change lets the logo go. That must wait for bob's commit and then see the
    logo in use; on PostgreSQL, where the two writes do not queue, it deleted the file under bob's code."""
    logo = with_logo(db, alice, tmp_path).logo
    alices = codes.list_codes(db, owner_id=alice)[0][0]
    bob = gen_user(db, "bob")
    file_checked, may_commit = threading.Event(), threading.Event()
    insert_code = code_store.insert_code

    def held_insert(conn, values):
        file_checked.set()
        assert may_commit.wait(30)
        insert_code(conn, values)

    monkeypatch.setattr(code_store, "insert_code", held_insert)
    with ThreadPoolExecutor(2) as pool:
        bobs = pool.submit(codes.create_code, db, owner_id=bob, destination="https://example.com/b", logo=logo,
                           logo_dir=tmp_path)
        assert file_checked.wait(30)
        letting_go = pool.submit(codes.update_code, db, owner_id=alice, uuid=alices.uuid, logo_dir=tmp_path,
                                 images=images, changes=codes.CodeChanges(remove_logo=True))
        wait_until_done_or_blocked(db, letting_go)
        may_commit.set()
        assert letting_go.result().logo is None
        assert bobs.result().logo == logo
    assert stored_logos(tmp_path) == {logo}


def wait_until_done_or_blocked(db, future, seconds: float = 1) -> None:
    """Until future is done or, on PostgreSQL, a transaction waits for an advisory lock; on SQLite, whose
    waiting writers show nowhere, until `seconds` pass (a blocked writer waits up to its busy timeout, 10 s)."""
    deadline = time.monotonic() + seconds
    while not future.done() and time.monotonic() < deadline:
        if db.engine.dialect.name == "postgresql":
            with db.read() as conn:
                if conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                        "AND NOT granted").scalar_one():
                    return
        time.sleep(0.02)


def test_a_logo_whose_file_is_gone_is_refused(db, alice, tmp_path, images):
    code = gen_code(db, alice)
    logo = codes.save_logo(tmp_path, b"logo A")
    codes.logo_path(tmp_path, logo).unlink()
    with pytest.raises(ValidationError) as caught:
        codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=codes.CodeChanges(logo=logo),
                          logo_dir=tmp_path, images=images)
    assert caught.value.field == "logo"
    with pytest.raises(ValidationError):
        codes.create_code(db, owner_id=alice, destination="https://example.com/", logo=logo, logo_dir=tmp_path)
    assert codes.get_code(db, owner_id=alice, uuid=code.uuid).logo is None
    assert codes.list_codes(db, owner_id=alice)[1] == 1


def test_a_logo_file_that_cannot_be_deleted_is_logged_and_the_change_stands(db, alice, tmp_path, monkeypatch,
                                                                           caplog, images):
    code = with_logo(db, alice, tmp_path)

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    codes.delete_code(db, owner_id=alice, uuid=code.uuid, logo_dir=tmp_path, images=images)
    assert "could not delete the logo file" in caplog.text
    with pytest.raises(NotFound):
        codes.get_code(db, owner_id=alice, uuid=code.uuid)


# --- cached images ---------------------------------------------------------------------------------

def cache_images(images: ImageCache, code, *, short_url: str | None = None) -> dict[str, bytes]:
    """Put a PNG of two sizes and an SVG of the code in the cache, as /img/ would; returns them by key."""
    data = short_url or f"https://qr.example.com/p/{code.slug}"
    fingerprint = image_fingerprint(data, code.logo)
    cached = {cache_key(code.slug, kind=kind, size=size, fingerprint=fingerprint): f"{kind} {size}".encode()
              for kind, size in (("png", 400), ("png", 96), ("svg", None))}
    for key, content in cached.items():
        images.put(key, content)
    return cached


def cached_files(images: ImageCache) -> set[str]:
    return {path.name for path in Path(images.directory).iterdir()}


def test_delete_discards_every_cached_image_of_the_code_and_no_other(db, alice, tmp_path, images):
    code, other = gen_code(db, alice), gen_code(db, alice)
    cache_images(images, code)
    cache_images(images, code, short_url=f"http://localhost/p/{code.slug}")  # served under another address too
    kept = cache_images(images, other)
    codes.delete_code(db, owner_id=alice, uuid=code.uuid, logo_dir=tmp_path, images=images)
    assert cached_files(images) == set(kept)


@pytest.mark.parametrize("changes", [
    codes.CodeChanges(destination="https://example.org/elsewhere"),
    codes.CodeChanges(label="renamed"),
    codes.CodeChanges(status="paused"),
], ids=["destination", "label", "status"])
def test_a_change_the_image_does_not_show_keeps_its_cached_images(db, alice, tmp_path, changes, images):
    code = gen_code(db, alice)
    cached = cache_images(images, code)
    codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=changes, logo_dir=tmp_path, images=images)
    assert {key: images.get(key) for key in cached} == cached


@pytest.mark.parametrize("changes", [
    lambda logo_dir: codes.CodeChanges(logo=codes.save_logo(logo_dir, b"logo B")),
    lambda logo_dir: codes.CodeChanges(remove_logo=True),
], ids=["replaced", "removed"])
def test_a_logo_change_discards_the_cached_images(db, alice, tmp_path, changes, images):
    code = with_logo(db, alice, tmp_path)
    cache_images(images, code)
    codes.update_code(db, owner_id=alice, uuid=code.uuid, changes=changes(tmp_path), logo_dir=tmp_path,
                      images=images)
    assert cached_files(images) == set()


def test_a_cache_that_cannot_be_emptied_is_logged_and_the_delete_stands(db, alice, tmp_path, monkeypatch, caplog,
                                                                         images):
    code = gen_code(db, alice)
    cache_images(images, code)

    def refuse(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "remove", refuse)
    codes.delete_code(db, owner_id=alice, uuid=code.uuid, logo_dir=tmp_path, images=images)
    assert "could not delete the cached images" in caplog.text
    with pytest.raises(NotFound):
        codes.get_code(db, owner_id=alice, uuid=code.uuid)
