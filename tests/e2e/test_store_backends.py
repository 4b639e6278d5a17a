"""The store layer runs the same code against one Redis and against a 3-master Redis Cluster."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
import redis
import redis.cluster

from txmail import store
from txmail.accounts.records import Accounts, check_password
from txmail.config import RedisSettings, Settings
from txmail.errors import Conflict, NotFound, StoreUnavailable
from txmail.store.messages import MessageRecord, Messages
from txmail_testing.harness import RedisCluster, RedisServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    nodes = RedisCluster().start()
    yield nodes
    nodes.close()


@pytest.fixture(params=["single", "cluster"])
def client(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[store.Client]:
    if request.param == "single":
        settings = Settings(redis=RedisSettings(url=redis_server.url))
    else:
        nodes = request.getfixturevalue("cluster")
        settings = Settings(redis=RedisSettings(url=nodes.url, cluster=True))
    c = store.connect(settings)
    c.flushall() if request.param == "single" else c.flushall(target_nodes="primaries")
    yield c
    c.close()  # its pools' sockets, before the garbage collector finds them open


def test_accounts_roundtrip(client: store.Client) -> None:
    accounts = Accounts(client, store.Keys())
    accounts.add(
        "acme",
        ["acme.example", "Mail.ACME.example."],
        "correct horse battery",
        settings={"max_recipients": 5},
    )
    acme = accounts.get("acme")
    assert acme.domains == ["acme.example", "mail.acme.example"]
    assert check_password("correct horse battery", acme.password_hash)
    assert acme.settings["max_recipients"] == 5
    assert acme.settings["recipient_mode"] == "multi"
    assert accounts.owner_of("mail.acme.example") == "acme"
    accounts.suspend("acme", "testing")
    assert accounts.get("acme").suspended
    accounts.resume("acme")
    assert not accounts.get("acme").suspended
    assert [a.name for a in accounts.all()] == ["acme"]


def test_one_domain_one_account(client: store.Client) -> None:
    accounts = Accounts(client, store.Keys())
    accounts.add("first", ["shared.example"], "a-long-password-1")
    with pytest.raises(Conflict, match="belongs to account 'first'"):
        accounts.add("second", ["own.example", "shared.example"], "a-long-password-2")
    # Nothing of the refused account was kept: its own domain is free again.
    assert accounts.owner_of("own.example") is None
    with pytest.raises(NotFound):
        accounts.get("second")
    accounts.remove("first")
    accounts.add("second", ["shared.example"], "a-long-password-2")
    assert accounts.owner_of("shared.example") == "second"


def test_message_records(client: store.Client) -> None:
    messages = Messages(client, store.Keys(), ttl_seconds=60)
    record = MessageRecord(
        queue_id="4jXCs06YbRzJJ2Y",
        account="acme",
        envelope_sender="app@acme.example",
        recipients=["a@example.net"],
        envelope_params=["RET=HDRS"],
        recipient_params={"a@example.net": ["NOTIFY=FAILURE"]},
    )
    messages.record(record)
    assert messages.get("4jXCs06YbRzJJ2Y") == record
    assert messages.get("4jXNOTHERE") is None
    assert 0 < client.ttl(store.Keys().message("acme", "4jXCs06YbRzJJ2Y")) <= 60


def test_keys_of_one_account_share_a_slot() -> None:
    from redis.crc import key_slot

    keys = store.Keys()
    slots = {key_slot(k.encode()) for k in (keys.account("acme"), keys.message("acme", "Q1"))}
    assert len(slots) == 1


def test_unreachable_redis_is_a_temporary_failure() -> None:
    settings = Settings(
        redis=dataclasses.replace(RedisSettings(), url="redis://127.0.0.1:1", timeout=0.5)
    )
    with pytest.raises(StoreUnavailable):
        Accounts(store.connect(settings), store.Keys()).get("acme")


def test_tag_counts_with_their_cap(client: store.Client) -> None:
    """The milter's count of an accepted message (EVAL inside the record's pipeline, which a
    cluster pipeline routes by key) and an event's count share one day hash and its cap."""
    from txmail.events import Recorder, make_event
    from txmail.stats import OTHER, count_accepted, last_days, read_counts

    keys, now = store.Keys(), 1_800_000_000.0
    record = MessageRecord(
        queue_id="4jXCs06YbRzJJ2Y",
        account="acme",
        envelope_sender="a@acme.example",
        recipients=["a@b.test"],
    )

    def also(pipe: object) -> None:
        count_accepted(pipe, keys, "acme", ["order", "vip"], now, 400, tags_per_day=1)

    Messages(client, keys, ttl_seconds=60).record(record, also=also)
    Recorder(client, keys, clock=lambda: now, tags_per_day=1).record(
        make_event("delivery", "acme", "4jXCs06YbRzJJ2Y", "a@b.test", tags=["vip"], now=now)
    )
    day = last_days(1, now)
    assert read_counts(client, keys, "acme", day, "order").totals == {"accepted": 1}
    assert read_counts(client, keys, "acme", day, OTHER).totals == {
        "accepted": 1,
        "delivery": 1,
    }


def test_message_event_lists_and_idempotency_keys(client: store.Client) -> None:
    """The scripts of GET /v1/messages and the Idempotency-Key touch one account's slot."""
    from txmail.events import Recorder, make_event, message_events
    from txmail.tracker import idempotency

    keys = store.Keys()
    Messages(client, keys, 600).record(
        MessageRecord(queue_id="Q1AAAAAA", account="acme", envelope_sender="", recipients=[])
    )
    Recorder(client, keys).record(make_event("delivery", "acme", "Q1AAAAAA", "a@b.test"))
    assert [e.kind for e in message_events(client, keys, "acme", "Q1AAAAAA").events] == ["delivery"]
    marker, held = idempotency.claim(client, keys, "acme", "k-1", "h", 60, "t")
    assert held is None
    assert idempotency.settle(client, keys, "acme", "k-1", marker, "h", (200, "{}"))
    assert idempotency.claim(client, keys, "acme", "k-1", "h", 60, "u")[1] == idempotency.Held(
        "h", pending=False, status=200, answer="{}"
    )


