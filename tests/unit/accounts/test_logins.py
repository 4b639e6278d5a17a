"""An account's own SASL logins in a real (private) Redis: unique across accounts, each with its
own password, gone with their account; the passwd-file lines authsync writes for them; the CLI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from txmail.accounts.records import Accounts, Logins, check_password
from txmail.authsync.server import passwd_lines
from txmail.errors import Conflict, NotFound, UsageError
from txmail.store import Keys
from txmail_testing.harness import RedisServer

PASSWORD = "a long enough password"


@pytest.fixture
def logins(client: redis.Redis) -> Logins:
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    store = Logins(client, keys)
    for name, domain in (("acme", "acme.example"), ("other", "other.example")):
        Accounts(store.client, keys).add(name, [domain], PASSWORD)
    return store


def test_an_account_has_logins_of_its_own_each_with_its_password(logins: Logins) -> None:
    first = logins.add("acme", " Orders@Acme.Example ", "first login password")
    logins.add("acme", "billing@acme.example", "second login password")
    assert first.login == "orders@acme.example"  # stored lowercase, as Dovecot compares
    assert [x.login for x in logins.list("acme")] == ["billing@acme.example", "orders@acme.example"]
    assert logins.list("other") == []
    assert logins.account_of("ORDERS@acme.example") == "acme"
    found = logins.get("acme", "Orders@acme.example")
    assert found.password_hash.startswith("{BLF-CRYPT}$2")
    assert check_password("first login password", found.password_hash)
    assert "password" not in repr(found) and "password" not in json.dumps(found.public())


def test_rotating_one_login_keeps_the_others(logins: Logins) -> None:
    logins.add("acme", "orders@acme.example", "first login password")
    logins.add("acme", "billing@acme.example", "second login password")
    logins.set_password("acme", "orders@acme.example", "rotated login password")
    assert check_password(
        "rotated login password", logins.get("acme", "orders@acme.example").password_hash
    )
    assert check_password(
        "second login password", logins.get("acme", "billing@acme.example").password_hash
    )
    assert check_password(PASSWORD, Accounts(logins.client, logins.keys).get("acme").password_hash)


def test_a_login_belongs_to_one_account(logins: Logins) -> None:
    logins.add("acme", "app@shared.example", "first login password")
    with pytest.raises(Conflict, match="belongs to account 'acme'"):
        logins.add("other", "APP@shared.example", "other login password")
    with pytest.raises(Conflict, match="has the login app@shared.example already"):
        logins.add("acme", "app@shared.example", "again login password")
    assert logins.list("other") == []
    assert check_password(
        "first login password", logins.get("acme", "app@shared.example").password_hash
    )


@pytest.mark.parametrize(
    "login",
    ["acme", "other", "no-at-sign", "a@b@acme.example", "x+tag@acme.example", "{x}@acme.example",
     "a b@acme.example", "a:b@acme.example", "app@localhost", "a\n@acme.example"],
)  # fmt: skip
def test_a_login_is_an_email_address_dovecot_accepts(logins: Logins, login: str) -> None:
    """An account name (no '@') is never a login, so a login cannot pose as another account;
    '+', ':', braces and spaces are outside Dovecot's auth_username_chars or the passwd-file."""
    with pytest.raises(UsageError, match="is not allowed"):
        logins.add("acme", login, "a login password")
    assert logins.list("acme") == []


def test_bad_input(logins: Logins) -> None:
    with pytest.raises(NotFound):
        logins.add("nobody", "app@acme.example", "a login password")
    with pytest.raises(UsageError, match="too short"):
        logins.add("acme", "app@acme.example", "short")
    assert logins.account_of("app@acme.example") is None  # nothing claimed by a refused add
    with pytest.raises(NotFound, match="has no login"):
        logins.remove("acme", "app@acme.example")
    with pytest.raises(NotFound, match="has no login"):
        logins.set_password("acme", "app@acme.example", "a login password")


def test_removing_a_login_frees_it(logins: Logins) -> None:
    logins.add("acme", "orders@acme.example", "first login password")
    logins.add("acme", "billing@acme.example", "second login password")
    logins.remove("acme", "Orders@acme.example")
    assert [x.login for x in logins.list("acme")] == ["billing@acme.example"]
    assert logins.account_of("orders@acme.example") is None
    logins.add("other", "orders@acme.example", "other login password")
    assert logins.account_of("orders@acme.example") == "other"


def test_removing_an_account_removes_its_logins(logins: Logins) -> None:
    accounts = Accounts(logins.client, logins.keys)
    logins.add("acme", "orders@acme.example", "first login password")
    accounts.remove("acme")
    assert logins.account_of("orders@acme.example") is None
    assert not logins.client.exists(logins.keys.account_logins("acme"))
    accounts.add("acme", ["acme.example"], PASSWORD)  # a new account of the same name
    assert logins.list("acme") == []


