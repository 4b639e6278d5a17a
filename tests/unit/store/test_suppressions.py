"""Suppression lists in a real (private) Redis: one round trip, expiry, cap, import/export."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from txmail.errors import UsageError
from txmail.store import Keys
from txmail.store.suppressions import Suppressions
from txmail_testing.harness import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A Redis client that counts the commands sent through it (pipelines not included)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if callable(attribute) and name not in ("pipeline", "register_script"):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return attribute(*args, **kwargs)

            return counted
        return attribute


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def suppressions(redis_server: RedisServer, clock: Clock) -> Suppressions:
    return Suppressions(
        Counting(redis_server.client()), Keys(f"t-{uuid.uuid4().hex[:8]}:"), cap=5, clock=clock
    )


def test_check_many_recipients_in_one_round_trip(suppressions: Suppressions) -> None:
    suppressions.add("acme", "bounce", "Gone@Example.net", "5.1.1 user unknown", event_id="evt_1")
    suppressions.add("acme", "unsubscribe", "left@example.net", "clicked unsubscribe")
    counting = suppressions.client
    counting.calls.clear()  # type: ignore[attr-defined]
    found = suppressions.check(
        "acme",
        ["gone@EXAMPLE.net", "left@example.net", "ok@example.net", "not an address"],
        ("bounce", "unsubscribe"),
    )
    assert counting.calls == ["hmget"]  # type: ignore[attr-defined]
    assert set(found) == {"gone@EXAMPLE.net", "left@example.net"}
    entry = found["gone@EXAMPLE.net"]
    assert (entry.list, entry.recipient, entry.reason, entry.event_id) == (
        "bounce",
        "gone@example.net",
        "5.1.1 user unknown",
        "evt_1",
    )
    assert entry.created_at == 1_800_000_000.0


def test_only_the_asked_lists_count(suppressions: Suppressions) -> None:
    suppressions.add("acme", "unsubscribe", "left@example.net", "asked")
    assert suppressions.check("acme", ["left@example.net"], ("bounce",)) == {}
    assert suppressions.check("acme", ["left@example.net"], ()) == {}
    assert suppressions.check("other", ["left@example.net"], ("unsubscribe",)) == {}
    with pytest.raises(UsageError, match="unknown suppression list"):
        suppressions.check("acme", ["left@example.net"], ("complaint",))


def test_first_list_asked_wins(suppressions: Suppressions) -> None:
    suppressions.add("acme", "unsubscribe", "both@example.net", "asked")
    suppressions.add("acme", "bounce", "both@example.net", "bounced")
    assert (
        suppressions.check("acme", ["both@example.net"], ("unsubscribe", "bounce"))[
            "both@example.net"
        ].list
        == "unsubscribe"
    )


def test_entries_expire(suppressions: Suppressions, clock: Clock) -> None:
    suppressions.add(
        "acme", "bounce", "soft@example.net", "mailbox full", expires_at=clock.now + 60
    )
    assert suppressions.check("acme", ["soft@example.net"])
    clock.now += 61
    assert suppressions.check("acme", ["soft@example.net"]) == {}
    assert suppressions.list("acme") == []
    suppressions.add("acme", "bounce", "next@example.net", "x")  # purges the expired entry
    assert suppressions.count("acme") == 1


def test_cap_drops_the_oldest(suppressions: Suppressions, clock: Clock) -> None:
    for n in range(7):
        clock.now += 1
        suppressions.add("acme", "bounce", f"u{n}@example.net", "x")
    assert suppressions.count("acme") == 5
    assert [e.recipient for e in suppressions.list("acme")] == [
        f"u{n}@example.net" for n in (6, 5, 4, 3, 2)
    ]
    assert suppressions.check("acme", ["u0@example.net", "u1@example.net"]) == {}


def test_remove(suppressions: Suppressions) -> None:
    suppressions.add("acme", "bounce", "gone@example.net", "x")
    assert suppressions.remove("acme", "bounce", "GONE@example.net")
    assert not suppressions.remove("acme", "bounce", "gone@example.net")
    assert suppressions.check("acme", ["gone@example.net"]) == {}
    assert suppressions.count("acme") == 0


def test_list_filters_by_list(suppressions: Suppressions, clock: Clock) -> None:
    suppressions.add("acme", "bounce", "b@example.net", "x")
    clock.now += 1
    suppressions.add("acme", "unsubscribe", "u@example.net", "y")
    assert [e.recipient for e in suppressions.list("acme")] == ["u@example.net", "b@example.net"]
    assert [e.recipient for e in suppressions.list("acme", "bounce")] == ["b@example.net"]
    assert len(suppressions.list("acme", limit=1)) == 1


def test_export_then_import(
    suppressions: Suppressions, redis_server: RedisServer, clock: Clock
) -> None:
    suppressions.add(
        "acme", "bounce", "b@example.net", "5.1.1", event_id="evt_9", expires_at=clock.now + 3600
    )
    suppressions.add("acme", "unsubscribe", "u@example.net", "asked")
    lines = list(suppressions.export("acme"))
    target = Suppressions(redis_server.client(), Keys(f"t-{uuid.uuid4().hex[:8]}:"), clock=clock)
    assert target.import_lines("acme", lines) == 2
    assert [e.public() for e in target.list("acme")] == [
        e.public() for e in suppressions.list("acme")
    ]


def test_import_bare_addresses_and_bad_lines(suppressions: Suppressions) -> None:
    with pytest.raises(UsageError, match="unknown suppression list"):
        suppressions.import_lines("acme", ["a@example.net"])
    assert (
        suppressions.import_lines(
            "acme", ["# comment", "a@example.net", "", "B@example.net"], default_list="unsubscribe"
        )
        == 2
    )
    assert set(suppressions.check("acme", ["a@example.net", "b@example.net"])) == {
        "a@example.net",
        "b@example.net",
    }
    with pytest.raises(UsageError, match="line 2"):
        suppressions.import_lines(
            "acme", ["c@example.net", "not an address"], default_list="bounce"
        )
    assert suppressions.check("acme", ["c@example.net"]) == {}  # nothing of a bad file


def test_bad_input(suppressions: Suppressions) -> None:
    with pytest.raises(UsageError):
        suppressions.add("acme", "bounce", "no-at-sign", "x")
    with pytest.raises(UsageError):
        suppressions.add("acme", "spam", "a@example.net", "x")


def test_cli_add_list_export_import_remove(redis_server: RedisServer, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from txmail.accounts.records import Accounts
    from txmail.cli import main

    prefix = f"cli-{uuid.uuid4().hex[:8]}:"
    config = tmp_path / "txmail.toml"
    config.write_text(f'[redis]\nurl = "{redis_server.url}"\nprefix = "{prefix}"\n')
    Accounts(redis_server.client(), Keys(prefix)).add(
        "acme", ["acme.example"], "a long enough password"
    )
    runner = CliRunner()

    def txmail(*args: str, input: str | None = None) -> str:
        result = runner.invoke(main, ["--config", str(config), "suppressions", *args], input=input)
        assert result.exit_code == 0, result.output
        return result.output

    txmail("add", "--account", "acme", "--list", "bounce", "Gone@example.net", "--reason", "5.1.1")
    txmail(
        "add",
        "--account",
        "acme",
        "--list",
        "unsubscribe",
        "left@example.net",
        "--expires-in",
        "30",
    )
    listed = json.loads(txmail("list", "--account", "acme", "--json"))
    assert {(e["list"], e["recipient"]) for e in listed} == {
        ("bounce", "gone@example.net"),
        ("unsubscribe", "left@example.net"),
    }
    exported = txmail("export", "--account", "acme", "--list", "bounce")
    assert txmail(
        "remove", "--yes", "--account", "acme", "--list", "bounce", "gone@example.net"
    ).startswith("removed")
    assert "imported 1 entries" in txmail("import", "--account", "acme", input=exported)
    assert "imported 2 entries" in txmail(
        "import", "--account", "acme", "--list", "bounce", input="a@example.net\nb@example.net\n"
    )
    assert len(json.loads(txmail("list", "--account", "acme", "--list", "bounce", "--json"))) == 3
    missing = runner.invoke(
        main, ["--config", str(config), "suppressions", "list", "--account", "nobody"]
    )
    assert missing.exit_code == 1 and "no account named 'nobody'" in missing.output
