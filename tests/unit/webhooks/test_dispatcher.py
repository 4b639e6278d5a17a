"""The dispatcher core against a real Redis, with a fake HTTP transport and a simulated clock:
batches, signatures, at least once through outages and kill -9, backoff for 24 h, 410 Gone,
dead letters and replay, and a stream cap that never trims what was not delivered."""

from __future__ import annotations

import json
import random
import signal

import pytest
import redis

from txmail.config import WebhooksSettings
from txmail.events import Recorder, make_event
from txmail.store import Keys
from txmail.webhooks import signing
from txmail.webhooks.dispatcher import Dispatcher, TransportError
from txmail.webhooks.server import dead_letters, replay

KEY = b"k" * 32
URL = "http://receiver.test/hook"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Receiver:
    """Records posts; `answer` is the status to give, or None for no answer at all."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.answer: int | None = 200
        self.posts: list[tuple[dict[str, str], bytes]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        if self.answer is None:
            raise TransportError("connection refused")
        self.posts.append((headers, body))
        return self.answer

    def delivered_ids(self) -> list[str]:
        return [e["id"] for h, b in self.posts for e in json.loads(b)["events"]]


@pytest.fixture
def world(client: redis.Redis, keys: Keys):
    client.sadd(keys.accounts, "acme")
    client.hset(keys.account("acme"), mapping={"name": "acme", "webhook_url": URL})
    clock = Clock(client.time()[0] + 0.0)
    receiver = Receiver(clock)
    recorder = Recorder(client, keys, clock=clock)

    def dispatcher(**overrides: object) -> Dispatcher:
        settings = WebhooksSettings(**{"batch_size": 100, "batch_wait": 1.0, **overrides})
        return Dispatcher(
            client,
            keys,
            settings,
            KEY,
            "node-a",
            receiver,
            stream_max=50,
            clock=clock,
            rng=random.Random(1),
        )

    def record(n: int, start: int = 0) -> list[str]:
        return [
            recorder.record(
                make_event("delivery", "acme", "Q1", f"r{i}@x.test", now=clock.now)
            ).event_id
            for i in range(start, start + n)
        ]

    return clock, receiver, dispatcher, record


def run(dispatcher: Dispatcher, clock: Clock, seconds: float, tick: float = 0.5) -> None:
    end = clock.now + seconds
    while clock.now < end:
        dispatcher.step()
        clock.now += tick
    dispatcher.step()


def test_batches_of_up_to_100_signed(world, client: redis.Redis, keys: Keys) -> None:
    clock, receiver, make, record = world
    ids = record(250)
    run(make(), clock, 3)
    assert [len(json.loads(b)["events"]) for _, b in receiver.posts] == [100, 100, 50]
    assert receiver.delivered_ids() == ids
    secret = signing.secret_text(signing.account_secret(KEY, "acme"))
    for headers, body in receiver.posts:
        assert headers["webhook-signature"].startswith("v1,")
        assert signing.verify(secret, headers, body, now=clock.now)
        assert not signing.verify(secret, headers, body + b" ", now=clock.now)
    pending = client.xpending(keys.events("acme"), "webhooks")
    assert pending["pending"] == 0


def test_a_small_batch_waits_for_batch_wait(world) -> None:
    clock, receiver, make, record = world
    dispatcher = make(batch_idle=0.5)
    dispatcher.step()  # history read: nothing
    for n in range(4):  # events keep coming: the batch waits, but at most batch_wait
        record(1, start=n)
        dispatcher.step()
        assert receiver.posts == []
        clock.now += 0.3
    dispatcher.step()
    assert len(receiver.posts) == 1 and len(json.loads(receiver.posts[0][1])["events"]) == 4
    record(2, start=200000)
    dispatcher.step()
    assert len(receiver.posts) == 1
    clock.now += 0.5  # quiet for batch_idle: posted without waiting the full second
    dispatcher.step()
    assert len(receiver.posts) == 2


def test_receiver_down_for_hours_then_up_loses_nothing(
    world, client: redis.Redis, keys: Keys
) -> None:
    clock, receiver, make, record = world
    receiver.answer = None
    dispatcher = make(retry_base=5.0, retry_max_delay=600.0)
    ids = record(120)
    run(dispatcher, clock, 3600, tick=30)
    more = record(40, start=120)  # recorded while it is down: wait in the stream
    receiver.answer = 503
    run(dispatcher, clock, 5 * 3600, tick=60)
    attempts = len(receiver.posts)
    assert attempts > 10
    assert all(json.loads(b)["events"][0]["id"] == ids[0] for _, b in receiver.posts)
    receiver.answer = 200
    run(dispatcher, clock, 1200, tick=10)
    delivered = receiver.delivered_ids()[-160:]
    assert sorted(set(delivered)) == sorted(ids + more)
    # the retried batch kept its webhook-id (receivers may de-duplicate on it)
    assert len({h["webhook-id"] for h, _ in receiver.posts[:attempts]}) == 1
    assert client.xpending(keys.events("acme"), "webhooks")["pending"] == 0
    assert dead_letters(client, keys, "acme") == []


def test_retries_for_24_hours_then_dead_letters_and_replay(
    world, client: redis.Redis, keys: Keys
) -> None:
    clock, receiver, make, record = world
    receiver.answer = 500
    dispatcher = make(retry_base=60.0, retry_max_delay=3600.0)
    ids = record(5)
    run(dispatcher, clock, 23.5 * 3600, tick=300)
    assert dead_letters(client, keys, "acme") == []
    times = len(receiver.posts)
    run(dispatcher, clock, 2 * 3600, tick=300)
    letters = dead_letters(client, keys, "acme")
    assert [d.event.id for d in letters] == ids and letters[0].error == "HTTP 500"
    assert times >= 20  # exponential backoff capped at an hour still tries all day
    assert client.xpending(keys.events("acme"), "webhooks")["pending"] == 0
    receiver.answer = 200
    receiver.posts.clear()
    assert replay(client, keys, "acme") == 5
    run(dispatcher, clock, 5)
    assert receiver.delivered_ids() == ids  # the same ids, once more
    assert dead_letters(client, keys, "acme") == []


def test_gone_disables_the_endpoint(world, client: redis.Redis, keys: Keys) -> None:
    clock, receiver, make, record = world
    receiver.answer = 410
    dispatcher = make()
    record(3)
    run(dispatcher, clock, 3)
    assert len(receiver.posts) == 1
    record(2, start=3)
    run(dispatcher, clock, 5)
    assert len(receiver.posts) == 1  # disabled: no more posts
    assert len(dead_letters(client, keys, "acme")) == 5
    assert client.hget(keys.webhook("acme"), "disabled")


def test_a_replay_right_after_gone_is_posted_not_dead_lettered_again(
    world, client: redis.Redis, keys: Keys
) -> None:
    # The replay turns the endpoint back on and queues the events in one step; the
    # dispatcher reads them at once, before its next look at the accounts (ACCOUNTS_REFRESH),
    # so it must not go by the disabled flag it remembers (found by the console's browser test).
    clock, receiver, make, record = world
    receiver.answer = 410
    dispatcher = make()
    ids = record(3)
    run(dispatcher, clock, 3)
    assert len(dead_letters(client, keys, "acme")) == 3
    receiver.answer = 200
    assert replay(client, keys, "acme") == 3
    for _ in range(3):  # the clock stands still: no refresh of the accounts
        dispatcher.step()
    assert dead_letters(client, keys, "acme") == []
    run(dispatcher, clock, 3)
    assert sorted(receiver.delivered_ids()[-3:]) == sorted(ids)
    assert dead_letters(client, keys, "acme") == []


@pytest.mark.parametrize("count", [30, 250])
def test_killed_mid_batch_the_next_run_posts_it_again(
    world, client: redis.Redis, keys: Keys, count: int
) -> None:
    clock, receiver, make, record = world
    ids = record(count)
    first = make()
    receiver.answer = None
    first.step()  # read events, the post failed: like a kill -9 after reading
    first.step()
    del first
    receiver.answer = 200
    # same consumer name: reads its pending list first, after the backoff the first one saved
    run(make(), clock, 30)
    assert receiver.delivered_ids() == ids
    assert client.xpending(keys.events("acme"), "webhooks")["pending"] == 0


def test_cap_never_trims_undelivered(world, client: redis.Redis, keys: Keys) -> None:
    clock, receiver, make, record = world
    receiver.answer = 503
    dispatcher = make(batch_size=10)
    ids = record(120)  # cap is 50
    run(dispatcher, clock, 600, tick=30)
    assert client.xlen(keys.events("acme")) == 120
    receiver.answer = 200
    run(dispatcher, clock, 600, tick=1)
    assert sorted(set(receiver.delivered_ids())) == sorted(ids)
    assert client.xlen(keys.events("acme")) == 50


def test_no_url_acknowledges_and_keeps_history(world, client: redis.Redis, keys: Keys) -> None:
    clock, receiver, make, record = world
    client.hset(keys.account("acme"), "webhook_url", "")
    record(60)
    run(make(), clock, 3)
    assert receiver.posts == []
    assert client.xpending(keys.events("acme"), "webhooks")["pending"] == 0
    assert client.xlen(keys.events("acme")) == 50


def test_a_read_whose_answer_was_lost_goes_out_after_the_next_redis_error(
    world, client: redis.Redis, keys: Keys
) -> None:
    clock, receiver, make, record = world
    dispatcher = make()
    dispatcher.step()  # creates the group
    ids = record(3)
    # Redis delivered the events to this consumer, but its answer never arrived (Redis was
    # killed after writing the read to its AOF and before replying).
    client.xreadgroup("webhooks", "node-a", {keys.events("acme"): ">"})
    run(dispatcher, clock, 10)
    assert receiver.delivered_ids() == []  # stranded in our own pending list
    dispatcher.reread_pending()  # what the loop does after any Redis error
    run(dispatcher, clock, 10)
    assert receiver.delivered_ids() == ids
    assert client.xpending(keys.events("acme"), "webhooks")["pending"] == 0


def test_an_events_own_kind_labels_its_delay() -> None:
    """The kind of the event itself, not a "kind" inside its details, whatever the order of
    the fields of the stored JSON."""
    from txmail.webhooks.dispatcher import _kind

    event = {"id": "e1", "kind": "bounce", "details": {"kind": "open"}, "recipient": "r@x.test"}
    assert _kind(json.dumps(event, sort_keys=True)) == "bounce"  # "details" comes first
    assert _kind(json.dumps({**event, "kind": "nonsense"})) == "other"
    assert _kind("not json") == "other"


def test_the_dispatcher_flushes_its_histograms_once_more_when_it_stops(
    client: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the last second observed is written after the last posts finished, not lost."""
    from txmail.config import Settings
    from txmail.histograms import WEBHOOK_POST, Observations
    from txmail.webhooks import server

    histogram_key = keys.node_histograms("node-a")
    client.delete(histogram_key)
    handlers: dict[int, object] = {}
    observations = Observations("webhooks")

    class Stopping:
        consumer = "node-a"

        def step(self) -> int:
            observations.observe(WEBHOOK_POST, 0.02, "posted")
            handlers[signal.SIGTERM](signal.SIGTERM, None)  # type: ignore[operator]
            return 1

        def flush_observations(self) -> None:
            observations.flush(client, histogram_key)

    monkeypatch.setattr(
        server.signal, "signal", lambda signum, handler: handlers.update({signum: handler})
    )
    monkeypatch.setattr(server.store, "connect", lambda settings: client)
    monkeypatch.setattr(server, "build", lambda settings, client, executor: Stopping())
    server.serve(Settings())
    stored = client.hgetall(histogram_key)
    assert stored[f"{WEBHOOK_POST.name}|posted|0.025"] == "1"
    assert "seen|webhooks" in stored


