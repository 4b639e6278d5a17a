"""Seed behaviours no other test shows end to end (issue 18; /work/notes/seedmap.md lists
them): CloudMailin's forbidden attachment types, its bounce envelope under an unchanged header
From, its 10 MB default and its webhook batches; Maxemail's single-recipient mode with Cc and
Bcc headers, several X-Mxm-Tag headers and the X-Mxm-Flags rules. Real Postfix, the milter and
the webhook dispatcher on the session's node; the sink stands in for the internet.

Each test's docstring quotes the seed line it shows. The accounts are shared by the module and
every test uses addresses of its own, so the tests are independent of one another's order.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import json
import smtplib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from txmail.store import Keys
from txmail.store.suppressions import Suppressions
from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

Login = tuple[str, str]

MULTI, MULTI_DOMAIN = "seedmulti", "seedmulti.example"
SINGLE, SINGLE_DOMAIN = "seedsingle", "seedsingle.example"
SENDER = f"user@{MULTI_DOMAIN}"

# seed 002:48, copied as written there (not imported: the product's list must contain it)
SEED_FORBIDDEN = "vbs, exe, bin, bat, chm, com, hta, pif, reg, vbe, vba, msc, msi"

TEN_MB = 10 * 1024 * 1024  # seed 002:47 "10 MB": 10,485,760 bytes


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def multi(stack: Stack, receiver: WebhookReceiver) -> Login:
    """An account with every default setting (multi mode, 10 MB, the default forbidden
    extensions) and an active return-path domain mta.seedmulti.example."""
    password = stack.add_account(MULTI, MULTI_DOMAIN)
    stack.txmail("domains", "add", MULTI_DOMAIN, "--account", MULTI, "--force-return-path")
    stack.txmail("webhooks", "url", MULTI, receiver.url)
    return MULTI, password


@pytest.fixture(scope="module")
def single(stack: Stack) -> Login:
    return SINGLE, stack.add_account(SINGLE, SINGLE_DOMAIN, settings=["recipient_mode=single"])


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@example.net"


def delivered(sink: Sink, recipient: str) -> Any:
    return wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")[-1]


def data_reply(smtp: smtplib.SMTP, message: bytes) -> tuple[int, str]:
    try:
        code, text = smtp.data(message)
    except smtplib.SMTPDataError as exc:  # refused before the message was sent
        code, text = exc.smtp_code, exc.smtp_error
    return code, text.decode(errors="replace")


def transaction(
    stack: Stack, login: Login, sender: str, recipients: list[str], message: bytes
) -> tuple[int, str]:
    with contextlib.closing(stack.client("submission", login)) as smtp:
        assert smtp.mail(sender)[0] == 250
        for recipient in recipients:
            code, text = smtp.rcpt(recipient)
            assert code == 250, (recipient, code, text)
        return data_reply(smtp, message)


def with_headers(sender: str, to: str, headers: list[tuple[str, str]]) -> bytes:
    """A simple message with extra header lines, the same name possibly several times."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers).encode()
    return simple_message(sender, to).replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n", 1)


def with_attachment(sender: str, to: str, filename: str) -> bytes:
    boundary = uuid.uuid4().hex
    head = simple_message(
        sender,
        to,
        subject=f"with {filename}",
        body="",
        extra_headers={
            "MIME-Version": "1.0",
            "Content-Type": f'multipart/mixed; boundary="{boundary}"',
        },
    )
    parts = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "The file is attached.\r\n"
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        "c29tZSBieXRlcywgbm90IGEgcHJvZ3JhbQ==\r\n"  # "some bytes, not a program"
        f"--{boundary}--\r\n"
    )
    return head + parts.encode()


def sized(sender: str, to: str, size: int) -> bytes:
    """A message of exactly `size` bytes as sent after DATA (CRLF line ends)."""
    head = simple_message(sender, to, body="")
    line = b"x" * 998 + b"\r\n"
    lines, rest = divmod(size - len(head), len(line))
    assert rest >= 2
    data = head + line * lines + b"y" * (rest - 2) + b"\r\n"
    assert len(data) == size
    return data


