"""Accounts: creation rules, authentication, passwords, the last-admin guard."""
from __future__ import annotations

import threading

import pytest

from qrtrack import accounts
from qrtrack.errors import Conflict, NotFound, ValidationError

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


@pytest.mark.parametrize(("username", "password", "reason"), [
    ("spacey", " " * 10, "only spaces"),
    ("samesame", "samesame", "the user name"),
    ("Frank.Lee", " frank.lee ", "the user name"),
])
def test_the_first_guesses_anyone_tries_are_refused_as_passwords(db, username, password, reason):
    """A browser probe created 'spacey' with ten spaces for a password, and signed in with them."""
    with pytest.raises(ValidationError, match=reason) as refused:
        accounts.create_user(db, username=username, password=password)
    assert refused.value.field == "password"
    user_id = gen_user(db, username)
    with pytest.raises(ValidationError, match=reason):
        accounts.set_password(db, user_id=user_id, password=password)
    assert accounts.authenticate_user(db, username=username, password=PASSWORD) is not None


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


@pytest.mark.parametrize("other_case", ["Erin", "ERIN", "eRiN"])
def test_a_username_differing_only_in_case_is_a_conflict_naming_the_existing_one(db, other_case):
    gen_user(db, "erin")
    with pytest.raises(Conflict, match="'erin' already exists, and user names ignore case"):
        gen_user(db, other_case)
    assert accounts.count_users(db) == 1


@pytest.mark.parametrize("typed", ["carol", "Carol", "CAROL", " cArOl "])
def test_login_and_lookup_take_the_name_in_any_case(db, typed):
    user_id = gen_user(db, "Carol")
    assert accounts.authenticate_user(db, username=typed, password=PASSWORD).id == user_id
    assert accounts.find_user(db, typed).id == user_id


def test_a_lookalike_of_a_name_in_another_script_is_not_that_name(db):
    gen_user(db, "kim")
    assert accounts.authenticate_user(db, username="\u212aim", password=PASSWORD) is None  # KELVIN SIGN


def insert_raw_user(db, username: str, password: str) -> int:
    """A user as a database from before names were unique regardless of case may hold one."""
    from werkzeug.security import generate_password_hash

    from qrtrack.store import accounts as account_store

    with db.write() as conn:
        return account_store.insert_user(conn, username=username, password_hash=generate_password_hash(password),
                                         is_admin=False, now=1)


def test_old_names_differing_only_in_case_each_log_in_by_their_exact_name_only(db):
    lower = insert_raw_user(db, "sam", "lower's password")
    upper = insert_raw_user(db, "Sam", "upper's password")
    assert accounts.authenticate_user(db, username="sam", password="lower's password").id == lower
    assert accounts.authenticate_user(db, username="Sam", password="upper's password").id == upper
    assert accounts.authenticate_user(db, username="sam", password="upper's password") is None
    assert accounts.authenticate_user(db, username="Sam", password="lower's password") is None
    for password in ("lower's password", "upper's password"):
        assert accounts.authenticate_user(db, username="SAM", password=password) is None
    with pytest.raises(NotFound):
        accounts.find_user(db, "SAM")
    with pytest.raises(Conflict):
        gen_user(db, "sAm")


def test_concurrent_creations_of_one_name_in_two_cases_make_one_user(db, monkeypatch):
    """The second creation waits for the first transaction instead of missing its uncommitted row."""
    from qrtrack.store import accounts as account_store

    inserted, proceed = threading.Event(), threading.Event()
    insert_user = account_store.insert_user

    def insert_then_wait(conn, **values):
        user_id = insert_user(conn, **values)
        if values["username"] == "zed":
            inserted.set()
            proceed.wait(timeout=30)
        return user_id

    monkeypatch.setattr(account_store, "insert_user", insert_then_wait)
    outcomes: dict[str, object] = {}

    def create(name: str) -> None:
        try:
            outcomes[name] = gen_user(db, name)
        except Conflict as error:
            outcomes[name] = error

    first = threading.Thread(target=create, args=("zed",))
    first.start()
    assert inserted.wait(timeout=30)
    second = threading.Thread(target=create, args=("Zed",))
    second.start()
    second.join(timeout=1)  # give it time to check for the name while the first one is not committed
    proceed.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert isinstance(outcomes["zed"], int) and isinstance(outcomes["Zed"], Conflict)
    assert [user.username for user in accounts.list_users(db)] == ["zed"]