# -- the posts kept for the console (txmail/webhook_posts.py) --------------------------------


def test_each_post_is_kept_with_its_answer_and_the_events_it_carried(
    world, client: redis.Redis, keys: Keys
) -> None:
    from txmail.webhook_posts import POSTS_KEPT, recent
    from txmail.webhooks.dispatcher import Answer

    clock, receiver, make, record = world
    dispatcher = make(retry_base=5.0)
    answers = [Answer(503, b"busy\r\n\x00 try later"), Answer(200, b'{"ok":true}')]

    def transport(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        receiver(url, body, headers, timeout)
        return answers.pop(0) if answers else Answer(204)

    dispatcher.transport = transport
    ids = record(150)
    stream_ids = [e[0] for e in client.xrange(keys.events("acme"))]
    run(dispatcher, clock, 30)
    posts = recent(client, keys, "acme")
    # newest first: the failed first batch, its retry, then the rest
    assert [p.status for p in reversed(posts)] == [503, 200, 204]
    failed, retried = posts[-1], posts[-2]
    assert failed.answer == "busy try later" and not failed.ok
    assert retried.answer == '{"ok":true}' and retried.ok
    assert failed.events == retried.events == 100 and failed.webhook_id == retried.webhook_id
    assert all(retried.carried(i) for i in ids[:100]) and not retried.carried(ids[100])
    assert (retried.first, retried.last) == (stream_ids[0], stream_ids[99])
    assert len(posts) <= POSTS_KEPT


def test_no_answer_is_kept_with_why_and_the_list_stays_capped(
    world, client: redis.Redis, keys: Keys
) -> None:
    from txmail.webhook_posts import POSTS_KEPT, recent

    clock, receiver, make, record = world
    receiver.answer = None
    record(1)
    run(make(retry_base=1.0, retry_max_delay=2.0), clock, 600, tick=1)
    posts = recent(client, keys, "acme")
    assert len(posts) == POSTS_KEPT == client.llen(keys.webhook_posts("acme"))
    assert all(p.status is None and p.error == "connection refused" for p in posts)
    assert posts[0].outcome == "no answer (connection refused)"
    assert posts[0].at > posts[-1].at


def test_a_kept_answer_never_shows_the_signature_or_secret_and_is_short(
    world, client: redis.Redis, keys: Keys
) -> None:
    from txmail.webhook_posts import ANSWER_BYTES, recent
    from txmail.webhooks.dispatcher import Answer

    clock, receiver, make, record = world
    secret = signing.secret_text(signing.account_secret(KEY, "acme"))

    def echo(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        echoed = f"bad {headers['webhook-signature']} {secret} é".encode() + "é".encode() * 300
        return Answer(400, echoed)

    dispatcher = make()
    dispatcher.transport = echo
    record(1)
    run(dispatcher, clock, 2)
    answer = recent(client, keys, "acme")[0].answer
    assert "v1," not in answer and secret not in answer and secret[6:] not in answer
    assert answer.startswith("bad [hidden] [hidden] é")
    assert len(answer.encode()) <= ANSWER_BYTES
    assert answer.encode().decode() == answer  # cut on a character boundary


def test_keeping_posts_costs_no_round_trip_of_its_own(
    world, client: redis.Redis, keys: Keys
) -> None:
    clock, receiver, make, record = world
    dispatcher = make()
    dispatcher.step()  # its pending list: empty
    record(10)
    dispatcher.step()  # reads the batch, which waits for batch_wait
    assert receiver.posts == []
    calls: list[str] = []
    real_pipeline = client.pipeline

    def counting_pipeline(*args: object, **kwargs: object):
        calls.append("pipeline")
        return real_pipeline(*args, **kwargs)

    client.pipeline = counting_pipeline  # type: ignore[method-assign]
    try:
        clock.now += 2
        dispatcher.post_ready()
    finally:
        del client.pipeline
    assert len(receiver.posts) == 1
    assert calls == ["pipeline"]  # the acknowledgement's, which also keeps the post
    assert client.llen(keys.webhook_posts("acme")) == 1


def test_the_http_transport_reads_at_most_answer_read_bytes_of_an_answer() -> None:
    from txmail.webhook_posts import ANSWER_READ
    from txmail.webhooks.dispatcher import requests_transport
    from txmail_testing.webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver().start()
    try:
        post = requests_transport()
        receiver.answer = b"x" * (ANSWER_READ * 50)
        long = post(receiver.url, b"{}", {}, 5.0)
        receiver.answer, receiver.status = b"gone for good", 410
        short = post(receiver.url, b"{}", {}, 5.0)
    finally:
        receiver.stop()
    assert (long.status, long.body) == (200, b"x" * ANSWER_READ)
    assert (short.status, short.body) == (410, b"gone for good")
