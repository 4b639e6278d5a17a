"""SMTPeter's bounce protocol (seed 004) end to end: real Postfix, the milter, the maillog
follower, the bounce pipe, and a sink that speaks DSN (RFC 3461) standing in for the internet.

Whatever NOTIFY the client gives, a bounce-tracked recipient leaves asking for FAILURE,DELAY:
remote servers see it, and Postfix makes its own failure and delay notices for the bounce
pipe; the client's own NOTIFY, RET, ENVID and ORCPT decide, and appear in, what is forwarded.
Auto-replies and mail nobody can classify go to the envelope address whatever NOTIFY says;
nothing goes anywhere for MAIL FROM:<>. Bounce tracking is chosen per sender and per /v1/send
message.

This module runs its own node whose relay host is the DSN-speaking sink, with
postfix.delay_warning_time at one second so a deferred message gets its delay notice at the
next queue run.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.e2e.test_events import Account
from txmail_testing.dsn_sink import DsnSink
from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dsn_sink() -> Iterator[DsnSink]:
    server = DsnSink().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(dsn_sink: DsnSink) -> Iterator[Stack]:
    stack = Stack(relay_port=dsn_sink.port, name="dsn")
    try:
        stack.configure("postfix", delay_warning_time="1s").start()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def account(node: Stack, receiver: WebhookReceiver) -> Account:
    return Account(node, receiver)


def submit(
    account: Account,
    recipient: str,
    rcpt_options: tuple[str, ...] = (),
    mail_options: tuple[str, ...] = (),
    sender: str | None = None,
    body: str = "Hello from the txmail tests.\r\n",
) -> str:
    """Submit one message with DSN parameters on port 587; the queue id."""
    sender = account.sender if sender is None else sender
    message = simple_message(account.sender, recipient, body=body)
    with contextlib.closing(account.stack.client(login=(account.name, account.password))) as smtp:
        code, text = smtp.mail(sender, list(mail_options))
        assert code == 250, text
        code, text = smtp.rcpt(recipient, list(rcpt_options))
        assert code == 250, text
        code, text = smtp.data(message)
        assert code == 250, text
        smtp.quit()
    return queue_id_of(text)


def maillog(stack: Stack) -> str:
    return (stack.state / "log/postfix.log").read_text(errors="replace")


def piped(stack: Stack, queue_id: str) -> bool:
    """Postfix handed the mail `queue_id` to the bounce pipe, and the pipe was done with it
    (recorded and, when it was, forwarded: the pipe answers only after both)."""
    return bool(
        re.search(
            rf"{queue_id}: to=<bounces\+[^>]*>, relay=bouncepipe,.* status=sent", maillog(stack)
        )
    )


def postfix_notice(stack: Stack, queue_id: str, kind: str) -> str:
    """The queue id of Postfix's own notice about `queue_id` (kind: non-delivery, delay,
    delivery status), once it exists."""
    pattern = re.compile(rf"{queue_id}: sender {kind} notification: (\w+)")

    def found() -> str | None:
        match = pattern.search(maillog(stack))
        return match.group(1) if match else None

    return wait_for(found, 30, what=f"Postfix's {kind} notification about {queue_id}")  # type: ignore[no-any-return]


def forwarded_lines(stack: Stack, queue_id: str) -> list[str]:
    return [
        line
        for line in stack.log("bounce-pipe").splitlines()
        if f": {queue_id}: forwarded to" in line or f"]: INFO: {queue_id}: forwarded to" in line
    ]


def forwarded_mail(sink: Sink, account: Account, needle: bytes) -> Any:
    """The mail the bounce pipe forwarded to the account's envelope sender (MAIL FROM:<>)."""
    return wait_for(
        lambda: [
            m for m in sink.find(account.sender) if m.sender in ("", "<>") and needle in m.data
        ],
        30,
        what=f"a forwarded mail with {needle!r}",
    )[-1]


def deliver_to_bounce_address(stack: Stack, address: str, data: bytes) -> str:
    """A remote server's mail to the bounce address on port 25; Postfix's queue id for it."""
    return queue_id_of(Sink.deliver(stack.smtp, "", address, data))