def test_leftovers_of_an_interrupted_add_are_no_login_and_do_not_block(logins: Logins) -> None:
    keys = logins.keys
    # an add cut short after its claim, for an account removed meanwhile
    logins.client.hset(keys.logins, "stale@acme.example", "gone")
    logins.add("acme", "stale@acme.example", "a login password")
    assert logins.account_of("stale@acme.example") == "acme"
    # an entry of the account's own hash the global map does not confirm
    logins.client.hset(keys.account_logins("other"), "stale@acme.example", "{}")
    assert logins.list("other") == []


def test_passwd_lines_map_each_login_to_its_account(logins: Logins) -> None:
    logins.add("acme", "orders@acme.example", "first login password")
    logins.add("other", "app@other.example", "other login password")
    accounts = Accounts(logins.client, logins.keys).all()
    found = logins.of_accounts([a.name for a in accounts])
    lines = passwd_lines(accounts, found).decode().splitlines()
    by_user = {line.split(":", 1)[0]: line for line in lines}
    assert set(by_user) == {"acme", "other", "orders@acme.example", "app@other.example"}
    assert by_user["acme"].endswith("::::::")
    hash_ = logins.get("acme", "orders@acme.example").password_hash
    assert by_user["orders@acme.example"] == f"orders@acme.example:{hash_}::::::user=acme"
    assert by_user["app@other.example"].endswith("::::::user=other")
    # a login whose account is not in the file (removed between two reads) gets no line
    only_acme = passwd_lines([a for a in accounts if a.name == "acme"], found).decode()
    assert "app@other.example" not in only_acme


def test_cli_login_add_list_passwd_remove(
    redis_server: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    from txmail.cli import main

    prefix = f"cli-{uuid.uuid4().hex[:8]}:"
    config = tmp_path / "txmail.toml"
    config.write_text(f'[redis]\nurl = "{redis_server.url}"\nprefix = "{prefix}"\n')
    keys = Keys(prefix)
    Accounts(client, keys).add("acme", ["acme.example"], PASSWORD)
    logins = Logins(client, keys)
    runner = CliRunner()

    def txmail(*args: str, input: str | None = None, code: int = 0) -> str:
        result = runner.invoke(main, ["--config", str(config), "accounts", *args], input=input)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result.output

    out = txmail("login", "add", "acme", "Shop@Acme.Example", "--generate-password")
    assert "login shop@acme.example added to account acme" in out
    generated = out.split("password: ", 1)[1].strip()
    assert check_password(generated, logins.get("acme", "shop@acme.example").password_hash)
    assert generated not in txmail("login", "list", "acme")  # shown once, never again

    txmail(
        "login", "add", "acme", "billing@acme.example", "--password-stdin", input=f"{PASSWORD}\n"
    )
    assert check_password(PASSWORD, logins.get("acme", "billing@acme.example").password_hash)
    listed = txmail("login", "list", "acme").splitlines()
    assert [line.split()[0] for line in listed] == ["billing@acme.example", "shop@acme.example"]
    as_json = json.loads(txmail("login", "list", "acme", "--json"))
    assert [row["login"] for row in as_json] == ["billing@acme.example", "shop@acme.example"]
    assert all(set(row) == {"login", "account", "created_at"} for row in as_json)
    assert json.loads(txmail("show", "acme", "--json"))["logins"] == [
        "billing@acme.example",
        "shop@acme.example",
    ]

    out = txmail(
        "login",
        "passwd",
        "acme",
        "shop@acme.example",
        "--password-stdin",
        input="rotated password 1\n",
    )
    assert "password of login shop@acme.example changed" in out
    assert check_password(
        "rotated password 1", logins.get("acme", "shop@acme.example").password_hash
    )

    out = txmail("login", "remove", "--yes", "acme", "SHOP@acme.example")
    assert "login shop@acme.example removed from account acme" in out
    assert [x.login for x in logins.list("acme")] == ["billing@acme.example"]

    # mistakes are one clear sentence, never a traceback
    assert "exactly one of" in txmail("login", "add", "acme", "x@acme.example", code=2)
    assert "not allowed" in txmail("login", "add", "acme", "acme2", "--generate-password", code=2)
    assert "has no login" in txmail("login", "remove", "--yes", "acme", "shop@acme.example", code=1)
    assert "no account named" in txmail("login", "list", "nobody", code=1)


def test_a_new_account_never_inherits_logins_of_an_old_one_of_its_name(logins: Logins) -> None:
    keys = logins.keys
    # what an add racing the removal of "gone" could leave behind
    logins.client.hset(keys.logins, "old@gone.example", "gone")
    logins.client.hset(keys.account_logins("gone"), "old@gone.example", '{"password_hash": "x"}')
    logins.client.hset(keys.account_logins("gone"), "broken@gone.example", "not json")
    Accounts(logins.client, keys).add("gone", ["gone.example"], PASSWORD)
    assert logins.list("gone") == []
    assert logins.account_of("old@gone.example") is None


def test_an_entry_that_is_not_json_is_no_login(logins: Logins) -> None:
    logins.add("acme", "orders@acme.example", "first login password")
    logins.client.hset(logins.keys.logins, "broken@acme.example", "acme")
    logins.client.hset(logins.keys.account_logins("acme"), "broken@acme.example", "not json")
    assert [x.login for x in logins.list("acme")] == ["orders@acme.example"]
