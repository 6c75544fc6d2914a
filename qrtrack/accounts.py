"""Service: user accounts — create, authenticate, change password, enable, disable and remove."""
from __future__ import annotations

import functools
import re
import secrets

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from . import store
from .clock import now_epoch
from .db import Database
from .errors import Conflict, NotFound, ValidationError

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{1,63}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def validate_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username.strip()):
        raise ValidationError("username: 2 to 64 letters, digits or . _ @ -, starting with a letter or digit",
                              code="invalid_username", field="username")
    return username.strip()


def validate_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"password must be at least {MIN_PASSWORD_LENGTH} characters",
                              code="invalid_password", field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError("password is too long", code="invalid_password", field="password")
    return password


def create_user(db: Database, *, username: object, password: object, is_admin: bool = False,
                only_if_first: bool = False) -> int:
    """Create a user; with only_if_first, refuse (Conflict) unless the database has no user yet."""
    clean_name = validate_username(username)
    password_hash = generate_password_hash(validate_password(password))
    try:
        with db.write() as conn:
            if only_if_first and store.count_users(conn):
                raise Conflict("the first account exists already; log in instead", code="setup_done")
            if store.get_user_by_username(conn, clean_name) is not None:
                raise Conflict(f"user {clean_name!r} already exists", code="user_exists", field="username")
            return store.insert_user(conn, username=clean_name, password_hash=password_hash, is_admin=is_admin,
                                     now=now_epoch())
    except IntegrityError:
        raise Conflict(f"user {clean_name!r} already exists", code="user_exists", field="username") from None


def generate_password() -> str:
    return secrets.token_urlsafe(12)


@functools.cache
def _dummy_password_hash() -> str:
    """Compared against when the user does not exist, so a login takes as long either way.

    Made on first use: hashing costs ~0.1 s, which a CGI process would otherwise pay on every request.
    """
    return generate_password_hash(secrets.token_hex(16))


def authenticate_user(db: Database, *, username: str, password: str) -> Row | None:
    """The enabled user with these credentials, or None; takes the same time for unknown users."""
    with db.read() as conn:
        user = store.get_user_by_username(conn, username.strip())
    if user is None:
        check_password_hash(_dummy_password_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password) or not user.is_active:
        return None
    return user


def get_user(db: Database, user_id: int) -> Row | None:
    with db.read() as conn:
        return store.get_user_by_id(conn, user_id)


def find_user(db: Database, username: str) -> Row:
    with db.read() as conn:
        user = store.get_user_by_username(conn, username.strip())
    if user is None:
        raise NotFound(f"no user named {username!r}", code="user_not_found")
    return user


def list_users(db: Database) -> list[Row]:
    with db.read() as conn:
        return store.list_users(conn)


def count_users(db: Database) -> int:
    with db.read() as conn:
        return store.count_users(conn)


def count_codes_by_user(db: Database) -> dict[int, int]:
    """How many codes each user owns (users without codes are left out)."""
    with db.read() as conn:
        return store.count_codes_by_owner(conn)


def change_password(db: Database, *, user_id: int, current: str, new: object) -> None:
    user = get_user(db, user_id)
    if user is None or not check_password_hash(user.password_hash, current):
        raise ValidationError("current password is not right", code="wrong_password", field="current_password")
    set_password(db, user_id=user_id, password=new)


def set_password(db: Database, *, user_id: int, password: object) -> None:
    password_hash = generate_password_hash(validate_password(password))
    with db.write() as conn:
        if store.update_user(conn, user_id, {"password_hash": password_hash}) == 0:
            raise NotFound("no such user", code="user_not_found")


def set_user_active(db: Database, *, user_id: int, is_active: bool) -> None:
    """Disabling a user stops their API keys at once (keys are checked against an enabled owner)."""
    with db.write() as conn:
        _refuse_to_remove_last_admin(conn, user_id, removing=not is_active)
        if store.update_user(conn, user_id, {"is_active": is_active}) == 0:
            raise NotFound("no such user", code="user_not_found")


def delete_user(db: Database, *, user_id: int) -> None:
    """Remove the user with their codes, scans and keys."""
    with db.write() as conn:
        _refuse_to_remove_last_admin(conn, user_id, removing=True)
        if store.delete_user(conn, user_id) == 0:
            raise NotFound("no such user", code="user_not_found")


def _refuse_to_remove_last_admin(conn, user_id: int, *, removing: bool) -> None:
    user = store.get_user_by_id(conn, user_id)
    if removing and user is not None and user.is_admin and user.is_active and store.count_active_admins(conn) <= 1:
        raise ValidationError("this is the last enabled admin; make another admin first", code="last_admin")
