"""Rule `sender`: MAIL FROM and header From domains must be the account's (553 5.7.1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.milter.driver import Conversation, basic, eml

CASES = [
    # (MAIL FROM, From header, expected reply or "" for accepted)
    ("app@acme.example", "app@acme.example", ""),
    ("app@ACME.Example", "App <APP@acme.EXAMPLE>", ""),
    ("app@mail.acme.example", "app@acme.example", ""),
    ("", "app@acme.example", ""),  # MAIL FROM:<> is allowed
    ("app@evil.example", "app@acme.example", "553 5.7.1"),
    ("app@sub.acme.example", "app@acme.example", "553 5.7.1"),  # subdomain is another domain
    ("app@acme.example.evil", "app@acme.example", "553 5.7.1"),
    ("postmaster", "app@acme.example", "553 5.7.1"),
    ("app@acme.example", "app@evil.example", "553 5.7.1"),
    ("app@acme.example", '"app@acme.example" <x@evil.example>', "553 5.7.1"),
    ("app@acme.example", "app@acme.example, boss@evil.example", "553 5.7.1"),
    ("", "app@evil.example", "553 5.7.1"),
]


@pytest.mark.parametrize("mail_from,header_from,expected", CASES)
def test_sender_table(
    smtp: Callable[..., Conversation], mail_from: str, header_from: str, expected: str
) -> None:
    outcome = smtp().send(basic(sender=header_from), mail_from, ["user@example.net"])
    assert outcome.code == expected, outcome.reply
    if expected:
        assert (
            "evil.example" in outcome.text
            or "no domain" in outcome.text
            or "sub.acme.example" in outcome.text
            or "acme.example.evil" in outcome.text
        )
        assert "acme.example" in outcome.text  # says which domains are allowed


def test_envelope_sender_is_refused_at_mail_from(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp().send(basic(), "app@evil.example", ["user@example.net"])
    assert outcome.mail_reply is not None
    assert outcome.mail_reply[:2] == ("553", "5.7.1")
    assert "Sender (MAIL FROM) domain evil.example" in outcome.text


def test_header_from_is_named(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp().send(
        basic(sender="Boss <boss@evil.example>"), "app@acme.example", ["user@example.net"]
    )
    assert outcome.mail_reply is None
    assert outcome.code == "553 5.7.1"
    assert "Header From domain evil.example" in outcome.text


def test_no_from_header(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp().send(
        eml({"To": "user@example.net", "Subject": "x"}), "app@acme.example", ["user@example.net"]
    )
    assert outcome.code == "550 5.6.0"
    assert "From header" in outcome.text


def test_unauthenticated_mail_passes_through(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp(login=None).send(
        basic(sender="mailer-daemon@remote.example"), "", ["bounces+x@bounces.example.test"]
    )
    assert outcome.accepted
    assert outcome.actions == []