def auto_reply(rcpt: str, to: str) -> bytes:
    return (
        f"From: {rcpt}\r\nTo: {to}\r\nSubject: Out of office\r\n"
        f"Auto-Submitted: auto-replied\r\nMessage-ID: <{uuid.uuid4().hex}@dest.example>\r\n"
        "\r\nI am away until Monday.\r\n"
    ).encode()


def unclassifiable(rcpt: str, to: str, marker: str) -> bytes:
    return (
        f"From: {rcpt}\r\nTo: {to}\r\nSubject: re: your message\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@dest.example>\r\n"
        f"\r\nWho are you? {marker}\r\n"
    ).encode()


# -- NEVER --------------------------------------------------------------------------------


def test_never_asks_remote_servers_for_failures_and_delays_and_tracks_a_later_bounce(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    rcpt = f"later-{account.name}@dest.example"
    queue_id = submit(account, rcpt, ("NOTIFY=NEVER", f"ORCPT=rfc822;{rcpt}"))
    account.wait("delivery", rcpt, queue_id)
    # the remote server is asked for what txmail tracks, with the client's ORCPT
    options = dsn_sink.options_for(rcpt)
    assert "NOTIFY=FAILURE,DELAY" in options
    assert f"ORCPT=RFC822;{rcpt.upper()}" in options
    # its asynchronous bounce is recorded, and not forwarded: the client asked NEVER
    original = dsn_sink.find(rcpt)[-1]
    dsn = deliver_to_bounce_address(node, original.sender, Sink.dsn(original, rcpt))
    event = account.wait("bounce", rcpt, queue_id)
    assert event["details"]["source"] == "bounce-pipe"
    wait_for(lambda: piped(node, dsn), 30, what="the DSN through the bounce pipe")
    assert forwarded_lines(node, queue_id) == []
    # an auto-reply is not a DSN: the envelope address gets it under NEVER too
    reply = deliver_to_bounce_address(node, original.sender, auto_reply(rcpt, original.sender))
    wait_for(lambda: piped(node, reply), 30, what="the auto-reply through the bounce pipe")
    assert len(forwarded_lines(node, queue_id)) == 1
    forwarded_mail(dsn_sink, account, b"I am away until Monday.")
    assert not [m for m in dsn_sink.find(account.sender) if b"Recipient address rejected" in m.data]


def test_never_on_every_copy_of_a_message_to_several_recipients(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    rcpts = [f"ok{n}-{account.name}@dest.example" for n in (1, 2, 3)]
    message = simple_message(account.sender, rcpts[0])
    with contextlib.closing(node.client(login=(account.name, account.password))) as smtp:
        assert smtp.mail(account.sender)[0] == 250
        for rcpt in rcpts:
            assert smtp.rcpt(rcpt, ["NOTIFY=NEVER"])[0] == 250
        code, text = smtp.data(message)
        assert code == 250, text
    queue_id = queue_id_of(text)
    for rcpt in rcpts:
        account.wait("delivery", rcpt, queue_id)
        assert "NOTIFY=FAILURE,DELAY" in dsn_sink.options_for(rcpt)
    # one queue file, one bounce address, per recipient: two of them are the milter's copies
    senders = {dsn_sink.find(rcpt)[-1].sender for rcpt in rcpts}
    assert len(senders) == 3 and all(s.startswith("bounces+") for s in senders)


def test_never_still_gets_postfixs_own_failure_notice_to_the_pipe(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    rcpt = f"reject-{account.name}@dest.example"
    queue_id = submit(account, rcpt, ("NOTIFY=NEVER",))
    account.wait("bounce", rcpt, queue_id)
    notice = postfix_notice(node, queue_id, "non-delivery")
    wait_for(lambda: piped(node, notice), 30, what="Postfix's notice through the bounce pipe")
    assert forwarded_lines(node, queue_id) == []
    shown = account.message(queue_id)
    assert [e["kind"] for e in shown["events"]] == ["bounce"]  # one event, not two


# -- FAILURE, RET=HDRS, ENVID, ORCPT ---------------------------------------------------------


def test_failure_with_ret_hdrs_envid_and_orcpt_arrive_in_the_forwarded_report(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    rcpt = f"reject-{account.name}@dest.example"
    envid = f"order-{uuid.uuid4().hex[:8]}"
    orcpt = f"original-{account.name}@dest.example"
    queue_id = submit(
        account,
        rcpt,
        ("NOTIFY=FAILURE", f"ORCPT=rfc822;{orcpt}"),
        ("RET=HDRS", f"ENVID={envid}"),
        body="The secret body of the order.\r\n",
    )
    account.wait("bounce", rcpt, queue_id)
    report = forwarded_mail(dsn_sink, account, envid.encode())
    assert f"Original-Envelope-Id: {envid}".encode() in report.data
    assert f"Original-Recipient: rfc822;{orcpt}".encode() in report.data
    assert b"Action: failed" in report.data
    assert b"text/rfc822-headers" in report.data
    assert b"The secret body of the order." not in report.data
    assert len(forwarded_lines(node, queue_id)) == 1


def test_failure_with_ret_full_returns_the_whole_message_in_the_forwarded_report(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    """004:82 "De "ret" parameter kan "FULL" zijn om het hele bericht door te sturen" (RET=FULL
    returns the whole message): the counterpart of RET=HDRS above."""
    rcpt = f"reject-full-{account.name}@dest.example"
    envid = f"full-{uuid.uuid4().hex[:8]}"
    marker = f"The whole body of order {uuid.uuid4().hex}."
    queue_id = submit(
        account,
        rcpt,
        ("NOTIFY=FAILURE",),
        ("RET=FULL", f"ENVID={envid}"),
        body=f"{marker}\r\nIts second line.\r\n",
    )
    account.wait("bounce", rcpt, queue_id)
    report = forwarded_mail(dsn_sink, account, envid.encode())
    assert b"Action: failed" in report.data
    assert b"message/rfc822" in report.data
    assert b"text/rfc822-headers" not in report.data
    assert marker.encode() in report.data and b"Its second line." in report.data
    assert b"Subject: hello" in report.data  # the returned message's own header
    assert len(forwarded_lines(node, queue_id)) == 1


def test_an_auto_reply_is_forwarded_under_failure(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    """004:110 "Als je afwezigheidsberichten, niet herkende errors en error berichten wilt
    ontvangen kun je de volgende JSON data gebruiken." with `"notify": "FAILURE"` (004:118):
    out-of-office replies are forwarded to the envelope address (under NEVER: above)."""
    rcpt = f"away-{account.name}@dest.example"
    queue_id = submit(account, rcpt, ("NOTIFY=FAILURE",))
    account.wait("delivery", rcpt, queue_id)
    original = dsn_sink.find(rcpt)[-1]
    reply = deliver_to_bounce_address(node, original.sender, auto_reply(rcpt, original.sender))
    wait_for(lambda: piped(node, reply), 30, what="the auto-reply through the bounce pipe")
    forwarded = forwarded_mail(dsn_sink, account, b"I am away until Monday.")
    assert b"Auto-Submitted: auto-replied" in forwarded.data
    assert len(forwarded_lines(node, queue_id)) == 1


def test_unclassifiable_mail_is_forwarded_under_failure(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    rcpt = f"ok-{account.name}@dest.example"
    queue_id = submit(account, rcpt, ("NOTIFY=FAILURE",))
    account.wait("delivery", rcpt, queue_id)
    original = dsn_sink.find(rcpt)[-1]
    marker = uuid.uuid4().hex
    deliver_to_bounce_address(node, original.sender, unclassifiable(rcpt, original.sender, marker))
    forwarded_mail(dsn_sink, account, marker.encode())


# -- DELAY ---------------------------------------------------------------------------------


def test_delay_notices_are_made_for_the_pipe_and_forwarded_only_when_asked(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    asked = f"defer-asked-{account.name}@dest.example"
    never = f"defer-never-{account.name}@dest.example"
    plain = f"defer-plain-{account.name}@dest.example"  # no NOTIFY: as Postfix, FAILURE,DELAY
    asked_id = submit(account, asked, ("NOTIFY=DELAY",))
    never_id = submit(account, never, ("NOTIFY=NEVER",))
    plain_id = submit(account, plain)
    ids = (asked_id, never_id, plain_id)
    account.wait("soft_bounce", asked, asked_id)
    account.wait("soft_bounce", never, never_id)
    account.wait("soft_bounce", plain, plain_id)
    etc = str(node.state / "postfix/etc")

    def delay_notices() -> bool:
        # Postfix makes a delay notice at the first queue run after delay_warning_time
        subprocess.run(["postqueue", "-c", etc, "-f"], check=True)
        log = maillog(node)
        return all(f"{q}: sender delay notification:" in log for q in ids)

    wait_for(delay_notices, 60, interval=1.0, what="Postfix's delay notifications")
    for queue_id in ids:
        notice = postfix_notice(node, queue_id, "delay")
        wait_for(lambda n=notice: piped(node, n), 30, what="the delay notice through the pipe")
    for rcpt in (asked, plain):
        report = forwarded_mail(dsn_sink, account, rcpt.encode())
        assert b"Action: delayed" in report.data
    assert forwarded_lines(node, never_id) == []
    for queue_id in ids:
        subprocess.run(["postsuper", "-c", etc, "-d", queue_id], check=True, capture_output=True)


# -- SUCCESS -------------------------------------------------------------------------------


def delivered_dsn(original: Any, rcpt: str) -> bytes:
    """A remote server's RFC 3464 "delivered" notice (NOTIFY=SUCCESS honoured there)."""
    return (
        Sink.dsn(original, rcpt, status="2.0.0", diagnostic="250 2.0.0 delivered to {rcpt}")
        .replace(b"Action: delayed", b"Action: delivered")
        .replace(b"Undelivered Mail Returned to Sender", b"Successful Mail Delivery Report")
    )


def test_success_is_asked_of_the_remote_with_failure_and_delay_and_forwarded(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    rcpt = f"ok-{account.name}@dest.example"
    queue_id = submit(account, rcpt, ("NOTIFY=SUCCESS",))
    account.wait("delivery", rcpt, queue_id)
    assert "NOTIFY=SUCCESS,FAILURE,DELAY" in dsn_sink.options_for(rcpt)
    original = dsn_sink.find(rcpt)[-1]
    deliver_to_bounce_address(node, original.sender, delivered_dsn(original, rcpt))
    report = forwarded_mail(dsn_sink, account, b"Action: delivered")
    assert rcpt.encode() in report.data


def test_success_relayed_notice_from_postfix_itself_is_forwarded(
    stack: Stack, sink: Sink, receiver: WebhookReceiver
) -> None:
    # The shared node's sink speaks no DSN: Postfix makes the "relayed" notice itself, for a
    # recipient the milter added back with NOTIFY=SUCCESS,FAILURE,DELAY.
    account = Account(stack, receiver)
    rcpt = f"ok-{account.name}@dest.example"
    queue_id = submit(account, rcpt, ("NOTIFY=SUCCESS",))
    account.wait("delivery", rcpt, queue_id)
    postfix_notice(stack, queue_id, "delivery status")
    report = forwarded_mail(sink, account, b"Action: relayed")
    assert rcpt.encode() in report.data


# -- MAIL FROM:<> --------------------------------------------------------------------------


def test_null_sender_everything_recorded_nothing_forwarded(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    rejected = f"reject-{account.name}@dest.example"
    queue_id = submit(account, rejected, ("NOTIFY=FAILURE",), sender="")
    account.wait("bounce", rejected, queue_id)
    notice = postfix_notice(node, queue_id, "non-delivery")
    wait_for(lambda: piped(node, notice), 30, what="Postfix's notice through the bounce pipe")
    rcpt = f"later-{account.name}@dest.example"
    later_id = submit(account, rcpt, sender="")
    account.wait("delivery", rcpt, later_id)
    original = dsn_sink.find(rcpt)[-1]
    assert original.sender.startswith("bounces+")
    dsn = deliver_to_bounce_address(node, original.sender, Sink.dsn(original, rcpt))
    account.wait("bounce", rcpt, later_id)
    reply = deliver_to_bounce_address(node, original.sender, auto_reply(rcpt, original.sender))
    for done in (dsn, reply):
        wait_for(lambda d=done: piped(node, d), 30, what="the mail through the bounce pipe")
    assert forwarded_lines(node, queue_id) == [] and forwarded_lines(node, later_id) == []


# -- trackbounces per sender and per message -----------------------------------------------


def test_trackbounces_per_sender_address_and_domain(
    node: Stack, dsn_sink: DsnSink, account: Account
) -> None:
    noreply = f"noreply@{account.domain}"
    node.txmail("accounts", "trackbounces", "set", account.name, noreply, "off")
    listed = node.txmail("accounts", "trackbounces", "list", account.name).stdout
    assert f"{noreply}: track_bounces = False" in listed

    def sent_as(sender: str) -> str:
        rcpt = f"ok-{uuid.uuid4().hex[:8]}@dest.example"
        submit(account, rcpt, sender=sender)
        return wait_for(lambda: dsn_sink.find(rcpt), 30, what="delivery")[-1].sender  # type: ignore[no-any-return]

    assert sent_as(noreply) == noreply
    assert sent_as(account.sender).startswith("bounces+")
    node.txmail("accounts", "trackbounces", "set", account.name, account.domain, "off")
    node.txmail("accounts", "trackbounces", "set", account.name, noreply, "on")
    assert sent_as(account.sender) == account.sender  # the domain's choice
    assert sent_as(noreply).startswith("bounces+")  # the address's wins over the domain's
    node.txmail("accounts", "trackbounces", "unset", account.name, account.domain)
    assert sent_as(account.sender).startswith("bounces+")  # the account's again
    refused = node.txmail(
        "accounts", "trackbounces", "set", account.name, "x@other.example", "off", check=False
    )
    assert refused.returncode != 0 and "not a sending domain" in refused.stderr


def test_trackbounces_per_api_message(node: Stack, dsn_sink: DsnSink, account: Account) -> None:
    key = node.txmail("accounts", "apikey", account.name).stdout.strip().splitlines()[-1]

    def send(trackbounces: bool | None, in_mime: str = "") -> str:
        rcpt = f"ok-{uuid.uuid4().hex[:8]}@dest.example"
        extra = {"X-CloudMTA-Track-Bounces": in_mime} if in_mime else None
        body: dict[str, Any] = {
            "envelope": account.sender,
            "recipient": rcpt,
            "mime": simple_message(account.sender, rcpt, extra_headers=extra).decode(),
        }
        if trackbounces is not None:
            body["trackbounces"] = trackbounces
        answer = requests.post(
            f"http://127.0.0.1:{8080 + node.offset}/v1/send",
            json=body,
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.status_code == 200, answer.text
        sent = wait_for(lambda: dsn_sink.find(rcpt), 30, what="delivery")[-1]
        assert b"X-CloudMTA-Track-Bounces" not in sent.data
        return sent.sender  # type: ignore[no-any-return]

    assert send(False) == account.sender  # the message's choice, the account tracks
    assert send(None).startswith("bounces+")
    node.txmail("accounts", "set", account.name, "track_bounces=false")
    assert send(True).startswith("bounces+")  # the message's choice, the account does not
    assert send(None) == account.sender
    # the client's own copy of the header in `mime` is not the request's trackbounces
    assert send(None, in_mime="true") == account.sender
    assert send(False, in_mime="true") == account.sender
    # a plain SMTP client cannot choose with the API's header: it is stripped and ignored
    rcpt = f"ok-{uuid.uuid4().hex[:8]}@dest.example"
    message = simple_message(
        account.sender, rcpt, extra_headers={"X-CloudMTA-Track-Bounces": "true"}
    )
    node.send((account.name, account.password), account.sender, [rcpt], message)
    sent = wait_for(lambda: dsn_sink.find(rcpt), 30, what="delivery")[-1]
    assert sent.sender == account.sender and b"X-CloudMTA-Track-Bounces" not in sent.data
