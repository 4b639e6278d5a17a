"""Per-recipient copies (milter/copies.py; the signed copy header is tokens/copies.py): the
header, the planning of copies, and the whole loop through the milter: the client's message on
the submission side, each copy fed back through the milter as if on Postfix's copy listener."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.unit.milter.driver import QUEUE_ID, Conversation, eml
from txmail.errors import TemporaryFailure
from txmail.milter.copies import (
    LISTENER,
    Copier,
    Envelope,
    copy_orders,
    kept_recipient,
    other_recipients,
)
from txmail.milter.plan import Plan
from txmail.milter.submission import Submission
from txmail.milter.tracking import TrackingContext
from txmail.store.messages import MessageRecord
from txmail.tokens.bounce_address import bounce_address, verify_bounce_address
from txmail.tokens.copies import HEADER, CopyHeader, CopySigner
from txmail.tokens.links import LinkSigner, Tracking

SECRET = b"0123456789abcdef0123456789abcdef"
LINKS = LinkSigner(b"0123456789abcdef-tracking")
NOW = 1_800_000_000


def signer(now: float = NOW, secret: bytes = SECRET) -> CopySigner:
    return CopySigner(secret, clock=lambda: now)


HEAD = CopyHeader(
    parent=QUEUE_ID,
    recipient="b@example.net",
    account="acme",
    tracking=Tracking(opens=True, clicks=False),
    message_class="priority",
    flags=1,
    tags=("receipt", "ü"),
    made_at=NOW,
)


# -- the header ------------------------------------------------------------------------------


def test_a_signed_header_verifies_and_says_what_was_signed() -> None:
    value = signer().sign(HEAD)
    assert all(len(line) < 78 for line in value.split("\r\n"))
    assert signer(NOW + 60).verify(value) == HEAD
    # Postfix hands folded values to the milter joined by a bare newline
    assert signer().verify(value.replace("\r\n", "\n")) == HEAD


@pytest.mark.parametrize("change", ["payload", "mac", "secret", "stale", "junk", "empty"])
def test_anything_not_signed_by_this_milter_is_refused(change: str) -> None:
    value = "".join(signer().sign(HEAD).split())
    payload, mac = value.split(".")
    checker = signer()
    if change == "payload":
        forged = HEAD.__class__(**{**HEAD.__dict__, "account": "other"})
        value = signer(secret=b"another secret of 32 bytes......").sign(forged)
        value = "".join(value.split()).split(".")[0] + "." + mac
    elif change == "mac":
        value = f"{payload}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
    elif change == "secret":
        checker = signer(secret=b"another secret of 32 bytes......")
    elif change == "stale":
        checker = signer(NOW + 7200)
    elif change == "junk":
        value = "not.a-token"
    else:
        value = ""
    assert checker.verify(value) is None


# -- planning --------------------------------------------------------------------------------


def test_single_mode_keeps_the_to_recipient_whatever_the_rcpt_order() -> None:
    plan = Plan(recipients=["copy@example.net", "to@example.net"], bcc="copy@example.net")
    assert kept_recipient(plan) == "to@example.net"
    assert other_recipients(plan, "to@example.net") == ["copy@example.net"]


def test_multi_mode_keeps_the_first_and_copies_each_other_address_once() -> None:
    plan = Plan(
        recipients=["a@x.example", "b@x.example", "B@X.example", "A@x.example", "c@x.example"]
    )
    kept = kept_recipient(plan)
    assert kept == "a@x.example"
    assert other_recipients(plan, kept) == ["b@x.example", "c@x.example"]


def test_orders_carry_the_dsn_parameters_and_never_track_the_bcc_copy() -> None:
    sub = Submission(
        account="acme", domains=("acme.example",), sender="a@acme.example", queue_id=QUEUE_ID
    )
    sub.plan = Plan(
        recipients=["to@example.net", "copy@example.net"],
        bcc="copy@example.net",
        tags=["t"],
        message_class="digest",
        flags=3,
    )
    sub.recipient_params = {
        "copy@example.net": ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;copy@example.net", "X-ODD=1"]
    }
    (order,) = copy_orders(
        sub, ["copy@example.net"], Tracking(True, True), now=NOW, track_bounces=True
    )
    assert order.rcpt_options == ("NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;copy@example.net")
    assert order.header == CopyHeader(
        parent=QUEUE_ID,
        recipient="copy@example.net",
        account="acme",
        tracking=Tracking(False, False),
        bcc=True,
        message_class="digest",
        flags=3,
        tags=("t",),
        made_at=NOW,
    )


# -- the whole loop through the milter -------------------------------------------------------

HTML_BODY = (
    '<html><body><p><a href="https://acme.example/order?id=7">order</a></p></body></html>\r\n'
)


def html(to: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    return eml(
        [
            ("From", "Shop <news@acme.example>"),
            ("To", to),
            ("Subject", "Receipt"),
            ("Message-ID", "<m1@acme.example>"),
            ("MIME-Version", "1.0"),
            ("Content-Type", "text/html; charset=utf-8"),
            *(extra or []),
        ],
        HTML_BODY,
    )


def tokens(body: bytes) -> list[Any]:
    found = re.findall(rb"https://t\.example\.com/[co]/([A-Za-z0-9_.-]+?)(?:\.gif)?\"", body)
    marks = [LINKS.verify(t.decode()) for t in found]
    assert marks and all(m is not None for m in marks)
    return marks


class Listener:
    """Stands in for Postfix's copy listener: each copy goes through the milter again."""

    def __init__(self, conversation: Conversation, fail_at: int | None = None) -> None:
        self.conversation = conversation
        self.fail_at = fail_at
        self.copies: list[tuple[Envelope, Any]] = []

    def __call__(self, batch: list[tuple[Envelope, bytes]]) -> list[str]:
        queued = []
        for envelope, message in batch:
            if self.fail_at is not None and len(self.copies) == self.fail_at:
                raise TemporaryFailure("the copy listener refused")
            queue_id = f"4jCOPY{len(self.copies):09d}"
            params = {envelope.recipient: envelope.rcpt_options}
            outcome = self.conversation.send(
                message,
                envelope.sender,
                [envelope.recipient],
                sender_params=envelope.mail_options,
                recipient_params=params,
                queue_id=queue_id,
                macros={"{daemon_name}": LISTENER},
            )
            if not outcome.accepted:
                raise TemporaryFailure(f"copy refused: {outcome.code} {outcome.text}")
            self.copies.append((envelope, outcome))
            queued.append(queue_id)
        return queued


