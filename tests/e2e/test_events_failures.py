"""Events survive failures: the dispatcher killed with SIGKILL in the middle of a post, the
bounce pipe meeting a Redis that is down (exit 75, Postfix retries, the event arrives later),
and the maillog follower restarted from an older position in Redis (lines read again).

One node of its own with an external Redis this module may stop and start again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail_testing.harness import RedisServer, Sink, Stack, simple_message, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def redis_node() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(sink: Sink, redis_node: RedisServer) -> Iterator[Stack]:
    stack = Stack(relay_port=sink.port, redis_url=redis_node.url, name="events-failures")
    try:
        stack.start()
        yield stack
    finally:
        for name in ("webhooks", "maillog"):  # shown by pytest when a test failed
            print(f"--- {name}.log\n{stack.log(name)[-3000:]}")
        stack.close()


def account(stack: Stack, receiver: WebhookReceiver) -> tuple[str, str]:
    name = f"f{uuid.uuid4().hex[:8]}"
    password = stack.add_account(name, f"{name}.example")
    stack.txmail("webhooks", "url", name, receiver.url)
    return name, password


def process_of(stack: Stack, *argv: str) -> int:
    """The pid of this node's process whose command line ends with `argv` (found by its own
    config file, so no other node's process can match); 0 when there is none."""
    wanted = [str(stack.config.resolve()), *argv]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
        if args[-len(wanted) :] == wanted:
            return int(entry.name)
    return 0


def test_dispatcher_killed_mid_batch_loses_nothing(node: Stack, receiver: WebhookReceiver) -> None:
    name, password = account(node, receiver)
    sender = f"app@{name}.example"
    rcpts = [f"ok{n}-{name}@dest.example" for n in range(8)]
    receiver.delay = 3.0  # the post is still in flight when the dispatcher dies
    try:
        queue_id = node.send((name, password), sender, rcpts, simple_message(sender, rcpts[0]))
        first_post = wait_for(
            lambda: [p for p in list(receiver.posts) if name.encode() in p[1]],
            30,
            what="a post in flight",
        )
        assert first_post
        dead = process_of(node, "webhooks", "run")
        assert dead, "the dispatcher of this node is not running"
        os.kill(dead, signal.SIGKILL)
    finally:
        receiver.delay = 0.0
    wait_for(
        lambda: process_of(node, "webhooks", "run") not in (0, dead),
        30,
        what="the supervisor restarting the dispatcher",
    )

    def delivered() -> set[str]:
        return {
            e["recipient"]
            for e in receiver.events()
            if e["account"] == name and e["kind"] == "delivery" and e["message_id"] == queue_id
        }

    wait_for(lambda: delivered() == set(rcpts), 60, what="every delivery event")
    ids = {e["id"] for e in receiver.events() if e["account"] == name}
    assert len(ids) == len(rcpts)  # posted again after the kill, under the same ids


def test_bounce_pipe_with_redis_down_exits_75_and_the_event_comes_later(
    node: Stack, sink: Sink, redis_node: RedisServer, receiver: WebhookReceiver
) -> None:
    name, password = account(node, receiver)
    sender = f"app@{name}.example"
    rcpt = f"gone-{name}@dest.example"
    queue_id = node.send((name, password), sender, [rcpt], simple_message(sender, rcpt))
    receiver.wait_event(lambda e: e["message_id"] == queue_id and e["kind"] == "delivery")
    original = sink.find(rcpt)[-1]
    maillog = node.state / "log/postfix.log"
    redis_node.stop()
    try:
        Sink.deliver(node.smtp, "", original.sender, Sink.dsn(original, rcpt))
        wait_for(
            lambda: (
                "relay=bouncepipe" in maillog.read_text()
                and "dsn=4.3.0, status=deferred" in maillog.read_text()
            ),
            60,
            what="the bounce pipe's exit 75 in the maillog",
        )
        assert "Command died" not in maillog.read_text()
    finally:
        redis_node.start()
    subprocess.run(["postqueue", "-c", str(node.state / "postfix/etc"), "-f"], check=True)
    event = receiver.wait_event(
        lambda e: e["message_id"] == queue_id and e["kind"] == "bounce", timeout=60
    )
    assert event["details"]["reason"] == "userunknown"


def test_follower_restarted_from_an_older_position_in_redis_posts_nothing_twice(
    node: Stack, redis_node: RedisServer, receiver: WebhookReceiver
) -> None:
    """What a crash of the machine under appendfsync everysec leaves: Redis's copy of the
    follower's position is older than the log it had read (and than the old position file).
    The follower reads those lines again; their events are there already, so the stream gets
    nothing new and the webhook nothing twice."""
    name, password = account(node, receiver)
    sender = f"app@{name}.example"
    rcpts = [f"ok{n}-{name}@dest.example" for n in range(3)]
    queue_id = node.send((name, password), sender, rcpts, simple_message(sender, rcpts[0]))

    def delivered() -> list[str]:
        return sorted(
            e["recipient"]
            for e in receiver.events()
            if e["account"] == name and e["kind"] == "delivery" and e["message_id"] == queue_id
        )

    wait_for(lambda: delivered() == rcpts, 60, what="every delivery event")
    client = redis_node.client()
    maillog = node.state / "log/postfix.log"
    (key,) = client.keys("txmail:maillog:position:*")

    def position() -> dict[str, int]:
        return json.loads(client.get(key) or "{}")  # type: ignore[no-any-return]

    wait_for(
        lambda: position().get("offset") == maillog.stat().st_size,
        30,
        what="the follower at the end of the log",
    )
    caught_up = position()
    stream = client.xlen(f"txmail:{{{name}}}:events")
    assert stream == len(rcpts)

    follower = process_of(node, "maillog")
    os.kill(follower, signal.SIGSTOP)  # it cannot write while Redis's position is changed
    client.set(key, json.dumps({**caught_up, "offset": 0}))
    # the old position file, newer: Redis's position wins, the file is for migration only
    (node.state / "run/maillog.offset").write_text(json.dumps(caught_up))
    os.kill(follower, signal.SIGKILL)
    wait_for(
        lambda: process_of(node, "maillog") not in (0, follower),
        30,
        what="the supervisor restarting the follower",
    )
    wait_for(
        lambda: position().get("offset", 0) >= caught_up["offset"],
        60,
        what="the follower reading the whole log again",
    )
    assert f"resuming {maillog} at offset 0" in node.log("maillog")  # Redis's, not the file's
    assert client.xlen(f"txmail:{{{name}}}:events") == stream  # nothing recorded twice
    assert delivered() == rcpts
    assert len({e["id"] for e in receiver.events() if e["account"] == name}) == len(rcpts)
    client.close()
