"""Return-path domains end to end: Postfix relays bounces for every return-path domain in Redis
to the bounce pipe, including domains added while it runs, on every node, and nothing else."""

from __future__ import annotations

import contextlib
import itertools
import smtplib
from collections.abc import Iterator

import pytest

from txmail import config
from txmail.tokens.bounce_address import verify_bounce_address
from txmail_testing.harness import Sink, Stack, simple_message, wait_for

pytestmark = pytest.mark.e2e


def rcpt_reply(stack: Stack, recipient: str) -> tuple[int, str]:
    """What an unauthenticated client on port 25 hears at RCPT TO (MAIL FROM:<>, a bounce)."""
    with smtplib.SMTP("127.0.0.1", stack.smtp, timeout=30) as smtp:
        smtp.ehlo("remote-mta.test")
        code, _ = smtp.mail("<>")
        assert code == 250
        code, text = smtp.rcpt(recipient)
        smtp.rset()
        return code, text.decode(errors="replace")


def probe(stack: Stack, recipient: str, code: int) -> bool:
    """Whether RCPT gets `code`, asked with a fresh local part each time: each smtpd process
    keeps its last address resolution, so asking the very same address again could get the
    answer from before the change (real bounces each carry their own token)."""
    local, domain = recipient.split("@")
    return rcpt_reply(stack, f"{local}{next(_probes)}@{domain}")[0] == code


_probes = itertools.count()


def accepted_soon(stack: Stack, recipient: str, timeout: float = 5.0) -> None:
    wait_for(lambda: probe(stack, recipient, 250), timeout, what=f"{recipient} accepted on port 25")


@pytest.fixture(scope="module")
def bounce_owner(stack: Stack) -> str:
    stack.add_account("bounceowner", "rp-one.example")
    return "bounceowner"


def test_domain_added_while_running_accepts_bounces_within_seconds(
    stack: Stack, bounce_owner: str
) -> None:
    address = "bounces+abc@mta.rp-one.example"
    code, text = rcpt_reply(stack, address)
    assert code == 554 and "5.7.1" in text, (code, text)
    stack.txmail("domains", "add", "rp-one.example", "--account", bounce_owner)
    accepted_soon(stack, address)


def test_bounce_is_handed_to_the_bounce_pipe(stack: Stack, bounce_owner: str) -> None:
    stack.txmail(
        "domains",
        "add",
        "rp-two.example",
        "--account",
        bounce_owner,
        "--return-path",
        "bounce.rp-two.example",
    )
    address = "bounces+def@bounce.rp-two.example"
    accepted_soon(stack, address)
    with smtplib.SMTP("127.0.0.1", stack.smtp, timeout=30) as smtp:
        smtp.ehlo("remote-mta.test")
        smtp.mail("<>")
        smtp.rcpt(address)
        code, reply = smtp.data(
            b"From: MAILER-DAEMON@remote-mta.test\r\nTo: "
            + address.encode()
            + b"\r\nSubject: Undelivered Mail\r\n\r\nbounce body\r\n"
        )
    assert code == 250, reply
    queue_id = reply.decode().split("queued as ")[1].split()[0]
    maillog = stack.state / "log/postfix.log"
    wait_for(
        lambda: f"{queue_id}: to=<{address}>, relay=bouncepipe" in maillog.read_text(),
        20,
        what="delivery to the bouncepipe transport",
    )


@pytest.mark.parametrize(
    "recipient",
    [
        "someone@elsewhere.example",  # any other domain: never an open relay
        "bounces+abc@mta.not-set-up.example",  # a return-path-looking domain nobody set up
        "bounces+abc@rp-one.example",  # the sending domain itself
        "bounces+abc@x.mta.rp-one.example",  # a subdomain of a return-path domain
    ],
)
def test_other_domains_are_refused(stack: Stack, bounce_owner: str, recipient: str) -> None:
    stack.txmail("domains", "add", "rp-one.example", "--account", bounce_owner, check=False)
    accepted_soon(stack, "bounces+abc@mta.rp-one.example")
    code, text = rcpt_reply(stack, recipient)
    assert code == 554, (code, text)
    assert "5.7.1" in text and "Relay access denied" in text


