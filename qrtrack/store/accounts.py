"""The queries of user accounts: one function per query, each taking a connection and never committing."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from .db import has_id, is_storable
from .schema import codes, users

USER_COLUMNS = (users.c.id, users.c.username, users.c.password_hash, users.c.is_admin, users.c.is_active,
                users.c.created_at)


def insert_user(conn: Connection, *, username: str, password_hash: str, is_admin: bool, now: int) -> int:
    result = conn.execute(insert(users).values(
        username=username, password_hash=password_hash, is_admin=is_admin, is_active=True, created_at=now))
    return result.inserted_primary_key[0]


def get_user_by_id(conn: Connection, user_id: int) -> Row | None:
    return conn.execute(select(*USER_COLUMNS).where(has_id(users.c.id, user_id))).first()


def list_users_by_lowercase_username(conn: Connection, lowercase_username: str) -> list[Row]:
    """The users whose name, lowercased, is this (more than one only in databases from before names were
    unique regardless of case). Usernames are ASCII, which lower() folds alike on every database."""
    if not is_storable(lowercase_username):
        return []
    query = select(*USER_COLUMNS).where(func.lower(users.c.username) == lowercase_username).order_by(users.c.id)
    return list(conn.execute(query))


def lock_users_for_insert(conn: Connection) -> None:
    """Make other transactions that add users wait until this one ends, so a check for a name and the insert
    of it are one step. SQLite's write transactions (BEGIN IMMEDIATE) already wait for each other; on
    PostgreSQL this lock does not hold up reads, only other writes to users."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")


def list_users(conn: Connection) -> list[Row]:
    """By name regardless of case ("adam" before "Zoe"); usernames are ASCII, which lower() folds alike everywhere."""
    return list(conn.execute(select(*USER_COLUMNS).order_by(func.lower(users.c.username), users.c.id)))


def count_users(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(users)).scalar_one()


def count_active_admins(conn: Connection) -> int:
    query = select(func.count()).select_from(users).where(users.c.is_admin.is_(True), users.c.is_active.is_(True))
    return conn.execute(query).scalar_one()


def update_user(conn: Connection, user_id: int, values: Mapping[str, Any]) -> int:
    return conn.execute(update(users).where(users.c.id == user_id).values(**values)).rowcount


def delete_user(conn: Connection, user_id: int) -> int:
    return conn.execute(delete(users).where(users.c.id == user_id)).rowcount


def count_codes_by_owner(conn: Connection) -> dict[int, int]:
    """Every owner's number of codes, whatever their status, for the users page."""
    query = select(codes.c.owner_id, func.count()).group_by(codes.c.owner_id)
    return {owner_id: count for owner_id, count in conn.execute(query)}