@pytest.fixture
def node(smtp: Callable[..., Conversation]) -> Callable[..., tuple[Conversation, Listener]]:
    def make(
        settings: dict[str, Any] | None = None, fail_at: int | None = None
    ) -> tuple[Conversation, Listener]:
        tracking = TrackingContext(LINKS, "https://t.example.com")
        services = {"bounce_address": bounce_address, "bounce_secret": SECRET, "tracking": tracking}
        client = smtp(settings or {}, **services)
        listener = Listener(smtp(login=None, **services), fail_at)
        copier = Copier(CopySigner(SECRET), listener)
        client.context.copier = copier
        listener.conversation.context.copier = copier
        return client, listener

    return make


def record(client: redis.Redis, prefix: str, queue_id: str) -> dict[str, str]:
    return client.hgetall(f"{prefix}{{acme}}:message:{queue_id}")


def test_each_recipient_gets_tokens_of_its_own(
    node: Callable[..., Any], client: redis.Redis, prefix: str
) -> None:
    conversation, listener = node({"track_opens": True, "track_clicks": True})
    rcpts = ["a@example.net", "b@example.net", "c@example.net"]
    outcome = conversation.send(
        html("a@example.net, b@example.net, c@example.net"),
        "app@acme.example",
        rcpts,
        sender_params=("RET=HDRS", "ENVID=e1", "SIZE=900"),
        recipient_params={"c@example.net": ("NOTIFY=FAILURE", "ORCPT=rfc822;c@example.net")},
    )
    assert outcome.accepted, outcome.reply
    assert outcome.recipients == ["a@example.net"]
    assert {(m.kind, m.recipient, m.queue_id) for m in tokens(outcome.body)} == {
        ("click", "a@example.net", QUEUE_ID),
        ("open", "a@example.net", QUEUE_ID),
    }
    assert [e.recipient for e, _ in listener.copies] == ["b@example.net", "c@example.net"]
    for envelope, copy in listener.copies:
        assert envelope.sender == "app@acme.example"
        assert envelope.mail_options == ("RET=HDRS", "ENVID=e1")
        assert {(m.recipient, m.queue_id) for m in tokens(copy.body)} == {
            (envelope.recipient, QUEUE_ID)
        }
        assert copy.header(HEADER) == []  # stripped before it is queued
        copy_id = verify_bounce_address(copy.sender, SECRET)
        assert copy_id is not None and copy_id.startswith("4jCOPY")
        stored = record(client, prefix, copy_id)
        assert stored["parent"] == QUEUE_ID
        assert json.loads(stored["recipients"]) == [envelope.recipient]
        assert stored["envelope_sender"] == "app@acme.example"
    assert listener.copies[1][0].rcpt_options == ("NOTIFY=FAILURE", "ORCPT=rfc822;c@example.net")
    parent = record(client, prefix, QUEUE_ID)
    assert json.loads(parent["copies"]) == {
        "b@example.net": "4jCOPY000000000",
        "c@example.net": "4jCOPY000000001",
    }
    assert "parent" not in parent
    assert json.loads(parent["recipients"]) == rcpts  # the client's message, all of it


