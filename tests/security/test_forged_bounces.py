"""Attack: a forged bounce that gets somebody suppressed.

Anybody on the internet can mail the return-path domains on port 25. A forger who wants a
victim's mail stopped sends a delivery status notification saying the victim's mailbox does not
exist: to a bounce address with a wrong HMAC, to one without a token at all, or to the genuine
bounce address of another message (say one the forger received). txmail may record such a bounce
(the customer sees it, marked `details.trusted = false`) but it must never put the victim on the
bounce list. Only a DSN at the bounce address signed for that very message and recipient does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.test_events import Account, receiver  # noqa: F401 - the fixture
from txmail_testing.harness import Sink, Stack
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def account(stack: Stack, receiver: WebhookReceiver) -> Account:  # noqa: F811
    return Account(stack, receiver)


def delivered(sink: Sink, account: Account, rcpt: str) -> tuple[str, Any]:
    """Send one message to `rcpt`; its queue id and the copy the sink received."""
    queue_id = account.send([rcpt])
    account.wait("delivery", rcpt, queue_id)
    return queue_id, sink.find(rcpt)[-1]


def untrusted_and_not_suppressed(account: Account, rcpt: str, queue_id: str) -> None:
    event = account.wait("bounce", rcpt, queue_id)
    assert event["details"]["trusted"] is False
    assert rcpt not in [e["recipient"] for e in account.suppressed()]


def test_wrong_hmac(stack: Stack, sink: Sink, account: Account) -> None:
    rcpt = f"forged-{account.name}@dest.example"
    queue_id, original = delivered(sink, account, rcpt)
    local, domain = original.sender.split("@")
    forged = f"{local[:-4]}aaaa@{domain}"  # same queue id, wrong MAC
    Sink.deliver(stack.smtp, "", forged, Sink.dsn(original, rcpt))
    untrusted_and_not_suppressed(account, rcpt, queue_id)


def test_missing_or_garbage_token(stack: Stack, sink: Sink, account: Account) -> None:
    """The returned headers still name the message (Message-ID), so each bounce is recorded
    against it, untrusted. One message per bounce address tried, all sent first."""
    local_parts = ["bounces", "bounces+", "bounces+garbage", "postmaster"]
    rcpts = [f"notoken{i}-{account.name}@dest.example" for i in range(len(local_parts))]
    queue_ids = [account.send([rcpt]) for rcpt in rcpts]
    for local_part, rcpt, queue_id in zip(local_parts, rcpts, queue_ids, strict=True):
        account.wait("delivery", rcpt, queue_id)
        original = sink.find(rcpt)[-1]
        domain = original.sender.split("@")[1]
        Sink.deliver(stack.smtp, "", f"{local_part}@{domain}", Sink.dsn(original, rcpt))
    for rcpt, queue_id in zip(rcpts, queue_ids, strict=True):
        untrusted_and_not_suppressed(account, rcpt, queue_id)


def test_a_genuine_token_of_another_message(stack: Stack, sink: Sink, account: Account) -> None:
    """The forger got a message of this account (so holds a validly signed bounce address) and
    reports a victim who was never a recipient of that message."""
    own = f"forger-{account.name}@dest.example"
    victim = f"victim-{account.name}@dest.example"
    forger_queue_id, forger_copy = delivered(sink, account, own)
    _, victim_copy = delivered(sink, account, victim)
    Sink.deliver(stack.smtp, "", forger_copy.sender, Sink.dsn(victim_copy, victim))
    untrusted_and_not_suppressed(account, victim, forger_queue_id)


def test_the_genuine_bounce_still_suppresses(stack: Stack, sink: Sink, account: Account) -> None:
    """The control: the same DSN at the message's own bounce address is believed."""
    rcpt = f"gone-{account.name}@dest.example"
    queue_id, original = delivered(sink, account, rcpt)
    Sink.deliver(stack.smtp, "", original.sender, Sink.dsn(original, rcpt))
    event = account.wait("bounce", rcpt, queue_id)
    assert event["details"].get("trusted", True) is True
    assert [e["recipient"] for e in account.suppressed()] == [rcpt]


def test_a_recipient_cannot_get_another_suppressed(
    stack: Stack, sink: Sink, account: Account
) -> None:
    """Issue 15 (2): both received one message; the forger's return path is genuine, but it
    names the forger's own queue file, so a complaint about the other recipient is not
    believed, and no complaint counts toward the account's suspension unless a feedback
    loop signed it."""
    forger = f"fbl-forger-{account.name}@dest.example"
    victim = f"fbl-victim-{account.name}@dest.example"
    queue_id = account.send([forger, victim])
    account.wait("delivery", forger, queue_id)
    account.wait("delivery", victim, queue_id)
    forger_copy, victim_copy = sink.find(forger)[-1], sink.find(victim)[-1]
    assert forger_copy.sender != victim_copy.sender  # a return path each
    Sink.deliver(
        stack.smtp,
        "",
        forger_copy.sender,
        Sink.arf(forger_copy.sender, victim, bytes(forger_copy.data)),
    )
    complaint = account.wait("complaint", victim, queue_id)
    assert complaint["details"]["trusted"] is False
    assert victim not in [e["recipient"] for e in account.suppressed()]
    # About themselves they are believed: it is their own outcome.
    Sink.deliver(
        stack.smtp,
        "",
        forger_copy.sender,
        Sink.arf(forger_copy.sender, forger, bytes(forger_copy.data)),
    )
    own = account.wait("complaint", forger, queue_id)
    assert own["details"].get("trusted", True) is True
    listed = [e["recipient"] for e in account.suppressed()]
    assert forger in listed and victim not in listed
    stats = json.loads(stack.txmail("stats", "--account", account.name, "--json").stdout)
    assert stats[0]["reputation"]["complained"] == 0


def test_a_forged_bounce_first_does_not_hide_the_genuine_one(
    stack: Stack, sink: Sink, account: Account
) -> None:
    """Issue 15 (4): the untrusted report used to take the event id, and the genuine bounce
    that followed was dropped as reported again."""
    rcpt = f"first-forged-{account.name}@dest.example"
    queue_id, original = delivered(sink, account, rcpt)
    local, domain = original.sender.split("@")
    Sink.deliver(stack.smtp, "", f"{local[:-4]}aaaa@{domain}", Sink.dsn(original, rcpt))
    forged = account.wait("bounce", rcpt, queue_id)
    assert forged["details"]["trusted"] is False
    Sink.deliver(stack.smtp, "", original.sender, Sink.dsn(original, rcpt))
    genuine = account.receiver.wait_event(
        lambda e: (
            e["account"] == account.name
            and e["kind"] == "bounce"
            and e["recipient"] == rcpt
            and e["details"].get("trusted", True) is True
        ),
        30,
    )
    assert genuine["id"] != forged["id"]
    assert rcpt in [e["recipient"] for e in account.suppressed()]
