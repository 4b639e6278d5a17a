"""tracking.apply, the milter's call site: what DKIM signs afterwards is the rewritten message,
and a message carrying a single-recipient BCC copy is never tracked."""

from __future__ import annotations

import dataclasses

from txmail.accounts.settings import from_fields
from txmail.milter.submission import Submission
from txmail.milter.tracking import TrackingContext, apply
from txmail.tokens.links import LinkSigner

DEFAULTS = from_fields({})  # neither opens nor clicks tracked
NOT_TRACKED = dataclasses.replace(DEFAULTS, track_opens=False, track_clicks=False)
TRACKER = TrackingContext(LinkSigner(b"0123456789abcdef-tracking"), "https://t.example.com")


def submission(flags: int | None, bcc: str | None = None) -> Submission:
    sub = Submission(
        account="acme",
        domains=("acme.example",),
        sender="a@acme.example",
        queue_id="4jXQUEUE0000001",
    )
    for name, value in (
        ("From", "a@acme.example"),
        ("To", "b@example.net"),
        ("Content-Type", "text/html; charset=utf-8"),
    ):
        sub.add_header(name, value)
    sub.add_body(b'<p><a href="https://acme.example/x">x</a></p>\r\n')
    sub.plan.recipients = ["b@example.net"] + ([bcc] if bcc else [])
    sub.plan.flags = flags
    sub.plan.bcc = bcc
    return sub


def test_the_body_dkim_signs_is_the_tracked_one() -> None:
    sub = submission(flags=3)
    body = apply(sub, DEFAULTS, TRACKER)
    assert body is not None and b"https://t.example.com/c/" in body
    signed = sub.message_bytes()  # what finish.py hands to the DKIM signer next
    assert signed.endswith(body) and b"https://t.example.com/o/" in signed
    assert b'href="https://acme.example/x"' not in signed


def test_no_flags_and_no_account_default_leaves_the_body() -> None:
    sub = submission(flags=None)
    before = sub.message_bytes()
    assert apply(sub, NOT_TRACKED, TRACKER) is None
    assert sub.message_bytes() == before


def test_a_message_with_a_bcc_copy_is_never_tracked() -> None:
    sub = submission(flags=3, bcc="copy@example.net")
    before = sub.message_bytes()
    assert apply(sub, DEFAULTS, TRACKER) is None
    assert sub.message_bytes() == before
