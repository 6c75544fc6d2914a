"""Service: create, retarget, pause, archive and delete dynamic codes; slugs; destination checks."""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
import uuid as uuid_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .clock import now_epoch
from .destinations import ascii_authority
from .errors import NotFound, ValidationError
from .images.cache import ImageCache
from .links import slug_in_short_url
from .store import codes as code_store
from .store import scans as scan_store
from .store.db import Database
from .text import has_control_characters

CODE_TYPES = ("url",)
STATUSES = ("active", "paused", "archived")
LISTED_STATUSES = ("active", "paused")
"""What a list of codes shows unless asked for a status: archived codes are kept out of sight."""
MAX_DESTINATION_LENGTH = 2048
MAX_LABEL_LENGTH = 200
SLUG_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
SLUG_LENGTH = 7
SLUG_ATTEMPTS = 8
MAX_SHORT_URL_HOPS = 20  # codes pointing at codes of this site followed when looking for a loop
UNUSED_LOGO_GRACE_SECONDS = 86400
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodeChanges:
    """What an update asks for; None means leave as it is."""

    destination: str | None = None
    label: str | None = None
    status: str | None = None
    logo: str | None = None
    remove_logo: bool = False


def new_slug() -> str:
    """7 characters from a 56-letter alphabet without look-alikes (0/O, 1/l/I): 1.7e12 values."""
    return "".join(secrets.choice(SLUG_ALPHABET) for _ in range(SLUG_LENGTH))


def validate_destination(value: Any) -> str:
    if value is not None and not isinstance(value, str):
        raise ValidationError("destination must be a string: an absolute http or https URL",
                              code="invalid_destination", field="destination")
    if not value or not value.strip():
        raise ValidationError("destination is required: an absolute http or https URL",
                              code="invalid_destination", field="destination")
    # Not stripped: a URL with spaces around it is refused like one with spaces inside, as the API spec says.
    destination = value
    if len(destination) > MAX_DESTINATION_LENGTH:
        raise ValidationError(f"destination is longer than {MAX_DESTINATION_LENGTH} characters",
                              code="invalid_destination", field="destination")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in destination):
        raise ValidationError("destination must not contain spaces or control characters",
                              code="invalid_destination", field="destination")
    try:
        parts = urlsplit(destination)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValidationError("destination is not a valid URL", code="invalid_destination",
                              field="destination") from None
    if parts.scheme.lower() not in {"http", "https"} or not host:
        raise ValidationError("destination must be an absolute http or https URL with a host, "
                              "e.g. https://example.com/page", code="invalid_destination", field="destination")
    try:
        ascii_authority(parts.netloc)
    except ValueError as error:
        raise ValidationError(f"destination's host is not one a browser can open: {error}",
                              code="invalid_destination", field="destination") from None
    return destination


