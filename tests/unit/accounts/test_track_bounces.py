"""Bounce tracking per message, sender address, sender domain and account (seed 004: "applied
to all e-mails with this sender", and the REST call's `trackbounces`)."""

from __future__ import annotations

import uuid

import pytest
import redis

from txmail.accounts.cache import AccountCache
from txmail.accounts.records import MAX_SENDER_TRACK_BOUNCES, Account, Accounts
from txmail.errors import UsageError
from txmail.store import Keys


@pytest.fixture
def accounts(client: redis.Redis) -> Accounts:
    store = Accounts(client, Keys(f"test-{uuid.uuid4().hex[:8]}:"))
    store.add("acme", ["acme.example", "mail.acme.example"], "a long enough password")
    store.add("other", ["other.example"], "a long enough password")
    return store


def test_precedence_message_then_address_then_domain_then_account(accounts: Accounts) -> None:
    accounts.update_settings("acme", {"track_bounces": False})
    accounts.set_sender_track_bounces("acme", "acme.example", True)
    accounts.set_sender_track_bounces("acme", "Noreply@ACME.example", False)
    acme = accounts.get("acme")
    assert acme.sender_track_bounces == {"acme.example": True, "noreply@acme.example": False}
    assert acme.tracks_bounces("app@acme.example") is True  # the domain's
    assert acme.tracks_bounces("<noreply@acme.example>") is False  # the address's
    assert acme.tracks_bounces("noreply@acme.example", for_message=True) is True  # the message's
    assert acme.tracks_bounces("app@mail.acme.example") is False  # the account's
    assert acme.tracks_bounces("") is False  # MAIL FROM:<>: the account's
    accounts.set_sender_track_bounces("acme", "acme.example", None)
    assert accounts.get("acme").tracks_bounces("app@acme.example") is False


@pytest.mark.parametrize("sender", ["app@other.example", "other.example", "@acme.example", ""])
def test_only_the_accounts_own_senders(accounts: Accounts, sender: str) -> None:
    with pytest.raises(UsageError):
        accounts.set_sender_track_bounces("acme", sender, False)
    assert accounts.get("other").sender_track_bounces == {}


def test_entries_are_bounded(accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("txmail.accounts.records.MAX_SENDER_TRACK_BOUNCES", 2)
    accounts.set_sender_track_bounces("acme", "a@acme.example", False)
    accounts.set_sender_track_bounces("acme", "b@acme.example", False)
    with pytest.raises(UsageError, match="unset some first"):
        accounts.set_sender_track_bounces("acme", "c@acme.example", False)
    accounts.set_sender_track_bounces("acme", "b@acme.example", True)  # a change is fine
    assert MAX_SENDER_TRACK_BOUNCES == 1000


def test_the_account_cache_sees_a_change(accounts: Accounts) -> None:
    cache: AccountCache[Account] = AccountCache(accounts)
    assert cache.find("acme") is not None
    accounts.set_sender_track_bounces("acme", "acme.example", False)
    found = cache.find("acme")
    assert found is not None and found.tracks_bounces("x@acme.example") is False


def test_accounts_show_lists_them(accounts: Accounts) -> None:
    accounts.set_sender_track_bounces("acme", "acme.example", False)
    assert accounts.get("acme").public()["trackbounces"] == {"acme.example": False}
