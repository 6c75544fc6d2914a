"""API keys: shown once, hashed at rest, constant-time checks, revocation, disabled owners."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from qrtrack import accounts, keys
from qrtrack.errors import NotFound, Unauthorized, ValidationError

from .conftest import gen_user


def test_issued_key_has_the_documented_format_and_is_stored_only_as_a_hash(db, alice):
    raw_key, key_id = keys.issue_api_key(db, user_id=alice, name="zapier")
    assert re.fullmatch(r"qrt_[0-9a-f]{40}", raw_key)
    with db.read() as conn:
        row = conn.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": key_id}).mappings().one()
    assert raw_key not in " ".join(str(value) for value in row.values())
    assert row["prefix"] == raw_key[:12] and row["key_hash"] == keys.hash_api_key(raw_key)


def test_valid_key_authenticates_and_notes_its_use(db, alice):
    raw_key, key_id = keys.issue_api_key(db, user_id=alice, name="ci")
    principal = keys.authenticate_api_key(db, raw_key)
    assert (principal.key_id, principal.user_id, principal.key_name) == (key_id, alice, "ci")
    assert keys.list_api_keys(db, user_id=alice)[0].last_used_at is not None


@pytest.mark.parametrize("presented", [None, "", "qrt_", "qrt_" + "0" * 40, "nope", "qrt_" + "a" * 500])
def test_unknown_or_malformed_keys_are_refused(db, alice, presented):
    keys.issue_api_key(db, user_id=alice, name="real")
    with pytest.raises(Unauthorized):
        keys.authenticate_api_key(db, presented)


def test_revoked_key_stops_at_once_and_revoking_twice_is_not_found(db, alice):
    raw_key, key_id = keys.issue_api_key(db, user_id=alice, name="temp")
    keys.revoke_api_key(db, user_id=alice, key_id=key_id)
    with pytest.raises(Unauthorized):
        keys.authenticate_api_key(db, raw_key)
    with pytest.raises(NotFound):
        keys.revoke_api_key(db, user_id=alice, key_id=key_id)


def test_users_cannot_revoke_each_others_keys(db, alice):
    bob = gen_user(db, "bob")
    _, key_id = keys.issue_api_key(db, user_id=alice, name="mine")
    with pytest.raises(NotFound):
        keys.revoke_api_key(db, user_id=bob, key_id=key_id)


def test_disabled_users_keys_stop_working(db, alice):
    gen_user(db, "root", is_admin=True)
    raw_key, _ = keys.issue_api_key(db, user_id=alice, name="k")
    accounts.set_user_active(db, user_id=alice, is_active=False)
    with pytest.raises(Unauthorized):
        keys.authenticate_api_key(db, raw_key)


def test_console_authenticates_by_key_id_only_for_the_owner(db, alice):
    bob = gen_user(db, "bob")
    _, key_id = keys.issue_api_key(db, user_id=alice, name="k")
    assert keys.authenticate_key_id(db, key_id=key_id, user_id=alice).user_id == alice
    with pytest.raises(Unauthorized):
        keys.authenticate_key_id(db, key_id=key_id, user_id=bob)


def test_key_needs_a_name(db, alice):
    with pytest.raises(ValidationError):
        keys.issue_api_key(db, user_id=alice, name="  ")