def validate_label(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError("label must be a string", code="invalid_label", field="label")
    # The bound is on what was sent, so the API spec's maxLength means what it says.
    if len(value) > MAX_LABEL_LENGTH:
        raise ValidationError(f"label is longer than {MAX_LABEL_LENGTH} characters",
                              code="invalid_label", field="label")
    if has_control_characters(value):
        raise ValidationError("label must not contain control characters", code="invalid_label", field="label")
    return " ".join(value.split())


def validate_type(value: Any) -> str:
    if value is None:
        return "url"
    if value not in CODE_TYPES:
        raise ValidationError(f"type must be one of: {', '.join(CODE_TYPES)}", code="invalid_type", field="type")
    return value


def validate_status(value: Any) -> str:
    if value not in STATUSES:
        raise ValidationError(f"status must be one of: {', '.join(STATUSES)}", code="invalid_status",
                              field="status")
    return value


def create_code(db: Database, *, owner_id: int, destination: Any, label: Any = None, code_type: Any = None,
                status: Any = "active", logo: str | None = None, logo_dir: Path) -> Row:
    """Validate and insert a new code (active unless told otherwise) with a fresh uuid4 and a unique random slug.

    A logo whose file is not in logo_dir (see remove_logo_if_unused) is refused.
    """
    values = {
        "uuid": str(uuid_module.uuid4()),
        "owner_id": owner_id,
        "type": validate_type(code_type),
        "destination": validate_destination(destination),
        "label": validate_label(label),
        "logo": logo,
        "status": validate_status(status),
        "scan_count": 0,
    }
    for _ in range(SLUG_ATTEMPTS):
        values["slug"] = new_slug()
        values["created_at"] = values["updated_at"] = now_epoch()
        try:
            with db.write() as conn:
                if code_store.slug_exists(conn, values["slug"]):
                    continue
                _check_logo_file(conn, logo_dir, logo)
                code_store.insert_code(conn, values)
                return code_store.get_code_by_uuid(conn, uuid=values["uuid"], owner_id=owner_id)
        except IntegrityError:
            continue
    raise RuntimeError("could not find a free slug; the slug space is nearly full")


def get_code(db: Database, *, owner_id: int, uuid: Any) -> Row:
    """The owner's code; NotFound for unknown ids and for other users' codes alike."""
    if not isinstance(uuid, str) or not _is_uuid(uuid):
        raise NotFound("no code with this uuid", code="code_not_found")
    with db.read() as conn:
        row = code_store.get_code_by_uuid(conn, uuid=uuid.lower(), owner_id=owner_id)
    if row is None:
        raise NotFound("no code with this uuid", code="code_not_found")
    return row


def _is_uuid(value: str) -> bool:
    try:
        uuid_module.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def update_code(db: Database, *, owner_id: int, uuid: Any, changes: CodeChanges, logo_dir: Path,
                images: ImageCache, site_base_url: str | None = None) -> Row:
    """Apply the changes that are set; the next scan already follows a new destination.

    A new logo whose file is not in logo_dir is refused, and the file of a logo replaced or removed is
    deleted once no code uses it. The code's cached images are discarded only when the logo changes:
    an image encodes the short URL and shows the logo, so a new destination, label or status leaves it
    as it was. A destination that leads back to the code through short URLs of the site at site_base_url
    is refused (_refuse_a_loop).
    """
    code = get_code(db, owner_id=owner_id, uuid=uuid)
    values = _changed_values(changes)
    if not values:
        return code
    values["updated_at"] = now_epoch()
    with db.write() as conn:
        if "destination" in values and site_base_url:
            _refuse_a_loop(conn, code.slug, values["destination"], site_base_url)
        _check_logo_file(conn, logo_dir, values.get("logo"))
        code_store.update_code(conn, code.id, values)
        updated = code_store.get_code_by_uuid(conn, uuid=code.uuid, owner_id=owner_id)
    if code.logo != updated.logo:
        discard_code_images(images, code.slug)
        if code.logo:
            remove_logo_if_unused(db, logo_dir, code.logo)
    return updated


def _refuse_a_loop(conn: Connection, slug: str, destination: str, site_base_url: str) -> None:
    """A code whose destination is its own short URL, or another code's that leads back to it, sends each
    scan round until the browser gives up, counting a scan at every turn."""
    seen: set[str] = set()
    next_slug = slug_in_short_url(site_base_url, destination)
    while next_slug is not None and next_slug not in seen and len(seen) < MAX_SHORT_URL_HOPS:
        if next_slug == slug:
            raise ValidationError("destination leads back to this code's own short URL, so every scan would go "
                                  "round in a loop", code="invalid_destination", field="destination")
        seen.add(next_slug)
        target = code_store.get_full_code_by_slug(conn, next_slug)
        next_slug = slug_in_short_url(site_base_url, target.destination) if target is not None else None


def _changed_values(changes: CodeChanges) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if changes.destination is not None:
        values["destination"] = validate_destination(changes.destination)
    if changes.label is not None:
        values["label"] = validate_label(changes.label)
    if changes.status is not None:
        values["status"] = validate_status(changes.status)
    if changes.logo is not None or changes.remove_logo:
        values["logo"] = None if changes.remove_logo else changes.logo
    return values


def delete_code(db: Database, *, owner_id: int, uuid: Any, logo_dir: Path, images: ImageCache) -> Row:
    """Delete the code and its scan log for good; returns the row as it was.

    Its cached images go too, and its logo file in logo_dir once no code uses it.
    """
    code = get_code(db, owner_id=owner_id, uuid=uuid)
    with db.write() as conn:
        code_store.delete_code(conn, code.id)
    discard_code_images(images, code.slug)
    if code.logo:
        remove_logo_if_unused(db, logo_dir, code.logo)
    return code


def discard_code_images(images: ImageCache, slug: str) -> None:
    """Delete every cached image of the code with this slug: PNGs of every size and the SVG, whatever they show.

    Call it only after the change has committed. A failure is logged and the files left: the change went
    through, and a file left behind is never served for another image (its key names what it shows).
    """
    try:
        images.discard_prefix(f"{slug}-")  # every key of a slug starts so (image_cache.cache_key)
    except OSError:
        log.exception("could not delete the cached images of %s", slug)


def list_codes(db: Database, *, owner_id: int, search: str | None = None, statuses: tuple[str, ...] | None = None,
               sort: str = "created", descending: bool = True, limit: int | None = None,
               offset: int = 0) -> tuple[list[Row], int]:
    """One page of the owner's codes and the total matching, newest first by default."""
    if sort not in code_store.SORTABLE_CODE_COLUMNS:
        raise ValidationError(f"sort must be one of: {', '.join(code_store.SORTABLE_CODE_COLUMNS)}",
                              code="invalid_sort", field="sort")
    with db.read() as conn:
        rows = code_store.list_codes(conn, owner_id, search=search, statuses=statuses, sort=sort,
                                     descending=descending, limit=limit, offset=offset)
        return rows, _total(conn, owner_id, search=search, statuses=statuses, shown=len(rows), limit=limit,
                            offset=offset)


def list_code_summaries(db: Database, *, owner_id: int, search: str | None = None,
                        statuses: tuple[str, ...] | None = None, limit: int | None = None,
                        offset: int = 0) -> tuple[list[Row], int]:
    """list_codes for the API: code_store.CODE_SUMMARY_COLUMNS rows, newest first, and the total matching."""
    with db.read() as conn:
        rows = code_store.list_code_summaries(conn, owner_id, search=search, statuses=statuses, limit=limit,
                                              offset=offset)
        return rows, _total(conn, owner_id, search=search, statuses=statuses, shown=len(rows), limit=limit,
                            offset=offset)


def _total(conn, owner_id: int, *, search: str | None, statuses: tuple[str, ...] | None, shown: int,
           limit: int | None, offset: int) -> int:
    """How many codes match: told by the page itself when it is a last page not past the end, else counted."""
    is_last_page = limit is None or shown < limit
    if is_last_page and (shown > 0 or offset == 0):
        return offset + shown
    return code_store.count_codes(conn, owner_id, search=search, statuses=statuses)


def save_logo(logo_dir: Path, png_bytes: bytes) -> str:
    """Store sanitised logo PNG bytes under their content hash; returns the hash (the codes.logo value).

    A file already there is touched, so remove_unused_logos counts its grace period from this upload.
    """
    digest = hashlib.sha256(png_bytes).hexdigest()
    path = logo_dir / f"{digest}.png"
    if path.exists():
        os.utime(path)
        return digest
    logo_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(png_bytes)
    temporary.replace(path)
    return digest


def logo_path(logo_dir: Path, logo: str) -> Path:
    return logo_dir / f"{logo}.png"


def remove_logo_if_unused(db: Database, logo_dir: Path, logo: str) -> None:
    """Delete a logo's file when no code uses it any more (logos are shared by content).

    Call it only after the change that dropped the logo has committed, so a failed change never leaves a
    code without its file. The check and the deletion hold the logo's lock (code_store.lock_logo), and a code
    taking the logo on checks for the file under the same lock (_check_logo_file), so the two cannot
    interleave. A failure here is logged and the file left: the change itself went through.
    """
    try:
        with db.write() as conn:
            code_store.lock_logo(conn, logo)
            if not code_store.is_logo_used(conn, logo):
                logo_path(logo_dir, logo).unlink(missing_ok=True)
    except (OSError, SQLAlchemyError):
        log.exception("could not delete the logo file %s, which no code uses any more", logo)


def remove_unused_logos(db: Database, logo_dir: Path, *, older_than_seconds: int = UNUSED_LOGO_GRACE_SECONDS) -> int:
    """Delete the logo files no code uses that are older than the grace period; returns how many.

    The ones that code changes leave behind are removed as they happen (remove_logo_if_unused); these
    are the rest: a removed user's, uploads of a form that was then abandoned, files left from before.
    The grace period spares an upload whose form is still being corrected (it names the file it keeps).
    """
    try:
        files = [entry for entry in os.scandir(logo_dir) if entry.name.endswith(".png") and entry.is_file()]
    except FileNotFoundError:
        return 0
    cutoff = time.time() - older_than_seconds
    removed = 0
    with db.write() as conn:
        used = code_store.list_used_logos(conn)
        for entry in files:
            logo = entry.name.removesuffix(".png")
            if logo in used:
                continue
            try:
                if entry.stat().st_mtime >= cutoff:
                    continue
                code_store.lock_logo(conn, logo)
                if not code_store.is_logo_used(conn, logo):  # again, under its lock: a code may have taken it since
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
            except OSError:
                log.exception("could not delete the logo file %s, which no code uses", entry.name)
    return removed


def _check_logo_file(conn: Connection, logo_dir: Path, logo: str | None) -> None:
    """Refuse a logo whose file is gone; holds the logo's lock until conn's transaction ends (see lock_logo)."""
    if not logo:
        return
    code_store.lock_logo(conn, logo)
    if not logo_path(logo_dir, logo).is_file():
        raise ValidationError("this logo is no longer on the server; upload it again", code="invalid_logo",
                              field="logo")


def scan_log(db: Database, *, code_id: int, limit: int, before_id: int | None = None) -> list[Row]:
    """A page of a code's scan log, newest first (its total is the code's scan_count, kept in step).

    before_id must be a scan of this code, as next_before is: any other id would silently give an empty page,
    as if nothing were older.
    """
    with db.read() as conn:
        rows = scan_store.list_scans(conn, code_id, limit=limit, before_id=before_id)
    if rows is None:
        raise ValidationError("before must be the id of a scan of this code: the next_before of the previous page",
                              code="invalid_parameter", field="before")
    return rows