# -- CloudMailin (seeds 000-002) -------------------------------------------------------------


def test_each_forbidden_extension_of_the_seed_is_refused_naming_it(
    stack: Stack, sink: Sink, multi: Login
) -> None:
    """002:48 "Although not exhaustive the following attachments are **not permitted**
    ` vbs, exe, bin, bat, chm, com, hta, pif, reg, vbe, vba, msc, msi`." """
    extensions = [e.strip() for e in SEED_FORBIDDEN.split(",")]
    assert len(extensions) == 13
    refused: dict[str, tuple[int, str]] = {}
    recipients: list[str] = []
    # Two sessions: past smtpd_soft_error_limit (10) refusals in one session, Postfix waits a
    # second before each reply, which would add about 12 s here.
    for part in (extensions[:7], extensions[7:]):
        with contextlib.closing(stack.client("submission", multi)) as smtp:
            for ext in part:
                recipient = unique(f"attach-{ext}")
                recipients.append(recipient)
                assert smtp.mail(SENDER)[0] == 250
                assert smtp.rcpt(recipient)[0] == 250
                message = with_attachment(SENDER, recipient, f"file.{ext}")
                refused[ext] = data_reply(smtp, message)
                smtp.rset()
    for ext, (code, text) in refused.items():
        assert code == 554, (ext, code, text)
        assert text.startswith("5.7.1 "), (ext, text)
        assert f'"file.{ext}"' in text and f"(.{ext})" in text, (ext, text)
    assert not [r for r in recipients if sink.find(r)]


def test_envelope_is_the_bounce_address_while_the_header_from_stays(
    stack: Stack, sink: Sink, multi: Login
) -> None:
    """001:30-31 (000:8-10, 002:77-78) "The SMTP conversation will send the message from
    `bounces+12345@mta.example.com` whilst the message headers remain as
    `user@example.com`." """
    recipient = unique("envelope")
    message = simple_message(SENDER, recipient)
    stack.send(multi, SENDER, [recipient], message)
    captured = delivered(sink, recipient)
    local, domain = captured.sender.split("@")
    assert local.startswith("bounces+") and domain == f"mta.{MULTI_DOMAIN}"
    assert captured.sender != SENDER
    parsed = email.message_from_bytes(bytes(captured.data))
    assert parsed["From"] == SENDER
    assert parsed.get_all("From") == [SENDER]


def test_the_default_message_size_is_10_mb(stack: Stack, sink: Sink, multi: Login) -> None:
    """002:47 "The maximum message size (unless otherwise agreed) is `10 MB` this should
    include all message content and encoding." """
    shown = stack.txmail("accounts", "show", MULTI).stdout
    assert str(TEN_MB) in shown  # the account has the default, not a smaller limit
    over, under = unique("ten-mb-over"), unique("ten-mb-under")
    with contextlib.closing(stack.client("submission", multi)) as smtp:
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(over)[0] == 250
        code, text = data_reply(smtp, sized(SENDER, over, TEN_MB + 1))
        assert code == 552 and text.startswith("5.3.4 Message too big for this account"), text
        smtp.rset()
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt(under)[0] == 250
        code, text = data_reply(smtp, sized(SENDER, under, TEN_MB))
        assert code == 250, text
    delivered(sink, under)
    assert not sink.find(over)


