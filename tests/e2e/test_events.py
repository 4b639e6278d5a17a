"""Events end to end: real Postfix, Dovecot, Redis, the milter, the maillog follower, the bounce
pipe and the webhooks dispatcher, posting to a real HTTP receiver on loopback.

Each test uses its own account on the session's shared node, so they do not see each other's
events; the tests that break things (kill -9, Redis down) are in test_events_failures.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from txmail.webhooks import signing
from txmail_testing.harness import Sink, Stack, simple_message, sink_verdict, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


class Account:
    def __init__(self, stack: Stack, receiver: WebhookReceiver) -> None:
        self.name = f"ev{uuid.uuid4().hex[:8]}"
        self.domain = f"{self.name}.example"
        self.sender = f"app@{self.domain}"
        self.password = stack.add_account(self.name, self.domain)
        stack.txmail("webhooks", "url", self.name, receiver.url)
        self.stack = stack
        self.receiver = receiver

    def send(self, recipients: list[str], **headers: str) -> str:
        return self.stack.send(
            (self.name, self.password),
            self.sender,
            recipients,
            simple_message(self.sender, recipients[0], extra_headers=headers or None),
        )

    def events(self, queue_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.receiver.events()
            if e["account"] == self.name and (queue_id is None or e["message_id"] == queue_id)
        ]

    def wait(
        self, kind: str, recipient: str, queue_id: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        return self.receiver.wait_event(
            lambda e: (
                e["account"] == self.name
                and e["kind"] == kind
                and e["recipient"] == recipient
                and (queue_id is None or e["message_id"] == queue_id)
            ),
            timeout,
        )

    def message(self, queue_id: str) -> dict[str, Any]:
        shown = self.stack.txmail("messages", "show", queue_id, "--json").stdout
        return json.loads(shown)  # type: ignore[no-any-return]

    def suppressed(self) -> list[dict[str, Any]]:
        out = self.stack.txmail("suppressions", "list", "--account", self.name, "--json").stdout
        text = out.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)  # type: ignore[no-any-return]
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def account(stack: Stack, receiver: WebhookReceiver) -> Account:
    return Account(stack, receiver)


def pipe_saw(stack: Stack, queue_id: str) -> bool:
    """The bounce pipe has read a returned mail about `queue_id`."""
    return f"{queue_id}: " in stack.log("bounce-pipe")


def test_hard_bounce_one_signed_event_suppression_forwarding_and_blocked(
    stack: Stack, sink: Sink, account: Account
) -> None:
    rcpt = f"reject-{account.name}@dest.example"
    queue_id = account.send([rcpt])
    event = account.wait("bounce", rcpt, queue_id)
    assert event["details"]["status"] == "5.1.1"
    assert event["details"]["reason"] == "userunknown"
    # the bounce pipe reads Postfix's DSN too, and must not report it a second time
    wait_for(lambda: pipe_saw(stack, queue_id), 30, what="the bounce pipe")
    headers, body, _ = account.receiver.post_of(event["id"])
    secret = stack.txmail("webhooks", "secret", account.name).stdout.strip()
    assert signing.verify(secret, headers, body, now=float(headers["webhook-timestamp"]))
    wait_for(
        lambda: (
            [e["id"] for e in account.events(queue_id) if e["kind"] == "bounce"] == [event["id"]]
        ),
        5,
        what="exactly one bounce event",
    )
    entries = account.suppressed()
    assert [(e["recipient"], e["list"], e["reason"], e["event_id"]) for e in entries] == [
        (rcpt, "bounce", "userunknown", event["id"])
    ]
    # forwarded to the original envelope sender (no NOTIFY means FAILURE,DELAY), MAIL FROM:<>
    forwarded = wait_for(
        lambda: [m for m in sink.find(account.sender) if m.sender in ("", "<>")],
        30,
        what="the forwarded bounce",
    )
    assert queue_id.encode() in forwarded[0].data
    shown = account.message(queue_id)
    assert [e["kind"] for e in shown["events"]] == ["bounce"]
    # the next message to the suppressed recipient: a blocked event, and no delivery attempt
    other = f"ok-{account.name}@dest.example"
    second = account.send([rcpt, other])
    blocked = account.wait("blocked", rcpt, second)
    assert blocked["message_id"] == second
    account.wait("delivery", other, second)


def test_asynchronous_dsn_on_port_25(stack: Stack, sink: Sink, account: Account) -> None:
    rcpt = f"later-{account.name}@dest.example"
    queue_id = account.send([rcpt], **{"X-CloudMTA-Tags": "welcome"})
    account.wait("delivery", rcpt, queue_id)
    original = sink.find(rcpt)[-1]
    assert original.sender.startswith("bounces+")
    Sink.deliver(stack.smtp, "", original.sender, Sink.dsn(original, rcpt))
    event = account.wait("bounce", rcpt, queue_id)
    assert (event["details"]["status"], event["details"]["reason"]) == ("5.1.1", "userunknown")
    assert event["details"]["source"] == "bounce-pipe" and event["tags"] == ["welcome"]
    assert [e["recipient"] for e in account.suppressed()] == [rcpt]


def test_the_pipe_hands_its_mail_to_the_recorder_or_leaves_it_queued(
    stack: Stack, sink: Sink, account: Account
) -> None:
    dsns = {}
    for n in (1, 2):
        rcpt = f"later{n}-{account.name}@dest.example"
        queue_id = account.send([rcpt])
        account.wait("delivery", rcpt, queue_id)
        original = sink.find(rcpt)[-1]
        dsns[n] = (rcpt, queue_id, original.sender, Sink.dsn(original, rcpt))
    # Through Postfix: the pipe process hands the DSN over, and the long-running recorder
    # records it and logs what it did (the forwarding to the client, NOTIFY=FAILURE).
    rcpt, queue_id, bounce_address, dsn = dsns[1]
    Sink.deliver(stack.smtp, "", bounce_address, dsn)
    account.wait("bounce", rcpt, queue_id)
    # the recorder's own line (txmail up passes on what the component `bounce-pipe` writes;
    # a pipe(8) process's output never reaches it)
    line = f"{queue_id}: forwarded to"
    wait_for(lambda: line in stack.log("bounce-pipe"), 20, what="the recorder's log line")
    # With nothing on the socket (the recorder down), the pipe command parses nothing and
    # records nothing: it exits 75, and Postfix keeps the mail for later.
    rcpt, queue_id, bounce_address, dsn = dsns[2]
    alone = stack.config_without_bounce_parser()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "txmail.bounce_pipe",
            "--config",
            str(alone),
            "--",
            "",
            bounce_address,
        ],
        input=dsn,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 75, done.stderr
    assert b"`txmail bounces serve` does not answer" in done.stderr
    time.sleep(1)
    assert not [e for e in account.events(queue_id) if e["kind"] == "bounce"]
    # Postfix's retry, once the recorder answers again
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "txmail.bounce_pipe",
            "--config",
            str(stack.config),
            "--",
            "",
            bounce_address,
        ],
        input=dsn,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert account.wait("bounce", rcpt, queue_id)["details"]["reason"] == "userunknown"


def test_soft_bounce_once_then_delivery(stack: Stack, sink: Sink, account: Account) -> None:
    rcpt = f"flaky-{account.name}@dest.example"
    tried: list[str] = []

    def defer_once(address: str) -> str | None:
        if address == rcpt and address not in tried:
            tried.append(address)
            return f"450 4.2.0 <{address}>: Mailbox busy, try later"
        return sink_verdict(address)

    sink.handler.verdict = defer_once
    try:
        queue_id = account.send([rcpt])
        soft = account.wait("soft_bounce", rcpt, queue_id)
        assert soft["details"]["attempts"] == 1 and soft["details"]["status"] == "4.2.0"
        subprocess.run(["postqueue", "-c", str(stack.state / "postfix/etc"), "-f"], check=True)
        account.wait("delivery", rcpt, queue_id)
    finally:
        sink.handler.verdict = sink_verdict
    kinds = [e["kind"] for e in account.events(queue_id)]
    assert kinds == ["soft_bounce", "delivery"]
    assert account.suppressed() == []


def test_arf_complaint_records_and_suppresses(stack: Stack, sink: Sink, account: Account) -> None:
    rcpt = f"grumpy-{account.name}@dest.example"
    queue_id = account.send([rcpt])
    account.wait("delivery", rcpt, queue_id)
    original = sink.find(rcpt)[-1]
    Sink.deliver(
        stack.smtp,
        "fbl@isp.example",
        original.sender,
        Sink.arf(original.sender, rcpt, bytes(original.data)),
    )
    complaint = account.wait("complaint", rcpt, queue_id)
    entries = account.suppressed()
    assert [(e["recipient"], e["event_id"]) for e in entries] == [(rcpt, complaint["id"])]
    # complaints are never forwarded to the sender
    assert not [m for m in sink.find(account.sender) if m.sender in ("", "<>")]


def test_receiver_down_for_a_while_then_up_nothing_lost(
    stack: Stack, receiver: WebhookReceiver
) -> None:
    account = Account(stack, receiver)
    receiver.status = 503
    try:
        rcpts = [f"ok{n}-{account.name}@dest.example" for n in range(5)]
        queue_id = account.send(rcpts)
        wait_for(lambda: "failed (HTTP 503)" in stack.log("webhooks"), 30, what="a refused post")
        assert account.events() == []
    finally:
        receiver.status = 200
    for rcpt in rcpts:
        account.wait("delivery", rcpt, queue_id, timeout=60)
    ids = [e["id"] for e in account.events(queue_id)]
    assert len(set(ids)) == 5
    replay = stack.txmail("messages", "show", queue_id, "--json").stdout
    assert sorted(e["id"] for e in json.loads(replay)["events"]) == sorted(set(ids))


def test_events_tail_and_webhooks_test(stack: Stack, account: Account) -> None:
    rcpt = f"tail-{account.name}@dest.example"
    queue_id = account.send([rcpt])
    account.wait("delivery", rcpt, queue_id)
    out = stack.txmail("events", "tail", "--account", account.name, "--kind", "delivery").stdout
    assert queue_id in out and "delivery" in out
    out = stack.txmail("webhooks", "test", account.name).stdout
    assert "answered 200" in out
    test_event = account.receiver.wait_event(
        lambda e: e["account"] == account.name and e["kind"] == "test"
    )
    headers, body, _ = account.receiver.post_of(test_event["id"])
    secret = stack.txmail("webhooks", "secret", account.name).stdout.strip()
    assert signing.verify(secret, headers, body, now=float(headers["webhook-timestamp"]))
