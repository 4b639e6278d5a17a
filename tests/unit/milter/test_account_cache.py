"""The milter's account cache: kept while subscribed to account changes, dropped on a change."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from txmail.accounts.cache import AccountCache
from txmail.accounts.records import Accounts
from txmail.store import Keys
from txmail_testing.harness import wait_for


@pytest.fixture
def accounts(client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Accounts:
    monkeypatch.setattr("txmail.accounts.records.BCRYPT_ROUNDS", 4)
    store = Accounts(client, Keys(prefix))
    store.add("acme", ["acme.example"], "a-long-password-1")
    return store


@pytest.fixture
def cache(accounts: Accounts) -> Iterator[AccountCache]:
    kept = AccountCache(accounts)
    stop = threading.Event()
    thread = threading.Thread(target=kept.listen, args=(stop,), daemon=True)
    thread.start()
    wait_for(kept.live.is_set, 10, what="the subscription")
    yield kept
    stop.set()
    thread.join(5)


def reads(accounts: Accounts, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    find = accounts.find

    def counting(name: str):  # type: ignore[no-untyped-def]
        seen.append(name)
        return find(name)

    monkeypatch.setattr(accounts, "find", counting)
    return seen


def test_kept_until_the_account_changes(
    cache: AccountCache, accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = reads(accounts, monkeypatch)
    assert cache.find("acme").settings["max_recipients"] == 20  # type: ignore[union-attr]
    assert cache.find("acme") is not None
    assert seen == ["acme"]
    accounts.update_settings("acme", {"max_recipients": 5})
    wait_for(
        lambda: cache.find("acme").settings["max_recipients"] == 5,  # type: ignore[union-attr]
        10,
        what="the change to be seen",
    )
    accounts.suspend("acme", "unpaid")
    wait_for(
        lambda: cache.find("acme").suspended,
        10,  # type: ignore[union-attr]
        what="the suspension to be seen",
    )


def test_unknown_accounts_are_kept_too(cache: AccountCache, accounts: Accounts) -> None:
    assert cache.find("later") is None
    accounts.add("later", ["later.example"], "a-long-password-2")
    wait_for(lambda: cache.find("later") is not None, 10, what="the new account")


def test_nothing_kept_without_the_subscription(
    accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = AccountCache(accounts)  # listener never started
    seen = reads(accounts, monkeypatch)
    cache.find("acme")
    cache.find("acme")
    assert seen == ["acme", "acme"]