def test_an_accepted_message_in_one_call(client: store.Client) -> None:
    """The milter's write of an accepted message (Messages.accept: message_accept.lua by
    EVALSHA, in the pipeline of the keys outside the account's slot) on one Redis and on a
    cluster, also after the servers lost their scripts: it runs again with the text, once."""
    from txmail.accounts.usage import commit_call
    from txmail.stats import last_days, read_counts, tags_count_call
    from txmail.store import scripts
    from txmail.store.counters import count_message
    from txmail.store.messages import Counting

    keys, settings = store.Keys(), Settings()
    Accounts(client, keys).add("acme", ["acme.example"], "a-good-password")
    messages = Messages(client, keys, ttl_seconds=60)

    def accept(queue_id: str) -> list[int]:
        record = MessageRecord(
            queue_id=queue_id,
            account="acme",
            envelope_sender="app@acme.example",
            recipients=["a@b.test", "c@d.test"],
            size=300,
            header_message_id=f"<{queue_id}@acme.example>",
            tags=["order"],
        )
        day_key, day_args = tags_count_call(keys, "acme", record.accepted_at, 400)
        counting = Counting(
            day_key, day_args, commit_call(settings, keys, "acme", queue_id, 2, 300)
        )
        answer = messages.accept(
            record, counting, also=lambda pipe: count_message(pipe, keys, "accepted")
        )
        assert messages.get(queue_id) == record
        return answer

    assert accept("4jXAcc1") == [0, 1, 2, 300, 0]
    if isinstance(client, redis.cluster.RedisCluster):
        for node in client.get_primaries():
            node.redis_connection.script_flush()
    else:
        client.script_flush()
    assert not any(client.script_exists(scripts.sha("message_accept")))
    assert accept("4jXAcc2") == [0, 1, 2, 300, 0]
    day = last_days(1, time.time())
    assert read_counts(client, keys, "acme", day, "order").totals == {"accepted": 2}
    assert client.hget(keys.tag_counts("acme"), "order") == "2"
    assert client.get(keys.header_message_id("<4jXAcc2@acme.example>")) == "4jXAcc2"
    assert client.hget(keys.message_stats, "accepted") == "2"


def test_maillog_lines_on_either_backend(client: store.Client) -> None:
    """A single Redis records a batch of lines in one maillog_batch.lua call with the
    follower's position; a Cluster records each line in calls of its own (one script cannot
    reach every account's slot) and leaves the position to the follower's file. The records
    are read in one script call or in two pipelines. Either way, lines read again record
    nothing twice."""
    from txmail.events import Recorder, stream_events
    from txmail.maillog.server import SettingsCache, StatusRecorder, handle_lines, positions_for

    keys = store.Keys()
    messages = Messages(client, keys, 600)
    for queue_id, account in (("4jXB1AAAAAA", "acme"), ("4jXB2AAAAAA", "other")):
        messages.record(
            MessageRecord(
                queue_id=queue_id,
                account=account,
                envelope_sender=f"app@{account}.example",
                recipients=["a@dest.test"],
            )
        )
    lines = [
        f"Dec  7 23:00:00 mta txmail/smtp[1]: {queue_id}: to=<a@dest.test>, relay=mx.dest.test"
        "[127.0.0.1]:25, delay=0.2, delays=0.1/0/0/0.1, dsn=2.0.0, status=sent (250 ok)"
        for queue_id in ("4jXB1AAAAAA", "4jXB2AAAAAA", "4jXB9AAAAAA")
    ]
    cluster = isinstance(client, redis.cluster.RedisCluster)
    settings = Settings(redis=RedisSettings(cluster=cluster))
    assert (positions_for(settings, client) is None) == cluster
    for _ in range(2):
        recorder = StatusRecorder(
            client,
            keys,
            Messages(client, keys, 600),
            Recorder(client, keys),
            settings=SettingsCache(client, keys),
            position_key=keys.maillog_position("n1"),
        )
        assert handle_lines(lines, recorder, None if cluster else '{"offset": 5}') == 2
    for account in ("acme", "other"):
        assert [e.kind for _, e in stream_events(client, keys, account)] == ["delivery"]
    assert client.get(keys.maillog_position("n1")) == (None if cluster else '{"offset": 5}')


def test_an_outcome_is_counted_once_with_its_mark_on_either_backend(client: store.Client) -> None:
    """The bounce pipe's reputation count and its "counted:" mark in one call
    (reputation_count.lua, every key in the account's slot), on one Redis and on a cluster."""
    from txmail.accounts import reputation
    from txmail.events import Recorder, make_event

    keys = store.Keys()
    Accounts(client, keys).add("acme", ["acme.example"], "a-good-password")
    recorder = Recorder(client, keys, outcome_hook=reputation.outcome_hook(client, keys))
    bounce = make_event("bounce", "acme", "Q1BOUNCE", "a@b.test", {"status": "5.1.1"})
    for _ in range(2):
        recorder.record(bounce)
    today = int(time.time() // 86400)
    assert client.hget(keys.outcomes("acme", today), "bounced") == "1"
    assert client.hget(keys.event_seen("acme", "Q1BOUNCE"), "counted:bounce:a@b.test") == "1"
