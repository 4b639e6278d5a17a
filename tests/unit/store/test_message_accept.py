"""message_accept.lua through Messages.accept(), against a real (private) Redis: the record,
the tag counts and the count against the sending limits of one accepted message in one call,
each branch of the script, and the same counts as policy_commit.lua and tags_count.lua give."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from txmail.accounts.limits import Windows
from txmail.accounts.records import Accounts
from txmail.accounts.usage import check_keys, commit_call, count_accepted
from txmail.config import Settings
from txmail.policyd import decide
from txmail.stats import OTHER, tags_count_call
from txmail.stats import count_accepted as count_tags
from txmail.store import Keys, scripts
from txmail.store.counters import count_message
from txmail.store.messages import Counting, MessageRecord, Messages

_prefixes = itertools.count()
TTL = 3600


@dataclasses.dataclass
class Node:
    client: redis.Redis
    keys: Keys
    accounts: Accounts
    messages: Messages
    settings: Settings


@pytest.fixture
def node(client: redis.Redis) -> Iterator[Node]:
    keys = Keys(f"accept{next(_prefixes)}:")
    accounts = Accounts(client, keys)
    yield Node(client, keys, accounts, Messages(client, keys, TTL), Settings())
    found = list(client.scan_iter(f"{keys.prefix}*"))
    if found:
        client.delete(*found)


def add_account(node: Node, name: str = "acme", **settings: Any) -> None:
    import txmail.accounts.records as records

    rounds, records.BCRYPT_ROUNDS = records.BCRYPT_ROUNDS, 4  # speed, not security
    try:
        node.accounts.add(name, [f"{name}.example"], "a-good-password", settings=settings)
    finally:
        records.BCRYPT_ROUNDS = rounds


def record(queue_id: str, tags: list[str] | None = None, **fields: Any) -> MessageRecord:
    return MessageRecord(
        queue_id=queue_id,
        account="acme",
        envelope_sender="app@acme.example",
        recipients=["u@example.net", "v@example.net"],
        size=1234,
        header_message_id=f"<{queue_id}@acme.example>",
        tags=tags or [],
        **fields,
    )


def accept(
    node: Node, message: MessageRecord, count: bool = True, tags_per_day: int = 100
) -> list[int]:
    day_key, day_args = tags_count_call(
        node.keys, message.account, message.accepted_at, 400, tags_per_day
    )
    commit = (
        commit_call(
            node.settings,
            node.keys,
            message.account,
            message.queue_id,
            len(message.recipients),
            message.size,
        )
        if count
        else None
    )
    return node.messages.accept(
        message,
        Counting(day_key, day_args, commit),
        also=lambda pipe: count_message(pipe, node.keys, "accepted"),
    )


def usage(node: Node, account: str = "acme") -> list[dict[str, str]]:
    windows = Windows.at(time.time())
    return [node.client.hgetall(key) for key in check_keys(node.keys, account, windows)[:3]]


def hold(node: Node, queue_id: str, recipients: int, size: int) -> None:
    """policy_check.lua's hold of a message at end of data, as policyd takes it."""
    raw = node.client.hgetall(node.keys.account("acme"))
    account = node.accounts.get("acme")
    assert account is not None
    state = decide.AccountState(
        "acme", account.status, account.suspended_reason, raw["created_at"], account.settings
    )
    request = decide.Request(decide.END_OF_MESSAGE, "acme", queue_id, "i", "", recipients, size)
    check = decide.plan(request, state, time.time())
    assert isinstance(check, decide.Check)
    answer = scripts.get(node.client, "policy_check")(
        keys=check_keys(node.keys, "acme", check.windows),
        args=check.script_args(time.time() + 120, ""),
    )
    assert answer[0] == 0


def test_the_record_and_the_keys_outside_the_slot_in_one_call(node: Node) -> None:
    add_account(node)
    message = record("4A1", tags=["order"])
    assert accept(node, message) == [0, 1, 2, 1234, 0]
    assert node.messages.get("4A1") == message
    assert 0 < node.client.ttl(node.keys.message("acme", "4A1")) <= TTL
    assert 0 < node.client.ttl(node.keys.queue("4A1")) <= TTL
    assert node.client.get(node.keys.header_message_id("<4A1@acme.example>")) == "4A1"
    assert node.client.hget(node.keys.message_stats, "accepted") == "1"