def test_several_events_in_one_post_each_with_a_timestamp(
    stack: Stack, sink: Sink, receiver: WebhookReceiver, multi: Login
) -> None:
    """001:76 (002:141, 000:40) "The list of events is an array. In multiple events may be
    sent in one HTTP POST." and 001:87 "These fields will be expended with additional details
    over time." (txmail adds `timestamp`, among others)."""
    gone = [unique("batch-gone1"), unique("batch-gone2"), unique("batch-gone3")]
    lists = Suppressions(stack.redis(), Keys())
    for address in gone:
        lists.add(MULTI, "bounce", address, "userunknown")
    keep = unique("batch-keep")
    queue_id = stack.send(multi, SENDER, [*gone, keep], simple_message(SENDER, keep))
    delivered(sink, keep)

    def posts_of_mine() -> list[list[dict[str, Any]]]:
        with receiver.lock:
            bodies = [body for _, body, _ in receiver.posts]
        found = [[e for e in email_events(body) if e["message_id"] == queue_id] for body in bodies]
        return [events for events in found if events]

    def all_four() -> bool:
        return sum(len(events) for events in posts_of_mine()) >= 4

    wait_for(all_four, 30, what="the blocked and delivery events at the receiver")
    posts = posts_of_mine()
    # the three blocked events are written at once and come in one POST
    assert max(len(events) for events in posts) >= 2, posts
    events = [e for events in posts for e in events]
    assert sorted((e["kind"], e["recipient"]) for e in events) == sorted(
        [("blocked", a) for a in gone] + [("delivery", keep)]
    )
    for event in events:
        assert isinstance(event["timestamp"], int | float | str) and event["timestamp"], event


def email_events(body: bytes) -> list[dict[str, Any]]:
    parsed = json.loads(body)
    assert isinstance(parsed["events"], list)
    return parsed["events"]  # type: ignore[no-any-return]


# -- Maxemail (seed 003) ---------------------------------------------------------------------


def test_single_mode_drops_cc_and_bcc_headers_from_both_copies(
    stack: Stack, sink: Sink, single: Login
) -> None:
    """003:54 "Only one recipient can be listed in the email's To header. Any additional
    recipients in the to, cc or bcc header will be discarded" and 003:56 "Of the remaining
    recipients listed in the RCPT TO command, the first will be used as a BCC recipient, and
    any others discarded"."""
    to, copy_to, dropped = unique("single-to"), unique("single-bcc"), unique("single-dropped")
    header_cc, header_bcc = unique("header-cc"), unique("header-bcc")
    message = simple_message(
        f"news@{SINGLE_DOMAIN}",
        to,
        extra_headers={
            "To": f"{to}, {unique('header-to')}",
            "Cc": header_cc,
            "Bcc": header_bcc,
        },
    )
    code, text = transaction(stack, single, f"out@{SINGLE_DOMAIN}", [to, copy_to, dropped], message)
    assert code == 250, text
    mine, copy = delivered(sink, to), delivered(sink, copy_to)
    assert mine.recipients == [to] and copy.recipients == [copy_to]
    for captured in (mine, copy):
        parsed = email.message_from_bytes(bytes(captured.data))
        assert parsed.get_all("To") == [to]
        assert parsed["Cc"] is None and parsed["Bcc"] is None
        assert header_bcc.encode() not in bytes(captured.data)
        assert header_cc.encode() not in bytes(captured.data)
    assert not sink.find(dropped) and not sink.find(header_bcc) and not sink.find(header_cc)
    assert queue_id_of(text)


def test_several_x_mxm_tag_headers_are_all_appended(
    stack: Stack, sink: Sink, receiver: WebhookReceiver, multi: Login
) -> None:
    """003:112 "Multiple headers can be set, each set of header values will be appended to
    any tags already defined." (the example of 003:120-124)"""
    recipient = unique("tags")
    message = with_headers(
        SENDER,
        recipient,
        [("X-Mxm-Tag", "order"), ("X-Mxm-Tag", " confirmation"), ("X-Mxm-Tag", "guest, vip")],
    )
    queue_id = stack.send(multi, SENDER, [recipient], message)
    parsed = email.message_from_bytes(bytes(delivered(sink, recipient).data))
    assert parsed["X-Mxm-Tag"] is None
    event = receiver.wait_event(
        lambda e: e["message_id"] == queue_id and e["kind"] == "delivery", 30
    )
    assert event["tags"] == ["order", "confirmation", "guest", "vip"]


