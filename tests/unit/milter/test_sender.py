"""Rule `sender`: MAIL FROM and header From domains must be the account's (553 5.7.1)."""

from __future__ import annotations

import email.utils
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


REWRITE_CASES = [
    # (settings, MAIL FROM, From header, expected reply or "" for accepted, From after)
    (
        {"recipient_mode": "single"},
        "outgoing@acme.example",
        "Oxford Stones <newsletters@oxfordstones.example>",
        "",
        "Oxford Stones <outgoing@acme.example>",
    ),
    ({"rewrite_from": "on"}, "out@acme.example", "x@evil.example", "", "out@acme.example"),
    (
        {"rewrite_from": "on"},
        "out@acme.example",
        "a@evil.example, b@x.example",
        "",
        "out@acme.example",
    ),
    # the rewrite is off: a foreign From is refused as ever
    (
        {"recipient_mode": "single", "rewrite_from": "off"},
        "outgoing@acme.example",
        "Boss <boss@evil.example>",
        "553 5.7.1",
        "",
    ),
    # MAIL FROM:<> leaves nothing to rewrite to: the From header is checked
    ({"rewrite_from": "on"}, "", "Boss <boss@evil.example>", "553 5.7.1", ""),
    # MAIL FROM itself must still be the account's
    ({"rewrite_from": "on"}, "out@evil.example", "Shop <shop@acme.example>", "553 5.7.1", ""),
]


@pytest.mark.parametrize("settings,mail_from,header_from,expected,after", REWRITE_CASES)
def test_a_from_header_that_will_be_rewritten_is_not_refused(
    smtp: Callable[..., Conversation],
    settings: dict[str, str],
    mail_from: str,
    header_from: str,
    expected: str,
    after: str,
) -> None:
    outcome = smtp(settings).send(basic(sender=header_from), mail_from, ["user@example.net"])
    assert outcome.code == expected, outcome.reply
    if expected:
        assert "evil.example" in outcome.text
    else:
        assert outcome.header("From") == [after]


class RecordingSigner:
    """Stands in for dkim.Signer: remembers the domain it was asked to sign for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def sign(
        self, domain: str, message: bytes, *, allowed: tuple[str, ...] = ()
    ) -> list[tuple[str, str]]:
        self.asked.append((domain, tuple(allowed)))
        return []


HOSTILE_FROM = [
    # an encoded-word display name that carries header syntax of its own
    '"=?utf-8?q?Shop?= <x@y.example>" <ceo@victim.example>',
    # a display name that, written back unquoted, adds two more authors
    '"=?utf-8?q?x?=, ceo@victim.example," <me@acme.example>',
    # an encoded word whose encoded text holds a comma and an address
    '"=?utf-8?q?a,ceo@victim.example?=" <me@acme.example>',
]


@pytest.mark.parametrize("header_from", HOSTILE_FROM)
def test_a_rewritten_from_has_one_author_at_the_sending_domain_and_is_signed_for_it(
    smtp: Callable[..., Conversation], header_from: str
) -> None:
    signer = RecordingSigner()
    outcome = smtp({"rewrite_from": "on"}, signer=signer).send(
        basic(sender=header_from), "out@acme.example", ["user@example.net"]
    )
    assert outcome.accepted, outcome.reply
    values = outcome.header("From")
    assert len(values) == 1
    authors = [a for _, a in email.utils.getaddresses(values) if a]
    assert authors == ["out@acme.example"], values
    assert [domain for domain, _ in signer.asked] == ["acme.example"]
    assert "acme.example" in signer.asked[0][1]
