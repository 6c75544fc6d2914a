"""Service: issue API keys (shown once, only a hash stored), verify them in constant time, revoke them."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row

from . import store
from .clock import now_epoch
from .db import Database
from .errors import NotFound, Unauthorized, ValidationError
from .text import has_control_characters

KEY_PREFIX = "qrt_"
KEY_RANDOM_BYTES = 20
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8
MAX_KEY_NAME_LENGTH = 100
MAX_PRESENTED_KEY_LENGTH = 200
LAST_USED_RESOLUTION_SECONDS = 60
API_CALLS_KEPT_PER_USER = 1000
"""How much of each user's API call log is kept. Only the latest calls are ever shown (the Live Console's
history shows a page of them), so older ones are pruned, or the log would grow with every call for as long
as the site runs; 1,000 leaves room for a longer history without keeping more than a few hundred kB per user."""
API_CALLS_PRUNE_INTERVAL = 97
"""Prune a user's log on the calls whose id is a multiple of this, not on every call: the prune reads the
user's newest API_CALLS_KEPT_PER_USER index entries, which would about double the cost of logging a call.
A log thus typically holds up to this many calls more than it keeps. Prime, so that users whose calls take
turns in a fixed rhythm still each land on multiples."""


@dataclass(frozen=True)
class ApiPrincipal:
    """Who an authenticated API call acts for."""

    key_id: int
    user_id: int
    key_name: str


def hash_api_key(raw_key: str) -> str:
    """The stored form. Keys carry 160 random bits, so a fast hash is enough (no salt or stretching)."""
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def validate_key_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("give the key a name, e.g. 'zapier' or 'build server'", code="invalid_name",
                              field="name")
    cleaned = " ".join(name.split())
    if len(cleaned) > MAX_KEY_NAME_LENGTH:
        raise ValidationError(f"key name is longer than {MAX_KEY_NAME_LENGTH} characters", code="invalid_name",
                              field="name")
    if has_control_characters(cleaned):
        raise ValidationError("key name must not contain control characters", code="invalid_name", field="name")
    return cleaned


def issue_api_key(db: Database, *, user_id: int, name: object) -> tuple[str, int]:
    """Create a key; returns (the full key, to be shown once and never again, its id)."""
    clean_name = validate_key_name(name)
    raw_key = KEY_PREFIX + secrets.token_hex(KEY_RANDOM_BYTES)
    with db.write() as conn:
        key_id = store.insert_api_key(conn, user_id=user_id, name=clean_name, prefix=raw_key[:DISPLAY_PREFIX_LENGTH],
                                      key_hash=hash_api_key(raw_key), now=now_epoch())
    return raw_key, key_id


def authenticate_api_key(db: Database, raw_key: str | None) -> ApiPrincipal:
    """The principal for a presented key; Unauthorized for a missing, unknown or revoked key or disabled user."""
    if not raw_key:
        raise Unauthorized("send your API key in the X-Api-Key header", code="missing_api_key")
    raw_key = raw_key.strip()
    if len(raw_key) > MAX_PRESENTED_KEY_LENGTH or not raw_key.startswith(KEY_PREFIX):
        raise Unauthorized("this API key is not valid", code="invalid_api_key")
    presented_hash = hash_api_key(raw_key)
    with db.read() as conn:
        row = store.get_active_key_by_hash(conn, presented_hash)
    if row is None or not hmac.compare_digest(row.key_hash, presented_hash):
        raise Unauthorized("this API key is not valid or has been revoked", code="invalid_api_key")
    _note_key_use(db, row)
    return ApiPrincipal(key_id=row.id, user_id=row.user_id, key_name=row.name)


def authenticate_key_id(db: Database, *, key_id: int, user_id: int) -> ApiPrincipal:
    """For the dashboard's Live Console, which picks a key by id server-side and never sees the key itself."""
    with db.read() as conn:
        row = store.get_active_key_for_user(conn, key_id=key_id, user_id=user_id)
    if row is None:
        raise Unauthorized("this API key is not valid or has been revoked", code="invalid_api_key")
    _note_key_use(db, row)
    return ApiPrincipal(key_id=row.id, user_id=row.user_id, key_name=row.name)


def _note_key_use(db: Database, row: Row) -> None:
    """Record last use at minute resolution, so a busy key does not cost a write per call."""
    now = now_epoch()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION_SECONDS:
        with db.write() as conn:
            store.touch_api_key(conn, row.id, now)


def list_api_keys(db: Database, *, user_id: int) -> list[Row]:
    with db.read() as conn:
        return store.list_api_keys(conn, user_id)


def record_api_call(db: Database, call: Mapping[str, Any]) -> None:
    """Add a call (the api_calls columns) to its user's log, pruning that log to its newest calls now and then."""
    with db.write() as conn:
        call_id = store.insert_api_call(conn, call)
        if call_id % API_CALLS_PRUNE_INTERVAL == 0:
            store.delete_api_calls_beyond(conn, call["user_id"], keep=API_CALLS_KEPT_PER_USER)


def list_recent_api_calls(db: Database, *, user_id: int, limit: int = 20) -> list[Row]:
    """The user's latest API calls, newest first, from the API and the Live Console alike."""
    with db.read() as conn:
        return store.list_api_calls(conn, user_id, limit=limit)


def revoke_api_key(db: Database, *, user_id: int, key_id: int) -> None:
    """Revoke at once; the codes made with the key stay."""
    with db.write() as conn:
        if store.revoke_api_key(conn, key_id=key_id, user_id=user_id, now=now_epoch()) == 0:
            raise NotFound("no active key with this id", code="key_not_found")