def test_flag_8_sends_to_a_bounce_listed_recipient_and_the_first_flags_header_wins(
    stack: Stack, sink: Sink, multi: Login
) -> None:
    """003:96 "Ignore Master Bounce List check" (bit 8) and 003:75-76 "Only one header should
    be set / If multiple are defined the first is used and subsequent entries are ignored"."""
    first_wins, first_refuses = unique("flags-8-first"), unique("flags-0-first")
    lists = Suppressions(stack.redis(), Keys())
    for address in (first_wins, first_refuses):
        lists.add(MULTI, "bounce", address, "userunknown")
    # 8 first: the bounce list is not checked, the recipient gets the message
    code, text = transaction(
        stack,
        multi,
        SENDER,
        [first_wins],
        with_headers(SENDER, first_wins, [("X-Mxm-Flags", "8"), ("X-Mxm-Flags", "0")]),
    )
    assert code == 250, text
    parsed = email.message_from_bytes(bytes(delivered(sink, first_wins).data))
    assert parsed["X-Mxm-Flags"] is None
    # 0 first: the 8 after it is ignored, the bounce list holds
    code, text = transaction(
        stack,
        multi,
        SENDER,
        [first_refuses],
        with_headers(SENDER, first_refuses, [("X-Mxm-Flags", "0"), ("X-Mxm-Flags", "8")]),
    )
    assert code == 550 and f"{first_refuses} (bounce list: userunknown)" in text, text
    assert not sink.find(first_refuses)


def test_flags_1_and_2_turn_tracking_on_for_an_account_that_does_not_track(
    stack: Stack, sink: Sink, multi: Login
) -> None:
    """003:67 "If this header is set, it overrides the options set per customer space", 003:82
    "1 Enable open tracking", 003:86 "2 Enable click-through tracking" (the account keeps
    track_opens and track_clicks at their default, off)."""
    recipient = unique("flags-track")
    html = '<html><body><p><a href="https://shop.seedmulti.example/order?id=7">view</a></p></body></html>'
    message = (
        f"From: {SENDER}\r\nTo: {recipient}\r\nSubject: tracked by its flags\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{MULTI_DOMAIN}>\r\nMIME-Version: 1.0\r\n"
        "X-Mxm-Flags: 3\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n"
    ).encode()
    stack.send(multi, SENDER, [recipient], message)
    body = email.message_from_bytes(bytes(delivered(sink, recipient).data))
    sent = body.get_payload(decode=True).decode()
    assert "X-Mxm-Flags" not in body
    assert "/c/" in sent and "https://shop.seedmulti.example/order" not in sent  # the link
    assert "/o/" in sent  # the open pixel


def test_rest_send_without_envelope_records_the_bounce_and_returns_nothing(
    stack: Stack, sink: Sink, multi: Login
) -> None:
    """004:13 "Om geen envelope adres mee te geven met de REST API hoef je alleen de
    "envelope" parameter weg te laten" and 004:102-108: no envelope, trackbounces on: the
    errors are stored, no bounce mail reaches the client."""
    key = stack.txmail("accounts", "apikey", MULTI).stdout.strip().splitlines()[-1]
    recipient = unique("reject-rest")  # the sink refuses it: 550 5.1.1
    answer = requests.post(
        f"http://127.0.0.1:{8080 + stack.offset}/v1/send",
        json={"recipient": recipient, "mime": simple_message(SENDER, recipient).decode()},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    queue_id = answer.json()["message_id"]
    record = stack.redis().hgetall(Keys().message(MULTI, queue_id))
    assert record["envelope_sender"] == ""  # MAIL FROM:<>

    def bounce() -> list[dict[str, Any]]:
        rows = stack.redis().xrange(Keys().events(MULTI))
        found = [json.loads(fields["event"]) for _, fields in rows]
        return [e for e in found if e["message_id"] == queue_id and e["kind"] == "bounce"]

    (event,) = wait_for(bounce, 30, what="the bounce event of the REST send")
    assert event["recipient"] == recipient and event["details"]["status"] == "5.1.1"
