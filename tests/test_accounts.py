"""Accounts: creation rules, authentication, passwords, the last-admin guard."""
from __future__ import annotations

import pytest

from qrtrack import accounts
from qrtrack.errors import Conflict, ValidationError

from .conftest import PASSWORD, gen_user

pytestmark = pytest.mark.postgresql


def test_created_user_can_authenticate_and_password_is_hashed(db):
    user_id = gen_user(db, "carol")
    user = accounts.authenticate_user(db, username="carol", password=PASSWORD)
    assert user.id == user_id and user.password_hash.startswith(("scrypt:", "pbkdf2:"))
    assert accounts.authenticate_user(db, username="carol", password="wrong password") is None
    assert accounts.authenticate_user(db, username="nobody", password=PASSWORD) is None


@pytest.mark.parametrize("username", ["", "a", "has space", "-dash", "x" * 65, None])
def test_bad_usernames_are_refused(db, username):
    with pytest.raises(ValidationError):
        accounts.create_user(db, username=username, password=PASSWORD)


def test_short_password_is_refused(db):
    with pytest.raises(ValidationError, match="8"):
        accounts.create_user(db, username="dave", password="short")


def test_duplicate_username_is_a_conflict(db):
    gen_user(db, "erin")
    with pytest.raises(Conflict):
        gen_user(db, "erin")


def test_first_admin_only_once(db):
    accounts.create_user(db, username="admin", password=PASSWORD, is_admin=True, only_if_first=True)
    with pytest.raises(Conflict):
        accounts.create_user(db, username="second", password=PASSWORD, is_admin=True, only_if_first=True)


def test_disabled_user_cannot_log_in(db):
    gen_user(db, "root", is_admin=True)
    user_id = gen_user(db, "frank")
    accounts.set_user_active(db, user_id=user_id, is_active=False)
    assert accounts.authenticate_user(db, username="frank", password=PASSWORD) is None


def test_last_enabled_admin_cannot_be_disabled_or_removed(db):
    admin = gen_user(db, "root", is_admin=True)
    with pytest.raises(ValidationError, match="last"):
        accounts.set_user_active(db, user_id=admin, is_active=False)
    with pytest.raises(ValidationError, match="last"):
        accounts.delete_user(db, user_id=admin)
    gen_user(db, "root2", is_admin=True)
    accounts.delete_user(db, user_id=admin)


def test_change_password_needs_the_current_one(db):
    user_id = gen_user(db, "gina")
    with pytest.raises(ValidationError):
        accounts.change_password(db, user_id=user_id, current="wrong", new="a new password")
    accounts.change_password(db, user_id=user_id, current=PASSWORD, new="a new password")
    assert accounts.authenticate_user(db, username="gina", password="a new password") is not None


def test_a_username_with_nul_is_unknown_rather_than_an_error(db):
    gen_user(db, "hana")
    assert accounts.authenticate_user(db, username="hana\x00", password=PASSWORD) is None