def test_a_copy_leaves_the_header_message_id_to_its_parent(node: Node) -> None:
    add_account(node)
    accept(node, record("4A2", parent="4A1"))
    assert node.messages.get("4A2") is not None
    assert node.client.get(node.keys.header_message_id("<4A2@acme.example>")) is None


def test_without_a_hold_the_milters_figures_are_counted(node: Node) -> None:
    add_account(node, warmup=False)
    assert accept(node, record("4B1")) == [0, 1, 2, 1234, 0]
    for bucket in usage(node):
        assert bucket == {"m": "1", "r": "2", "b": "1234"}
    assert all(
        0 < node.client.ttl(key) <= 90000
        for key in check_keys(node.keys, "acme", Windows.at(time.time()))[:3]
    )


def test_a_hold_becomes_counted_usage_and_is_gone(node: Node) -> None:
    add_account(node, warmup=False)
    hold(node, "4C1", 3, 5000)
    assert node.client.hget(node.keys.holds("acme"), "*r") == "3"
    assert accept(node, record("4C1")) == [0, 1, 3, 5000, 1]  # the hold's figures, not 2/1234
    assert usage(node)[2] == {"m": "1", "r": "3", "b": "5000"}
    assert node.client.hget(node.keys.holds("acme"), "4C1") is None
    assert node.client.hmget(node.keys.holds("acme"), "*m", "*r", "*b") == ["0", "0", "0"]
    assert node.client.zscore(node.keys.holds_expiry("acme"), "4C1") is None


def test_not_counting_leaves_limits_and_holds_alone(node: Node) -> None:
    add_account(node)
    hold(node, "4D1", 1, 100)
    assert accept(node, record("4D1", tags=["a"]), count=False) == [0, 0, 0, 0, 0]
    assert usage(node) == [{}, {}, {}]
    assert node.client.hget(node.keys.holds("acme"), "4D1") == "1 1 100"
    assert not node.client.exists(node.keys.warmup("acme"))
    assert node.client.hget(node.keys.tag_counts("acme"), "a") == "1"  # the rest is written


def test_warm_up_moves_on_once_a_day_and_not_when_off(node: Node) -> None:
    add_account(node)  # accounts warm up by default
    accept(node, record("4E1"))
    first = node.client.hgetall(node.keys.warmup("acme"))
    assert first["days"] == "1" and first["created"]
    accept(node, record("4E2"))
    assert node.client.hgetall(node.keys.warmup("acme")) == first  # same UTC day
    add_account(node, "cold", warmup=False)
    cold = dataclasses.replace(record("4E3"), account="cold")
    accept(node, cold)
    assert not node.client.exists(node.keys.warmup("cold"))


def test_tags_are_counted_per_account_and_day_and_folded_past_the_cap(node: Node) -> None:
    add_account(node)
    assert accept(node, record("4F1", tags=["order", "vip"]), tags_per_day=2)[0] == 0
    assert accept(node, record("4F2", tags=["order", "new"]), tags_per_day=2)[0] == 1
    assert node.client.hgetall(node.keys.tag_counts("acme")) == {
        "order": "2",
        "vip": "1",
        "new": "1",
    }
    day_key, _ = tags_count_call(node.keys, "acme", time.time(), 400)
    counts = node.client.hgetall(day_key)
    assert counts["accepted"] == "2"
    assert counts["tag:order:accepted"] == "2"
    assert counts["tag:vip:accepted"] == "1"
    assert "tag:new:accepted" not in counts
    assert counts[f"tag:{OTHER}:accepted"] == "1"
    assert counts["distinct"] == "2"
    assert 0 < node.client.ttl(day_key) <= 400 * 86400


