"""Per-recipient copies through the real Postfix (txmail/milter/copies.py): a tracked message with
several recipients leaves as one message per recipient, each tracked for its own recipient (the
BCC copy of single-recipient mode untracked), signed, with its own bounce address; every event
of a copy carries the queue id the client was given."""

from __future__ import annotations

import email
import json
import re
import uuid
from typing import Any

import dkim
import pytest
import requests

from tests.e2e.test_tracker import html_message, tracker_url
from txmail import config
from txmail.milter.copies import listener_path
from txmail.submit import UnixSMTP
from txmail.tokens.bounce_address import verify_bounce_address
from txmail.tokens.copies import HEADER, CopyHeader, CopySigner
from txmail.tokens.links import LinkSigner, Mark, Tracking
from txmail_testing.harness import Sink, Stack, wait_for

pytestmark = pytest.mark.e2e

TARGET = "https://shop.example"  # never followed: the tracker answers 302 before it


def new_account(stack: Stack, *settings: str) -> tuple[str, str, str]:
    """(name, password, domain) of a fresh tracked account whose domain DKIM-signs."""
    name = f"cp{uuid.uuid4().hex[:8]}"
    domain = f"{name}.example"
    password = stack.add_account(
        name, domain, settings=["track_opens=true", "track_clicks=true", "warmup=false", *settings]
    )
    stack.txmail(
        "domains",
        "add",
        domain,
        "--account",
        name,
        "--selector",
        "e2e",
        "--force-sign",
        "--no-return-path",
    )
    return name, password, domain


def dns_record(stack: Stack, domain: str) -> bytes:
    shown = json.loads(stack.txmail("domains", "show", domain, "--json").stdout)
    return shown["dkim"][0]["dns_value"].encode()  # type: ignore[no-any-return]


def secret(stack: Stack, name: str) -> bytes:
    return config.load(stack.config).read_secret(name)


def delivered(sink: Sink, recipient: str) -> Any:
    found = wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
    assert len(found) == 1, f"{recipient} got {len(found)} messages"
    return found[0]


def html_of(captured: Any) -> str:
    parsed = email.message_from_bytes(bytes(captured.data))
    return "".join(
        p.get_payload(decode=True).decode()
        for p in parsed.walk()
        if p.get_content_type() == "text/html"
    )


def marks(stack: Stack, captured: Any) -> list[Mark]:
    """The tracking tokens in a delivered message's HTML, verified with the node's key."""
    html = html_of(captured)
    signer = LinkSigner(secret(stack, "tracking_key_file"))
    found = [signer.verify(t) for t in re.findall(r"/[co]/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", html)]
    assert all(m is not None for m in found)
    return found  # type: ignore[return-value]


def no_control_headers(captured: Any) -> bool:
    head = bytes(captured.data).split(b"\r\n\r\n", 1)[0].lower()
    return not re.search(rb"^(x-cloudmta-|x-mxm-)", head, re.M)


def events_of(stack: Stack, account: str, message_id: str) -> list[dict[str, Any]]:
    rows = stack.redis().xrange(f"txmail:{{{account}}}:events")
    return [e for e in (json.loads(f["event"]) for _, f in rows) if e["message_id"] == message_id]


def test_single_mode_to_recipient_tracked_bcc_copy_separate_and_untracked(
    stack: Stack, sink: Sink
) -> None:
    name, password, domain = new_account(stack, "recipient_mode=single")
    to, bcc = f"to-{name}@dest.example", f"bcc-{name}@dest.example"
    message = html_message(
        f"news@{domain}", to, TARGET, extra=f"Cc: cc-{name}@dest.example\r\nX-Mxm-Tag: receipt\r\n"
    )
    queue_id = stack.send((name, password), f"out@{domain}", [bcc, to], message)
    mine, copy = delivered(sink, to), delivered(sink, bcc)
    assert mine.recipients == [to] and copy.recipients == [bcc]
    assert {(m.kind, m.recipient, m.queue_id) for m in marks(stack, mine)} == {
        ("click", to, queue_id),
        ("open", to, queue_id),
    }
    assert "/c/" not in html_of(copy) and "/o/" not in html_of(copy)
    assert f'href="{TARGET}/order?id=7&amp;from=mail"' in html_of(copy)
    bounce_key = secret(stack, "bounce_key_file")
    assert verify_bounce_address(mine.sender, bounce_key) == queue_id
    copy_id = verify_bounce_address(copy.sender, bounce_key)
    assert copy_id and copy_id != queue_id
    record = dns_record(stack, domain)
    for captured in (mine, copy):
        data = bytes(captured.data)
        assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
        assert no_control_headers(captured)
        parsed = email.message_from_bytes(data)
        assert parsed["To"] == to and parsed["Cc"] is None
        assert parsed["From"] == f"Shop <out@{domain}>"
    shown = json.loads(stack.txmail("messages", "show", queue_id, "--json").stdout)
    assert shown["message"]["copies"] == {bcc: copy_id}
    assert shown["message"]["bcc"] == bcc
    copy_record = json.loads(stack.txmail("messages", "show", copy_id, "--json").stdout)
    assert copy_record["message"]["parent"] == queue_id
    assert copy_record["message"]["bcc"] == bcc


