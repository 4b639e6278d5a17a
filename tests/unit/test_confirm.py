"""Commands that delete ask first: --yes, a y on the terminal, or a refusal that says to add
--yes when nobody can be asked (CliRunner's stdin is no terminal, as in scripts)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from txmail.accounts.records import Accounts, ApiKeys, Logins
from txmail.cli import confirm as confirm_mod
from txmail.store import Keys
from txmail.store.suppressions import Suppressions
from txmail_testing.harness import RedisServer

PASSWORD = "correct horse battery staple 1"

Run = Callable[..., tuple[int, str]]


@pytest.fixture
def setup(redis_server: RedisServer, client: redis.Redis, tmp_path: Path) -> tuple[Keys, Run]:
    keys = Keys(f"confirm-{uuid.uuid4().hex[:8]}:")
    config = tmp_path / "txmail.toml"
    config.write_text(f'[redis]\nurl = "{redis_server.url}"\nprefix = "{keys.prefix}"\n')
    Accounts(client, keys).add("acme", ["acme.example"], PASSWORD)

    def run(*args: str, input: str | None = None) -> tuple[int, str]:
        from txmail.cli import main

        result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
        assert "Traceback" not in result.output
        return result.exit_code, result.output

    return keys, run


def test_without_a_terminal_every_deleting_command_refuses_and_deletes_nothing(
    setup: tuple[Keys, Run], client: redis.Redis
) -> None:
    keys, run = setup
    Logins(client, keys).add("acme", "shop@acme.example", PASSWORD)
    Suppressions(client, keys).add("acme", "bounce", "gone@example.net", "5.1.1")
    key_id, _ = ApiKeys(client, keys).create("acme")
    for args in [
        ("accounts", "remove", "acme"),
        ("accounts", "login", "remove", "acme", "shop@acme.example"),
        ("accounts", "apikey", "acme", "--revoke", key_id),
        ("suppressions", "remove", "--account", "acme", "--list", "bounce", "gone@example.net"),
        ("secrets", "rotate", "tracking", "--revoke"),
    ]:
        code, output = run(*args)
        assert code == 2, (args, output)
        assert "standard input is not a terminal" in output and "add --yes" in output, output
    assert Accounts(client, keys).get("acme").name == "acme"
    assert [x.login for x in Logins(client, keys).list("acme")] == ["shop@acme.example"]
    assert [row["id"] for row in ApiKeys(client, keys).list("acme")] == [key_id]
    assert len(Suppressions(client, keys).list("acme", "bounce")) == 1
    assert not client.hexists(keys.secret("tracking"), "rotated_at")  # never rotated

    assert (
        run(
            "suppressions",
            "remove",
            "--yes",
            "--account",
            "acme",
            "--list",
            "bounce",
            "gone@example.net",
        )[0]
        == 0
    )
    assert run("accounts", "apikey", "acme", "--revoke", key_id, "-y")[0] == 0
    assert run("accounts", "login", "remove", "acme", "shop@acme.example", "--yes")[0] == 0
    assert run("accounts", "remove", "acme", "--yes") == (0, "account acme removed\n")
    assert not client.exists(keys.account("acme"))


def test_a_missing_thing_is_named_before_anything_is_asked(setup: tuple[Keys, Run]) -> None:
    _, run = setup
    code, output = run("accounts", "remove", "nobody")
    assert code == 1 and "nobody" in output and "--yes" not in output
    code, output = run("domains", "remove", "none.example")
    assert code == 1 and "none.example" in output and "--yes" not in output


def test_on_a_terminal_the_person_is_asked(
    setup: tuple[Keys, Run], client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, run = setup
    monkeypatch.setattr(confirm_mod, "interactive", lambda: True)
    code, output = run("accounts", "remove", "acme", input="n\n")
    assert code == 1 and "Remove account acme with its logins, and release its domains?" in output
    assert client.exists(keys.account("acme"))
    code, output = run("accounts", "remove", "acme", input="y\n")
    assert code == 0 and "account acme removed" in output
    assert not client.exists(keys.account("acme"))