def test_single_mode_bcc_copy_is_a_separate_untracked_message(
    node: Callable[..., Any], client: redis.Redis, prefix: str
) -> None:
    conversation, listener = node({"recipient_mode": "single", "track_clicks": True})
    outcome = conversation.send(
        html("to@example.net", [("Cc", "cc@example.net")]),
        "out@acme.example",
        ["copy@example.net", "to@example.net"],
    )
    assert outcome.accepted, outcome.reply
    assert outcome.recipients == ["to@example.net"]
    assert {m.recipient for m in tokens(outcome.body)} == {"to@example.net"}
    ((envelope, copy),) = listener.copies
    assert envelope.recipient == "copy@example.net"
    assert b"/c/" not in copy.body and b'href="https://acme.example/order?id=7"' in copy.body
    assert copy.header("To") == ["to@example.net"] and copy.header("Cc") == []
    assert copy.header("From") == ["Shop <out@acme.example>"]
    stored = record(client, prefix, verify_bounce_address(copy.sender, SECRET))
    assert stored["bcc"] == "copy@example.net" and stored["parent"] == QUEUE_ID


def test_untracked_or_untrackable_mail_stays_one_message_without_bounce_tracking(
    node: Callable[..., Any],
) -> None:
    conversation, listener = node({"track_clicks": True, "track_bounces": False})
    rcpts = ["a@example.net", "b@example.net"]
    plain = eml([("From", "news@acme.example"), ("To", "a@example.net")], "No links.\r\n")
    assert conversation.send(plain, "app@acme.example", rcpts).recipients == rcpts
    off = html("a@example.net", [("X-Mxm-Flags", "0")])
    assert conversation.send(off, "app@acme.example", rcpts).recipients == rcpts
    assert listener.copies == []


def test_bounce_tracked_mail_gives_each_recipient_a_bounce_address_of_its_own(
    node: Callable[..., Any], client: redis.Redis, prefix: str
) -> None:
    """Issue 15 (2): one bounce address shared by every recipient let one of them report
    outcomes about the others; now each recipient's return path names its own queue file."""
    conversation, listener = node()
    rcpts = ["a@example.net", "b@example.net", "c@example.net"]
    plain = eml([("From", "news@acme.example"), ("To", "a@example.net")], "No links.\r\n")
    outcome = conversation.send(plain, "app@acme.example", rcpts)
    assert outcome.accepted, outcome.reply
    assert outcome.recipients == ["a@example.net"]
    assert [e.recipient for e, _ in listener.copies] == ["b@example.net", "c@example.net"]
    for envelope, copy in listener.copies:
        assert b"No links." in copy.body
        copy_id = verify_bounce_address(copy.sender, SECRET)
        assert copy_id is not None and copy_id != QUEUE_ID
        assert json.loads(record(client, prefix, copy_id)["recipients"]) == [envelope.recipient]
    parent = MessageRecord.from_hash(record(client, prefix, QUEUE_ID))
    assert parent.carried_recipients() == ["a@example.net"]


def test_a_copy_that_cannot_be_made_refuses_the_message(
    node: Callable[..., Any], client: redis.Redis, prefix: str
) -> None:
    conversation, listener = node({"track_clicks": True}, fail_at=1)
    outcome = conversation.send(
        html("a@example.net"),
        "app@acme.example",
        ["a@example.net", "b@example.net", "c@example.net"],
    )
    assert outcome.code == "451 4.3.0"
    assert record(client, prefix, QUEUE_ID) == {}


