"""The queries of API keys and the API call log: one function per query, each taking a connection and never
committing."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, tuple_, update

from .db import has_id
from .schema import api_calls, api_keys, users

KEY_COLUMNS = (api_keys.c.id, api_keys.c.user_id, api_keys.c.name, api_keys.c.prefix, api_keys.c.created_at,
               api_keys.c.last_used_at, api_keys.c.revoked_at)


def insert_api_key(conn: Connection, *, user_id: int, name: str, prefix: str, key_hash: str, now: int,
                   form_token: str | None = None) -> int:
    result = conn.execute(insert(api_keys).values(
        user_id=user_id, name=name, prefix=prefix, key_hash=key_hash, created_at=now, form_token=form_token))
    return result.inserted_primary_key[0]


def get_key_id_by_form_token(conn: Connection, *, user_id: int, form_token: str) -> int | None:
    query = select(api_keys.c.id).where(api_keys.c.user_id == user_id, api_keys.c.form_token == form_token)
    return conn.execute(query).scalar()


def get_active_key_by_hash(conn: Connection, key_hash: str) -> Row | None:
    """The unrevoked key with this hash, joined to its enabled owner."""
    query = (
        select(api_keys.c.id, api_keys.c.user_id, api_keys.c.name, api_keys.c.key_hash, api_keys.c.last_used_at)
        .join(users, users.c.id == api_keys.c.user_id)
        .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None), users.c.is_active.is_(True))
    )
    return conn.execute(query).first()


def get_active_key_for_user(conn: Connection, *, key_id: int, user_id: int) -> Row | None:
    query = (
        select(api_keys.c.id, api_keys.c.user_id, api_keys.c.name, api_keys.c.last_used_at)
        .join(users, users.c.id == api_keys.c.user_id)
        .where(has_id(api_keys.c.id, key_id), api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None),
               users.c.is_active.is_(True))
    )
    return conn.execute(query).first()


def list_api_keys(conn: Connection, user_id: int) -> list[Row]:
    query = select(*KEY_COLUMNS).where(api_keys.c.user_id == user_id).order_by(api_keys.c.id.desc())
    return list(conn.execute(query))


def touch_api_key(conn: Connection, key_id: int, now: int) -> None:
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))


def revoke_api_key(conn: Connection, *, key_id: int, user_id: int, now: int) -> int:
    query = (update(api_keys)
             .where(has_id(api_keys.c.id, key_id), api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
             .values(revoked_at=now))
    return conn.execute(query).rowcount


def insert_api_call(conn: Connection, values: Mapping[str, Any]) -> int:
    return conn.execute(insert(api_calls).values(**values)).inserted_primary_key[0]


def delete_api_calls_beyond(conn: Connection, user_id: int, *, keep: int) -> int:
    """Delete the user's calls older than their newest `keep`, newest by (ts, id).

    That is the order of the (user_id, ts) index (on SQLite it ends in the id), so finding the boundary reads
    `keep` index entries and the delete is a range of the same index: no scan of the table.
    """
    newest_first = (select(api_calls.c.ts, api_calls.c.id).where(api_calls.c.user_id == user_id)
                    .order_by(api_calls.c.ts.desc(), api_calls.c.id.desc()).offset(keep).limit(1))
    boundary = conn.execute(newest_first).first()
    if boundary is None:
        return 0
    older = tuple_(api_calls.c.ts, api_calls.c.id) <= tuple_(boundary.ts, boundary.id)
    return conn.execute(delete(api_calls).where(api_calls.c.user_id == user_id, older)).rowcount


def list_api_calls(conn: Connection, user_id: int, *, limit: int) -> list[Row]:
    query = (select(api_calls.c.id, api_calls.c.ts, api_calls.c.key_name, api_calls.c.method, api_calls.c.path,
                    api_calls.c.status, api_calls.c.duration_ms, api_calls.c.source)
             .where(api_calls.c.user_id == user_id).order_by(api_calls.c.id.desc()).limit(limit))
    return list(conn.execute(query))
