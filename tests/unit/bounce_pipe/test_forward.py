"""Forwarding returned mail to the client's envelope sender, as its DSN parameters ask."""

from __future__ import annotations

import email
from email import policy

import pytest

from txmail.bounce_pipe.forward import (
    cut_is_plausible,
    decide,
    header_block,
    headers_only,
    headers_only_of,
    notify_of,
    ret_of,
)
from txmail.store.messages import MessageRecord


def record(
    notify: str | None = None, ret: str | None = None, sender: str = "app@acme.example"
) -> MessageRecord:
    params = {"user@example.net": [f"NOTIFY={notify}"]} if notify else {}
    return MessageRecord(
        queue_id="Q1",
        account="acme",
        envelope_sender=sender,
        recipients=["user@example.net"],
        recipient_params=params,
        envelope_params=[f"RET={ret}"] if ret else [],
    )


@pytest.mark.parametrize(
    "notify,kind,forwarded",
    [
        # no NOTIFY: failures and delays, as RFC 3461 allows and Postfix reports them
        (None, "bounce", True),
        (None, "soft_bounce", True),
        (None, "delivery", False),
        ("NEVER", "bounce", False),
        ("NEVER", "soft_bounce", False),
        ("DELAY", "soft_bounce", True),
        ("DELAY", "bounce", False),
        ("SUCCESS", "delivery", True),
        ("SUCCESS,FAILURE", "bounce", True),
        ("success,delay", "soft_bounce", True),  # case-insensitive, as RFC 3461 keywords are
        ("FAILURE", "complaint", False),  # complaints are never forwarded
    ],
)
def test_notify_decides(notify: str | None, kind: str, forwarded: bool) -> None:
    why = decide(
        record(notify),
        {"user@example.net": kind},
        auto_reply=False,
        unreadable=False,
        forward_auto_replies=False,
        trusted=True,
    )
    assert (why is not None) == forwarded


def test_null_sender_and_untrusted_bounces_are_never_forwarded() -> None:
    kinds = {"user@example.net": "bounce"}
    assert decide(record(sender=""), kinds, False, False, False, True) is None
    assert decide(record(sender="<>"), kinds, False, False, False, True) is None
    assert decide(record(), kinds, False, False, False, trusted=False) is None


@pytest.mark.parametrize("notify", [None, "NEVER", "FAILURE", "SUCCESS", "DELAY"])
def test_auto_replies_and_unclassified_mail_go_whatever_notify_says(notify: str | None) -> None:
    # the seed: with an envelope address and NOTIFY=NEVER, auto-replies and returned mail
    # that is not a DSN still arrive; with NOTIFY=FAILURE everything does
    for auto_reply, unreadable in ((True, False), (False, True)):
        why = decide(record(notify), {}, auto_reply, unreadable, True, trusted=True)
        assert why is not None and "whatever NOTIFY" in why


def test_nothing_without_an_envelope_address_even_auto_replies() -> None:
    assert decide(record(sender=""), {}, True, False, True, True) is None
    assert decide(record(sender="<>"), {}, False, True, True, True) is None


def test_under_never_dsns_stay_back_while_an_auto_reply_goes() -> None:
    kinds = {"user@example.net": "bounce"}
    assert decide(record("NEVER"), kinds, False, False, True, True) is None
    assert decide(record("NEVER"), {}, True, False, True, True) is not None


def test_the_override_off_keeps_auto_replies_back() -> None:
    assert (
        decide(
            record(),
            {},
            auto_reply=True,
            unreadable=False,
            forward_auto_replies=False,
            trusted=True,
        )
        is None
    )


def test_override_off_unreadable_notices_follow_failure() -> None:
    assert (
        decide(record(), {}, False, unreadable=True, forward_auto_replies=False, trusted=True)
        is not None
    )
    assert (
        decide(
            record("NEVER"), {}, False, unreadable=True, forward_auto_replies=False, trusted=True
        )
        is None
    )


def test_parameters_are_read_from_the_record() -> None:
    assert notify_of(record("SUCCESS,DELAY"), "<USER@example.net>") == {"SUCCESS", "DELAY"}
    assert notify_of(record(), "user@example.net") == {"FAILURE", "DELAY"}
    assert notify_of(record("FAILURE"), "user@example.net") == {"FAILURE"}
    assert ret_of(record(ret="hdrs")) == "HDRS"
    assert ret_of(record()) == ""


DSN = (
    b"From: MAILER-DAEMON@mx.example.net\r\nTo: app@acme.example\r\n"
    b"Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nIt failed.\r\n"
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
    b"Final-Recipient: rfc822; user@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: app@acme.example\r\nSubject: Your receipt\r\n\r\nSECRET BODY TEXT\r\n"
    b"--b--\r\n"
)


def test_ret_hdrs_cuts_the_returned_message_to_its_headers() -> None:
    cut = headers_only(DSN)
    assert b"SECRET BODY TEXT" not in cut
    assert b"Subject: Your receipt" in cut
    parsed = email.message_from_bytes(cut, policy=policy.compat32)
    assert "text/rfc822-headers" in [p.get_content_type() for p in parsed.walk()]
    assert b"Status: 5.1.1" in cut


def test_headers_only_leaves_mail_without_a_returned_message_alone() -> None:
    plain = b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n"
    assert headers_only(plain) == plain


def test_the_cut_keeps_the_mails_own_header_block_byte_for_byte() -> None:
    """The recorder checks a worker's cut against the mail's header block, so an honest cut
    must keep it as it came: not refolded, not rewritten with other line ends."""
    long_received = (
        b"Received: from mx.example.net (mx.example.net [192.0.2.1]) by "
        b"relay.acme.example (Postfix) with ESMTPS id 4jXCs06YbRzJJ2Y; "
        b"Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    )
    raw = long_received + DSN.replace(b'boundary="b"', b'\r\n\tboundary="b"')
    head = header_block(raw)
    assert head is not None and head.endswith(b"\r\n\r\n")
    cut = headers_only(raw)
    assert b"SECRET BODY TEXT" not in cut
    assert cut.startswith(head) and len(cut) < len(raw)
    assert cut_is_plausible(raw, cut)


def test_a_cut_is_believed_only_when_it_can_be_the_mails() -> None:
    cut = headers_only(DSN)
    assert cut != DSN and headers_only_of(DSN, cut) == cut
    assert headers_only_of(DSN, b"") == DSN  # b"": the worker says the cut is the mail
    head = header_block(DSN) or b""
    for forged in (
        b"Bcc: victim@example.org\r\n" + cut,  # a header added
        cut.replace(b"Subject: Undelivered", b"Subject: Pay now"),  # changed
        head + b"x" * len(DSN),  # longer than the mail
        b"SPAM",  # no header block at all
        head[:-2],
    ):  # the header block without its blank line
        assert not cut_is_plausible(DSN, forged), forged[:60]
        assert headers_only_of(DSN, forged) == DSN  # forwarded as it came
    assert header_block(b"no blank line\r\nat all\r\n") is None
    assert header_block(b"\r\nbody") == b"\r\n"  # an empty header block
    assert header_block(b"A: b\n\nbody") == b"A: b\n\n"