def test_removed_domain_is_refused_again(stack: Stack, bounce_owner: str) -> None:
    stack.txmail("domains", "add", "rp-three.example", "--account", bounce_owner)
    address = "bounces+ghi@mta.rp-three.example"
    accepted_soon(stack, address)
    stack.txmail("domains", "remove", "--yes", "rp-three.example")
    wait_for(lambda: probe(stack, address, 554), 5, what=f"{address} refused after removal")


def test_bounce_domain_is_accepted(stack: Stack) -> None:
    code, text = rcpt_reply(stack, "bounces+abc@bounces.example.test")
    assert code == 250, text


@pytest.fixture
def second_node(stack: Stack, sink: Sink) -> Iterator[Stack]:
    """Another node sharing the first node's Redis, as nodes of one relay do."""
    node = Stack(
        relay_port=sink.port,
        name="node2",
        redis_url=f"unix://{stack.state / 'run/redis/redis.sock'}",
    )
    try:
        node.start()
        yield node
    finally:
        with contextlib.suppress(Exception):
            node.close()


def test_domain_added_on_one_node_is_accepted_on_another(
    stack: Stack, second_node: Stack, bounce_owner: str
) -> None:
    address = "bounces+jkl@mta.rp-four.example"
    assert rcpt_reply(second_node, address)[0] == 554
    stack.txmail("domains", "add", "rp-four.example", "--account", bounce_owner)
    accepted_soon(second_node, address)
    assert rcpt_reply(second_node, "someone@elsewhere.example")[0] == 554


# -- the envelope sender the milter writes ---------------------------------------------------


def bounce_secret(stack: Stack) -> bytes:
    return config.load(stack.config).read_secret("bounce_key_file")


def sent_as(
    stack: Stack, sink: Sink, login: tuple[str, str], sender: str, recipient: str
) -> tuple[str, str]:
    """(queue id, envelope sender at the sink) of one message."""
    queue_id = stack.send(login, sender, [recipient], simple_message(sender, recipient))
    wait_for(lambda: sink.find(recipient), 20, what=f"delivery to {recipient}")
    return queue_id, sink.find(recipient)[0].sender


@pytest.fixture(scope="module")
def envelope_login(stack: Stack) -> tuple[str, str]:
    password = stack.add_account(
        "envelope", "env-rp.example", "env-norp.example", "env-pending.example"
    )
    stack.txmail("domains", "add", "env-rp.example", "--account", "envelope", "--force-return-path")
    stack.txmail("domains", "add", "env-pending.example", "--account", "envelope")
    return "envelope", password


def test_mail_from_is_a_signed_bounce_address_at_the_return_path_domain(
    stack: Stack, sink: Sink, envelope_login: tuple[str, str]
) -> None:
    queue_id, sender = sent_as(
        stack, sink, envelope_login, "app@env-rp.example", "envelope-rp@example.net"
    )
    local, domain = sender.split("@")
    assert domain == "mta.env-rp.example"
    assert local.startswith("bounces+") and len(local) <= 64
    assert verify_bounce_address(sender, bounce_secret(stack)) == queue_id
    assert verify_bounce_address(sender.upper(), bounce_secret(stack)) == queue_id
    # and the relay takes bounces for it
    accepted_soon(stack, sender)


@pytest.mark.parametrize("sender_domain", ["env-norp.example", "env-pending.example"])
def test_without_an_active_return_path_domain_the_bounce_domain_is_used(
    stack: Stack, sink: Sink, envelope_login: tuple[str, str], sender_domain: str
) -> None:
    queue_id, sender = sent_as(
        stack, sink, envelope_login, f"app@{sender_domain}", f"envelope-{sender_domain}@example.net"
    )
    assert sender.endswith("@bounces.example.test")
    assert verify_bounce_address(sender, bounce_secret(stack)) == queue_id


def test_bounce_tracking_off_keeps_the_clients_sender(stack: Stack, sink: Sink) -> None:
    password = stack.add_account("untracked", "untracked.example", settings=["track_bounces=false"])
    _, sender = sent_as(
        stack,
        sink,
        ("untracked", password),
        "app@untracked.example",
        "envelope-untracked@example.net",
    )
    assert sender == "app@untracked.example"