def test_the_same_counts_as_policy_commit_and_tags_count(node: Node) -> None:
    """message_accept.lua shares its counting with the two scripts the milter called before
    (one function each, included in both): the same message counts the same either way."""
    add_account(node)
    add_account(node, "solo")
    accept(node, record("4G1", tags=["x", "y"]), tags_per_day=1)
    solo = dataclasses.replace(record("4G2", tags=["x", "y"]), account="solo")
    settings = node.settings
    count_accepted(settings, node.client, node.keys, "solo", "4G2", 2, 1234)
    pipe = node.client.pipeline(transaction=False)
    count_tags(pipe, node.keys, "solo", solo.tags, solo.accepted_at, 400, tags_per_day=1)
    pipe.execute()
    assert usage(node, "acme") == usage(node, "solo") == [{"m": "1", "r": "2", "b": "1234"}] * 3
    day = tags_count_call(node.keys, "acme", time.time(), 400)[0]
    solo_day = tags_count_call(node.keys, "solo", time.time(), 400)[0]
    assert node.client.hgetall(day) == node.client.hgetall(solo_day)
    assert node.client.hget(node.keys.warmup("acme"), "days") == node.client.hget(
        node.keys.warmup("solo"), "days"
    )


def test_a_redis_that_lost_its_scripts_gets_the_text_and_counts_once(node: Node) -> None:
    add_account(node, warmup=False)
    accept(node, record("4H1"))
    node.client.script_flush()
    assert not node.client.script_exists(scripts.sha("message_accept"))[0]
    assert accept(node, record("4H2")) == [0, 1, 2, 1234, 0]
    assert usage(node)[2] == {"m": "2", "r": "4", "b": "2468"}
    assert node.client.script_exists(scripts.sha("message_accept"))[0]


def test_parts_are_included_and_are_no_scripts_of_their_own() -> None:
    assert "_commit" not in scripts.NAMES and "message_accept" in scripts.NAMES
    for name in ("message_accept", "policy_commit"):
        assert "local function commit(" in scripts.text(name)
        assert not scripts.PART.search(scripts.text(name))
    assert "local function count_tags(" in scripts.text("tags_count")
    with pytest.raises(KeyError):
        scripts.text("_commit")


def test_a_bucket_gets_its_ttl_when_made_and_keeps_it(node: Node) -> None:
    add_account(node, warmup=False)
    accept(node, record("4J1"))
    buckets = check_keys(node.keys, "acme", Windows.at(time.time()))[:3]
    ttls = [node.client.ttl(key) for key in buckets]
    assert all(0 < ttl for ttl in ttls) and ttls[0] <= 120 and ttls[2] <= 90000
    for key in buckets:
        node.client.expire(key, 50)
    accept(node, record("4J2"))
    # not set again (a bucket of a window that began in between is a new one: left out)
    same = set(buckets) & set(check_keys(node.keys, "acme", Windows.at(time.time()))[:3])
    assert same and all(0 < node.client.ttl(key) <= 50 for key in same)
    assert all(node.client.hget(key, "m") == "2" for key in same)


def test_the_record_is_the_one_record_writes_without_default_valued_fields(node: Node) -> None:
    """The milter writes only through accept() (milter.finish.write_accepted): its hash is the
    one Messages.record writes, with no field at the value from_hash() gives when absent."""
    from txmail.milter.finish import write_accepted
    from txmail.store.messages import ABSENT, stored_fields

    add_account(node, warmup=False)
    plain = record("4K1", tags=["order"])
    write_accepted(node.settings, node.messages, plain, 2, 1234)
    written = node.client.hgetall(node.keys.message("acme", "4K1"))
    node.messages.record(dataclasses.replace(plain, queue_id="4K2"))
    by_record = node.client.hgetall(node.keys.message("acme", "4K2"))
    assert written == {**by_record, "queue_id": "4K1"} == stored_fields(plain)
    assert not [name for name, value in written.items() if ABSENT.get(name) == value]
    assert set(ABSENT) - {"header_message_id"} <= set(plain.to_hash()) - set(written)
    assert node.messages.get("4K1") == plain
    # a field set to something else than its absent value is kept
    full = record("4K3", bcc="audit@acme.example", flags=0, blocked={"x@y.test": "suppressed"})
    accept(node, full)
    kept = node.client.hgetall(node.keys.message("acme", "4K3"))
    assert kept["bcc"] == "audit@acme.example" and kept["flags"] == "0" and "blocked" in kept
    assert node.messages.get("4K3") == full
