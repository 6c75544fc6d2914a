"""API keys: shown once, hashed at rest, constant-time checks, revocation, disabled owners."""
from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import text

from qrtrack import accounts, keys
from qrtrack.errors import NotFound, Unauthorized, ValidationError
from qrtrack.store import keys as key_store

from .conftest import gen_user

pytestmark = pytest.mark.postgresql


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


def api_call(user_id: int, number: int) -> dict:
    """The number-th call, one second apart in tens, so ties in ts are settled by id."""
    return {"user_id": user_id, "key_id": None, "key_name": "k", "ts": 1_700_000_000 + number // 10,
            "method": "GET", "path": f"/api.php?call={number}", "status": 200, "duration_ms": 1, "source": "api"}


def logged_call_numbers(db, user_id: int) -> list[int]:
    with db.read() as conn:
        rows = key_store.list_api_calls(conn, user_id, limit=10 * keys.API_CALLS_KEPT_PER_USER)
    return sorted(int(row.path.rsplit("=", 1)[1]) for row in rows)


def test_call_log_keeps_each_users_newest_calls_and_prunes_the_rest(db, alice):
    bob, carol = gen_user(db, "bob"), gen_user(db, "carol")
    kept, interval = keys.API_CALLS_KEPT_PER_USER, keys.API_CALLS_PRUNE_INTERVAL
    with db.write() as conn:  # carol's log is over the bound but she makes no call, so nothing prunes it
        for number in range(kept + 50):
            key_store.insert_api_call(conn, api_call(carol, number))
    recorded = kept + 3 * interval
    for number in range(recorded):
        keys.record_api_call(db, api_call(alice, number))
        if number % 100 == 0:
            keys.record_api_call(db, api_call(bob, number))

    alice_calls = logged_call_numbers(db, alice)
    assert kept <= len(alice_calls) <= kept + interval
    assert alice_calls == list(range(recorded - len(alice_calls), recorded))  # the newest, none missing
    assert logged_call_numbers(db, bob) == list(range(0, recorded, 100))
    assert logged_call_numbers(db, carol) == list(range(kept + 50))
    assert [call.path for call in keys.list_recent_api_calls(db, user_id=alice, limit=2)] == [
        f"/api.php?call={recorded - 1}", f"/api.php?call={recorded - 2}"]


@pytest.mark.parametrize("name", ["nul\x00byte", "bell\x07", "delete\x7f", "c1\x9b"])
def test_key_name_with_control_characters_is_refused(db, alice, name):
    with pytest.raises(ValidationError, match="control"):
        keys.issue_api_key(db, user_id=alice, name=name)
    assert keys.list_api_keys(db, user_id=alice) == []


# --- the "Generate key" form's token ------------------------------------------------------------------

def test_a_form_token_makes_one_key_and_sending_it_again_names_that_key(db, alice):
    token = keys.new_form_token()
    _, key_id = keys.issue_api_key(db, user_id=alice, name="ci", form_token=token)
    with pytest.raises(keys.FormAlreadySent, match="already generated") as resent:
        keys.issue_api_key(db, user_id=alice, name="ci", form_token=token)
    assert resent.value.key_id == key_id
    assert [key.id for key in keys.list_api_keys(db, user_id=alice)] == [key_id]
    keys.issue_api_key(db, user_id=alice, name="ci", form_token=keys.new_form_token())
    keys.issue_api_key(db, user_id=alice, name="no form")
    keys.issue_api_key(db, user_id=alice, name="no form either", form_token="")
    assert len(keys.list_api_keys(db, user_id=alice)) == 4


def test_posts_racing_with_one_form_token_make_one_key(db, alice):
    token, barrier = keys.new_form_token(), threading.Barrier(4)
    made: list[int] = []
    resent: list[int] = []

    def post() -> None:
        barrier.wait(timeout=10)
        try:
            made.append(keys.issue_api_key(db, user_id=alice, name="ci", form_token=token)[1])
        except keys.FormAlreadySent as error:
            resent.append(error.key_id)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(made) == 1 and resent == made * 3
    assert [key.id for key in keys.list_api_keys(db, user_id=alice)] == made


def test_the_database_refuses_a_second_key_for_a_form_even_when_both_posts_passed_the_check(db, alice,
                                                                                        monkeypatch):
    """What PostgreSQL allows when two posts check before either commits: the unique index still holds."""
    real_lookup, blind_checks = key_store.get_key_id_by_form_token, [None, None]

    def lookup(conn, **kwargs):
        return blind_checks.pop() if blind_checks else real_lookup(conn, **kwargs)

    monkeypatch.setattr(key_store, "get_key_id_by_form_token", lookup)
    token = keys.new_form_token()
    _, key_id = keys.issue_api_key(db, user_id=alice, name="ci", form_token=token)
    with pytest.raises(keys.FormAlreadySent) as resent:
        keys.issue_api_key(db, user_id=alice, name="ci", form_token=token)
    assert resent.value.key_id == key_id
    assert [key.id for key in keys.list_api_keys(db, user_id=alice)] == [key_id]


def test_one_form_token_of_two_users_is_two_keys(db, alice):
    token = keys.new_form_token()
    keys.issue_api_key(db, user_id=alice, name="ci", form_token=token)
    bob = gen_user(db, "bob")
    keys.issue_api_key(db, user_id=bob, name="ci", form_token=token)
    assert len(keys.list_api_keys(db, user_id=bob)) == 1


@pytest.mark.parametrize("token", ["short", "x" * 65, "has space in it ok", "nul\x00" * 5, 12345678901234567])
def test_a_damaged_form_token_is_refused_and_makes_no_key(db, alice, token):
    with pytest.raises(ValidationError, match="reload the page"):
        keys.issue_api_key(db, user_id=alice, name="ci", form_token=token)
    assert keys.list_api_keys(db, user_id=alice) == []