def test_a_forged_copy_header_from_a_client_is_only_stripped(
    node: Callable[..., Any], client: redis.Redis, prefix: str
) -> None:
    conversation, listener = node()
    forged = signer().sign(
        CopyHeader(
            parent="4jOTHER00000001", recipient="a@example.net", account="someone-else", made_at=NOW
        )
    )
    outcome = conversation.send(
        html("a@example.net", [(HEADER, forged)]), "app@acme.example", ["a@example.net"]
    )
    assert outcome.accepted
    assert outcome.header(HEADER) == []
    stored = record(client, prefix, QUEUE_ID)
    assert stored["account"] == "acme" and "parent" not in stored
    assert listener.copies == []


def test_the_copy_listener_takes_only_genuine_copies(node: Callable[..., Any]) -> None:
    _, listener = node()
    copies = listener.conversation
    macros = {"{daemon_name}": LISTENER}
    bare = copies.send(html("a@example.net"), "app@acme.example", ["a@example.net"], macros=macros)
    assert bare.code == "554 5.7.1" and HEADER in bare.text
    value = CopySigner(SECRET).sign(
        CopyHeader(parent=QUEUE_ID, recipient="a@example.net", account="acme")
    )
    wrong = copies.send(
        html("a@example.net", [(HEADER, value)]),
        "app@acme.example",
        ["b@example.net"],
        macros=macros,
    )
    assert wrong.code == "554 5.7.1" and "<a@example.net> only" in wrong.text


def test_the_parents_bounce_tracking_choice_travels_in_the_header() -> None:
    off = CopyHeader(**{**HEAD.__dict__, "track_bounces": False})
    assert signer().verify(signer().sign(off)) == off
    # a header of the layout before the choice travelled (11 fields) means tracked, as then
    value = "".join(signer().sign(off).split())
    encoded = value.split(".")[0]
    fields = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert len(fields) == 12 and fields[-1] == 0
    older = json.dumps(fields[:11], ensure_ascii=False, separators=(",", ":")).encode()
    checker = signer()
    mac = base64.urlsafe_b64encode(checker._mac(older)).decode().rstrip("=")
    token = base64.urlsafe_b64encode(older).decode().rstrip("=") + "." + mac
    verified = checker.verify(token)
    assert verified is not None and verified.track_bounces is True


def test_copies_keep_the_clients_notify_on_record_and_leave_asking_for_failures(
    node: Callable[..., Any], client: redis.Redis, prefix: str
) -> None:
    conversation, listener = node()
    rcpts = ["a@example.net", "b@example.net"]
    plain = eml([("From", "news@acme.example"), ("To", "a@example.net")], "No links.\r\n")
    never = {r: ("NOTIFY=NEVER", f"ORCPT=rfc822;{r}") for r in rcpts}
    outcome = conversation.send(plain, "app@acme.example", rcpts, recipient_params=never)
    assert outcome.accepted, outcome.reply
    ((envelope, copy),) = listener.copies
    # the copy is injected with the client's parameters, and widened on the copy listener
    assert envelope.rcpt_options == ("NOTIFY=NEVER", "ORCPT=rfc822;b@example.net")
    assert ("addrcpt", "<b@example.net>", "NOTIFY=FAILURE,DELAY ORCPT=rfc822;b@example.net") in (
        copy.actions
    )
    assert ("addrcpt", "<a@example.net>", "NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@example.net") in (
        outcome.actions
    )
    copy_id = verify_bounce_address(copy.sender, SECRET)
    assert json.loads(record(client, prefix, copy_id)["recipient_params"]) == {
        "b@example.net": ["NOTIFY=NEVER", "ORCPT=rfc822;b@example.net"]
    }
    assert json.loads(record(client, prefix, QUEUE_ID)["recipient_params"])["a@example.net"] == [
        "NOTIFY=NEVER",
        "ORCPT=rfc822;a@example.net",
    ]


def test_copy_orders_must_be_told_whether_the_message_is_bounce_tracked() -> None:
    import inspect

    parameter = inspect.signature(copy_orders).parameters["track_bounces"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert parameter.default is inspect.Parameter.empty
