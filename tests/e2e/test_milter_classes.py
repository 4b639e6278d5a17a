"""Delivery classes end to end: X-CloudMTA-Class picks Postfix's smtp, priority or digest
transport, digest is paced, and priority mail overtakes a digest backlog."""

from __future__ import annotations

import re

import pytest

from txmail_testing.harness import Sink, Stack, simple_message, wait_for

pytestmark = pytest.mark.e2e

DIGESTS = 4


@pytest.fixture(scope="module")
def login(stack: Stack) -> tuple[str, str]:
    return "classes", stack.add_account("classes", "classes.example")


def send(stack: Stack, login: tuple[str, str], recipient: str, message_class: str | None) -> str:
    extra = {"X-CloudMTA-Class": message_class} if message_class else {}
    message = simple_message("app@classes.example", recipient, extra_headers=extra)
    return stack.send(login, "app@classes.example", [recipient], message)


def transport_of(stack: Stack, queue_id: str) -> str:
    """The delivery agent's syslog name from the maillog line `QID: to=<...> status=sent`."""
    pattern = re.compile(rf" txmail/(?:(\w+)/)?smtp\[\d+\]: {queue_id}: to=<[^>]*>.*status=sent")

    def found() -> str | None:
        match = pattern.search(stack.log("postfix"))
        return (match.group(1) or "smtp") if match else None

    return str(wait_for(found, 30, what=f"the delivery of {queue_id} in the maillog"))


def test_each_class_has_its_transport(stack: Stack, sink: Sink, login: tuple[str, str]) -> None:
    sent = {
        c: send(stack, login, f"route-{c or 'none'}@example.net", c)
        for c in (None, "standard", "Priority", "digest")
    }
    assert transport_of(stack, sent[None]) == "smtp"
    assert transport_of(stack, sent["standard"]) == "smtp"
    assert transport_of(stack, sent["Priority"]) == "priority"
    assert transport_of(stack, sent["digest"]) == "digest"
    for recipient in ("route-Priority@example.net", "route-digest@example.net"):
        wait_for(lambda r=recipient: sink.find(r), 30, what=f"delivery to {recipient}")
        data = bytes(sink.find(recipient)[0].data)
        assert b"X-CloudMTA-Route" not in data and b"X-CloudMTA-Class" not in data


def test_priority_overtakes_a_digest_backlog(
    stack: Stack, sink: Sink, login: tuple[str, str]
) -> None:
    # Digest mail leaves one message per digest_rate_delay (1 s) per destination, so four
    # digests are a backlog of several seconds; a priority message sent after them all must
    # not wait behind it.
    digests = [f"backlog{i}@example.net" for i in range(DIGESTS)]
    for recipient in digests:
        send(stack, login, recipient, "digest")
    urgent = "urgent@example.net"
    send(stack, login, urgent, "priority")
    wait_for(
        lambda: all(sink.find(r) for r in [*digests, urgent]),
        60,
        what="the digests and the priority message",
    )
    order = [r for m in sink.messages for r in m.recipients if r in (*digests, urgent)]
    assert order.index(urgent) < order.index(digests[-1]), order


def test_routing_header_is_set_by_the_milter_only(
    stack: Stack, sink: Sink, login: tuple[str, str]
) -> None:
    recipient = "forged-route@example.net"
    message = simple_message(
        "app@classes.example", recipient, extra_headers={"X-CloudMTA-Route": "digest"}
    )
    queue_id = stack.send(login, "app@classes.example", [recipient], message)
    assert transport_of(stack, queue_id) == "smtp"