def test_multi_mode_one_message_per_recipient_and_events_under_the_client_id(
    stack: Stack, sink: Sink
) -> None:
    name, password, domain = new_account(stack)
    rcpts = [f"r{i}-{name}@dest.example" for i in (1, 2, 3)]
    sender = f"app@{domain}"
    queue_id = stack.send(
        (name, password),
        sender,
        rcpts,
        html_message(sender, ", ".join(rcpts), TARGET, extra="X-CloudMTA-Tags: order\r\n"),
    )
    captured = {r: delivered(sink, r) for r in rcpts}
    bounce_key = secret(stack, "bounce_key_file")
    queue_ids = {r: verify_bounce_address(c.sender, bounce_key) for r, c in captured.items()}
    assert queue_ids[rcpts[0]] == queue_id and len(set(queue_ids.values())) == 3
    for recipient, message in captured.items():
        assert message.recipients == [recipient]
        assert {(m.recipient, m.queue_id) for m in marks(stack, message)} == {(recipient, queue_id)}
        assert no_control_headers(message)
    for recipient in rcpts:  # the maillog follower, under the id the client knows
        wait_for(
            lambda r=recipient: [
                e
                for e in events_of(stack, name, queue_id)
                if e["kind"] == "delivery" and e["recipient"] == r
            ],
            30,
            what=f"the delivery event of {recipient}",
        )
    # a click of recipient 2 through the tracker: one click event, recipient 2, the client's id
    link = next(m for m in marks(stack, captured[rcpts[1]]) if m.kind == "click")
    token = re.search(r"/c/([A-Za-z0-9_.-]+)", html_of(captured[rcpts[1]])).group(1)
    answer = requests.get(f"{tracker_url(stack)}/c/{token}", allow_redirects=False, timeout=10)
    assert answer.status_code == 302 and answer.headers["Location"] == link.url
    clicks = wait_for(
        lambda: [e for e in events_of(stack, name, queue_id) if e["kind"] == "click"],
        15,
        what="the click event",
    )
    assert [(e["recipient"], e["tags"]) for e in clicks] == [(rcpts[1], ["order"])]
    # a bounce of recipient 3's copy, returned later to the copy's own bounce address
    third = captured[rcpts[2]]
    Sink.deliver(stack.smtp, "", third.sender, Sink.dsn(third, rcpts[2]))
    bounces = wait_for(
        lambda: [e for e in events_of(stack, name, queue_id) if e["kind"] == "bounce"],
        30,
        what="the bounce event",
    )
    assert [(e["recipient"], e["details"]["source"]) for e in bounces] == [
        (rcpts[2], "bounce-pipe")
    ]
    shown = json.loads(stack.txmail("messages", "show", queue_id, "--json").stdout)
    assert shown["message"]["copies"] == {r: queue_ids[r] for r in rcpts[1:]}
    assert shown["message"]["recipients"] == rcpts
    kinds = {(e["kind"], e["recipient"]) for e in shown["events"]}
    assert {("delivery", r) for r in rcpts} | {("click", rcpts[1]), ("bounce", rcpts[2])} <= kinds
    text = stack.txmail("messages", "show", queue_id).stdout
    assert f"copy:      <{rcpts[2]}> as {queue_ids[rcpts[2]]}" in text


def test_a_client_forging_the_copy_header_gets_nothing(stack: Stack, sink: Sink) -> None:
    name, password, domain = new_account(stack, "track_clicks=false", "track_opens=false")
    recipient = f"forge-{name}@dest.example"
    # even a header signed with the node's own key is only a control header on submission
    genuine = CopySigner(secret(stack, "bounce_key_file")).sign(
        CopyHeader(
            parent="4jFORGED0000001",
            recipient=recipient,
            account="someone-else",
            tracking=Tracking(True, True),
            bcc=True,
        )
    )
    sender = f"app@{domain}"
    message = html_message(sender, recipient, TARGET, extra=f"{HEADER}: {genuine}\r\n")
    queue_id = stack.send((name, password), sender, [recipient], message)
    captured = delivered(sink, recipient)
    assert no_control_headers(captured) and "/c/" not in html_of(captured)
    shown = json.loads(stack.txmail("messages", "show", queue_id, "--json").stdout)
    assert shown["message"]["account"] == name
    assert "parent" not in shown["message"] and shown["message"]["bcc"] == ""


def test_the_copy_listener_refuses_a_copy_the_milter_did_not_sign(stack: Stack) -> None:
    recipient = f"direct-{uuid.uuid4().hex[:8]}@dest.example"
    forged = CopySigner(b"not the node's key, 32 bytes....").sign(
        CopyHeader(parent="4jFORGED0000002", recipient=recipient, account="someone-else")
    )
    message = (
        f"{HEADER}: {forged}\r\nFrom: a@b.example\r\nTo: {recipient}\r\n"
        "Subject: x\r\n\r\nHello.\r\n"
    ).encode()
    client = UnixSMTP(listener_path(config.load(stack.config)), 30, local_hostname="test.invalid")
    try:
        client.connect(listener_path(config.load(stack.config)))
        client.ehlo()
        client.mail("a@b.example")
        assert client.rcpt(recipient)[0] == 250
        code, text = client.data(message)
        assert code == 554 and text.startswith(b"5.7.1") and HEADER.encode() in text
    finally:
        client.close()
