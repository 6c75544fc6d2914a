"""Service: user accounts — create, authenticate, change password, enable, disable and remove."""
from __future__ import annotations

import functools
import re
import secrets

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from .clock import now_epoch
from .errors import Conflict, NotFound, ValidationError
from .store import accounts as account_store
from .store.db import Database

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{1,63}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def validate_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username.strip()):
        raise ValidationError("username: 2 to 64 letters, digits or . _ @ -, starting with a letter or digit",
                              code="invalid_username", field="username")
    return username.strip()


def validate_password(password: object, *, username: str | None = None) -> str:
    """At least MIN_PASSWORD_LENGTH characters, not all of them spaces, and not the user's own name: the
    two guesses anyone tries first."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"password must be at least {MIN_PASSWORD_LENGTH} characters",
                              code="invalid_password", field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValidationError("password is too long", code="invalid_password", field="password")
    if not password.strip():
        raise ValidationError("password must not be only spaces", code="invalid_password", field="password")
    if username is not None and password.strip().casefold() == username.strip().casefold():
        raise ValidationError("password must not be the user name", code="invalid_password", field="password")
    return password


def create_user(db: Database, *, username: object, password: object, is_admin: bool = False,
                only_if_first: bool = False) -> int:
    """Create a user; Conflict when the name is taken in any case ("Admin" when "admin" exists), and with
    only_if_first, unless the database has no user yet.

    Names are unique regardless of case by this check, made in the write transaction with other user
    creations held off (account_store.lock_users_for_insert), rather than by a unique index on lower(username):
    databases from before may hold names that differ only in case, and a migration could then neither
    build the index nor rename someone's login on a host where the app upgrades itself at start.
    (MySQL's usual case-insensitive collations make the plain unique constraint enough there too.)
    """
    clean_name = validate_username(username)
    password_hash = generate_password_hash(validate_password(password, username=clean_name))
    try:
        with db.write() as conn:
            account_store.lock_users_for_insert(conn)
            if only_if_first and account_store.count_users(conn):
                raise Conflict("the first account exists already; log in instead", code="setup_done")
            _refuse_taken_username(conn, clean_name)
            return account_store.insert_user(conn, username=clean_name, password_hash=password_hash, is_admin=is_admin,
                                             now=now_epoch())
    except IntegrityError:
        raise Conflict(f"user {clean_name!r} already exists", code="user_exists", field="username") from None


def _refuse_taken_username(conn: Connection, username: str) -> None:
    taken = account_store.list_users_by_lowercase_username(conn, username.lower())
    if any(user.username == username for user in taken):
        raise Conflict(f"user {username!r} already exists", code="user_exists", field="username")
    if taken:
        raise Conflict(f"user {taken[0].username!r} already exists, and user names ignore case",
                       code="user_exists", field="username")


def _user_named(conn: Connection, username: str) -> Row | None:
    """The user a name typed at login or on the command line means, in any case.

    A database from before names were unique regardless of case may hold, say, "sam" and "Sam": each is
    then reached by its exact name only, and a spelling matching both ("SAM") reaches neither, so nobody is
    let into the other's account by a guess of which one a spelling picks.
    """
    username = username.strip()
    if not username.isascii():  # usernames are ASCII; Python's lower() would fold the Kelvin sign to "k"
        return None
    matches = account_store.list_users_by_lowercase_username(conn, username.lower())
    exact = [user for user in matches if user.username == username]
    if exact:
        return exact[0]
    return matches[0] if len(matches) == 1 else None


def generate_password() -> str:
    return secrets.token_urlsafe(12)


@functools.cache
def _dummy_password_hash() -> str:
    """Compared against when the user does not exist, so a login takes as long either way.

    Made on first use: hashing costs ~0.1 s, which a CGI process would otherwise pay on every request.
    """
    return generate_password_hash(secrets.token_hex(16))


def authenticate_user(db: Database, *, username: str, password: str) -> Row | None:
    """The enabled user with these credentials, the name in any case, or None; takes the same time for
    unknown users."""
    with db.read() as conn:
        user = _user_named(conn, username)
    if user is None:
        check_password_hash(_dummy_password_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password) or not user.is_active:
        return None
    return user


def get_user(db: Database, user_id: int) -> Row | None:
    with db.read() as conn:
        return account_store.get_user_by_id(conn, user_id)


def find_user(db: Database, username: str) -> Row:
    """The user with this name, in any case (see _user_named); NotFound when none or not one."""
    with db.read() as conn:
        user = _user_named(conn, username)
    if user is None:
        raise NotFound(f"no user named {username!r}", code="user_not_found")
    return user


def list_users(db: Database) -> list[Row]:
    with db.read() as conn:
        return account_store.list_users(conn)


def count_users(db: Database) -> int:
    with db.read() as conn:
        return account_store.count_users(conn)


def count_codes_by_user(db: Database) -> dict[int, int]:
    """How many codes each user owns (users without codes are left out)."""
    with db.read() as conn:
        return account_store.count_codes_by_owner(conn)


def change_password(db: Database, *, user_id: int, current: str, new: object) -> None:
    user = get_user(db, user_id)
    if user is None or not check_password_hash(user.password_hash, current):
        raise ValidationError("current password is not right", code="wrong_password", field="current_password")
    _store_password(db, user, new)


def set_password(db: Database, *, user_id: int, password: object) -> None:
    user = get_user(db, user_id)
    if user is None:
        raise NotFound("no such user", code="user_not_found")
    _store_password(db, user, password)


def _store_password(db: Database, user: Row, password: object) -> None:
    password_hash = generate_password_hash(validate_password(password, username=user.username))
    with db.write() as conn:
        if account_store.update_user(conn, user.id, {"password_hash": password_hash}) == 0:
            raise NotFound("no such user", code="user_not_found")


def set_user_active(db: Database, *, user_id: int, is_active: bool) -> None:
    """Disabling a user stops their API keys at once (keys are checked against an enabled owner)."""
    with db.write() as conn:
        _refuse_to_remove_last_admin(conn, user_id, removing=not is_active)
        if account_store.update_user(conn, user_id, {"is_active": is_active}) == 0:
            raise NotFound("no such user", code="user_not_found")


def delete_user(db: Database, *, user_id: int) -> None:
    """Remove the user with their codes, scans and keys."""
    with db.write() as conn:
        _refuse_to_remove_last_admin(conn, user_id, removing=True)
        if account_store.delete_user(conn, user_id) == 0:
            raise NotFound("no such user", code="user_not_found")


def _refuse_to_remove_last_admin(conn, user_id: int, *, removing: bool) -> None:
    user = account_store.get_user_by_id(conn, user_id)
    if (removing and user is not None and user.is_admin and user.is_active
            and account_store.count_active_admins(conn) <= 1):
        raise ValidationError("this is the last enabled admin; make another admin first", code="last_admin")
