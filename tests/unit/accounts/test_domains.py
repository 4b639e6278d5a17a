"""Domains in a real (private) Redis: ownership shared with accounts, return-path domains."""

from __future__ import annotations

import uuid

import pytest

from txmail.accounts.domains import RSA, DkimKey, Domain, Domains
from txmail.accounts.records import Accounts
from txmail.config import Settings
from txmail.errors import Conflict, NotFound
from txmail.store import Keys
from txmail_testing.harness import RedisServer

SETTINGS = Settings(bounce_domain="bounces.example.test")
KEY = DkimKey("s1", RSA, "/nonexistent/s1.pem", "AAAA")


@pytest.fixture
def domains(redis_server: RedisServer) -> Domains:
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    store = Domains(redis_server.client(), keys)
    for name, domain in (("acme", "acme.example"), ("other", "other.example")):
        Accounts(store.client, keys).add(name, [domain], "a long enough password")
    return store


def new(name: str, account: str = "acme", **kw: object) -> Domain:
    return Domain(name=name, account=account, dkim=(KEY,), **kw)  # type: ignore[arg-type]


def test_add_claims_the_domain_for_the_account(domains: Domains) -> None:
    added = domains.add(new("Mail.Acme.Example", return_path="mta.mail.acme.example"))
    assert added.name == "mail.acme.example" and added.created_at > 0
    assert domains.accounts.owner_of("mail.acme.example") == "acme"
    assert "mail.acme.example" in domains.accounts.get("acme").domains
    assert domains.get("mail.acme.example").dkim == (KEY,)


def test_a_domain_the_account_already_owns_can_be_set_up(domains: Domains) -> None:
    domains.add(new("acme.example"))
    assert domains.accounts.get("acme").domains == ["acme.example"]


def test_another_accounts_domain_is_a_conflict(domains: Domains) -> None:
    with pytest.raises(Conflict, match="belongs to account 'other'"):
        domains.add(new("other.example", account="acme"))
    assert domains.find("other.example") is None


def test_set_up_twice_is_a_conflict(domains: Domains) -> None:
    domains.add(new("acme.example"))
    with pytest.raises(Conflict, match="set up already"):
        domains.add(new("acme.example"))


def test_a_return_path_domain_serves_one_domain(domains: Domains) -> None:
    domains.add(new("acme.example", return_path="mta.shared.example"))
    with pytest.raises(Conflict, match="serves acme.example"):
        domains.add(new("new.example", account="other", return_path="mta.shared.example"))
    # the failed add took nothing
    assert domains.accounts.owner_of("new.example") is None
    with pytest.raises(Conflict, match="subdomain"):
        domains.add(new("self.example", return_path="self.example"))


def test_return_path_domain_falls_back_to_the_bounce_domain(domains: Domains) -> None:
    domains.add(new("acme.example", return_path="mta.acme.example"))
    assert domains.return_path_domain("acme.example", SETTINGS) == "bounces.example.test"
    domains.update("acme.example", return_path_active=True)
    assert domains.return_path_domain("ACME.example", SETTINGS) == "mta.acme.example"
    assert domains.return_path_domain("unknown.example", SETTINGS) == "bounces.example.test"
    domains.add(new("norp.example", return_path=""))
    assert domains.return_path_domain("norp.example", SETTINGS) == "bounces.example.test"


def test_serves_return_path(domains: Domains) -> None:
    domains.add(new("acme.example", return_path="mta.acme.example"))
    assert domains.serves_return_path("MTA.acme.example.")
    assert not domains.serves_return_path("acme.example")
    assert not domains.serves_return_path("mta.other.example")


def test_list_and_remove(domains: Domains) -> None:
    domains.add(new("b.acme.example", return_path="mta.b.acme.example"))
    domains.add(new("a.acme.example"))
    domains.add(new("other.example", account="other"))
    assert [d.name for d in domains.list()] == ["a.acme.example", "b.acme.example", "other.example"]
    assert [d.name for d in domains.list("other")] == ["other.example"]
    removed = domains.remove("b.acme.example")
    assert removed.dkim == (KEY,)
    assert not domains.serves_return_path("mta.b.acme.example")
    assert domains.accounts.owner_of("b.acme.example") is None
    assert "b.acme.example" not in domains.accounts.get("acme").domains
    with pytest.raises(NotFound):
        domains.get("b.acme.example")


def test_records_of_a_removed_account_count_as_absent(domains: Domains) -> None:
    domains.add(
        new(
            "other.example",
            account="other",
            return_path="mta.other.example",
            return_path_active=True,
            dkim_active=True,
        )
    )
    domains.accounts.remove("other")
    assert domains.find("other.example") is None
    assert not domains.serves_return_path("mta.other.example")
    assert domains.return_path_domain("other.example", SETTINGS) == "bounces.example.test"
    # the domain and its return-path domain can be set up again by someone else
    domains.add(new("other.example", account="acme", return_path="mta.other.example"))
    assert domains.get("other.example").account == "acme"


def test_a_removed_accounts_webhook_secret_goes_with_it(domains: Domains) -> None:
    """An account made later under the same name must not sign its webhooks with the secret
    the old holder was given (`webhooks rotate-secret`): it starts from the derived one."""
    from txmail.store.secrets import read_webhook_secret, store_webhook_secret
    from txmail.webhooks import signing

    client, keys = domains.client, domains.keys
    known = b"k" * 32
    store_webhook_secret(client, keys, "other", known, b"p" * 32, until=2e9)
    assert read_webhook_secret(client, keys, "other").current == known
    domains.accounts.remove("other")
    assert not client.exists(keys.webhook_secret("other"))
    Accounts(client, keys).add("other", ["other.example"], "a long enough password")
    webhook_key = b"w" * 32
    stored = read_webhook_secret(client, keys, "other")
    assert signing.account_secrets(webhook_key, "other", stored, 1.0) == (
        signing.account_secret(webhook_key, "other"),
    )


def test_a_new_account_of_a_removed_ones_name_starts_its_event_totals_at_zero(
    domains: Domains,
) -> None:
    """PREFIX {ACCOUNT}:counts:all (txmail_events_total, written by event_record.lua) has no
    TTL: it goes with the account, or a new account of the same name would inherit it."""
    client, keys = domains.client, domains.keys
    client.hincrby(keys.event_totals("other"), "delivery", 41)
    domains.accounts.remove("other")
    assert not client.exists(keys.event_totals("other"))
    Accounts(client, keys).add("other", ["other.example"], "a long enough password")
    assert client.hgetall(keys.event_totals("other")) == {}
    assert not client.exists(keys.event_totals("other"))


def test_a_removed_accounts_kept_webhook_posts_go_with_it(domains: Domains) -> None:
    """The answers its endpoint gave are the old holder's: a new account of the same name
    does not see them on its webhooks page."""
    from txmail.webhook_posts import keep, make_post, recent

    client, keys = domains.client, domains.keys
    pipe = client.pipeline(transaction=False)
    keep(pipe, keys, "other", make_post(1.0, 0.1, 200, "", ["1-0"], ["evt_x"], "ok", "msg_1"))
    pipe.execute()
    assert [p.answer for p in recent(client, keys, "other")] == ["ok"]
    domains.accounts.remove("other")
    assert not client.exists(keys.webhook_posts("other"))
