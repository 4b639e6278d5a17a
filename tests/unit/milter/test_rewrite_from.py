"""Rule `rewrite_from`: From becomes the MAIL FROM address, display name kept."""

from __future__ import annotations

import email.utils
from collections.abc import Callable

import pytest

from tests.unit.milter.driver import Conversation, eml
from txmail.milter.rules import rewrite_from

CASES = [
    # (settings, MAIL FROM, From headers, From headers after)
    ({}, "out@acme.example", ["Shop <news@acme.example>"], ["Shop <news@acme.example>"]),
    (
        {"rewrite_from": "on"},
        "out@acme.example",
        ["Shop <news@acme.example>"],
        ["Shop <out@acme.example>"],
    ),
    (
        {"recipient_mode": "single"},
        "out@acme.example",
        ["Shop <news@acme.example>"],
        ["Shop <out@acme.example>"],
    ),
    (
        {"recipient_mode": "single", "rewrite_from": "off"},
        "out@acme.example",
        ["Shop <news@acme.example>"],
        ["Shop <news@acme.example>"],
    ),
    ({"rewrite_from": "on"}, "out@acme.example", ["news@acme.example"], ["out@acme.example"]),
    (
        {"rewrite_from": "on"},
        "out@acme.example",
        ['"Smith, Jo" <jo@acme.example>'],
        ['"Smith, Jo" <out@acme.example>'],
    ),
    (
        {"rewrite_from": "on"},
        "out@acme.example",
        ["=?utf-8?q?Caf=C3=A9?= <c@acme.example>"],
        ["=?utf-8?q?Caf=C3=A9?= <out@acme.example>"],
    ),
    (
        {"rewrite_from": "on"},
        "out@acme.example",
        ["a@acme.example", "b@acme.example"],
        ["out@acme.example"],
    ),
    ({"rewrite_from": "on"}, "", ["Shop <news@acme.example>"], ["Shop <news@acme.example>"]),
]


@pytest.mark.parametrize("settings,mail_from,before,after", CASES)
def test_rewrite_from_table(
    smtp: Callable[..., Conversation],
    settings: dict[str, str],
    mail_from: str,
    before: list[str],
    after: list[str],
) -> None:
    message = eml([*(("From", v) for v in before), ("To", "a@example.net"), ("Subject", "x")])
    outcome = smtp(settings).send(message, mail_from, ["a@example.net"])
    assert outcome.accepted, outcome.reply
    assert outcome.header("From") == after


@pytest.mark.parametrize(
    "display,address,written",
    [
        ("", "out@acme.example", "out@acme.example"),
        ("Shop", "out@acme.example", "Shop <out@acme.example>"),
        ("Smith, Jo", "out@acme.example", '"Smith, Jo" <out@acme.example>'),
        ("=?utf-8?q?Caf=C3=A9?=", "out@acme.example", "=?utf-8?q?Caf=C3=A9?= <out@acme.example>"),
        # not pure encoded-words: decoded, then quoted, so nothing in it is an address
        (
            "=?utf-8?q?Shop?= <x@y.example>",
            "o@acme.example",
            '"Shop <x@y.example>" <o@acme.example>',
        ),
        ("=?utf-8?q?a,b@y.example?=", "o@acme.example", '"a,b@y.example" <o@acme.example>'),
        ("=?nosuchcharset?q?x?= y", "o@acme.example", "o@acme.example"),  # undecodable: dropped
        ("Shop", "jü@acme.example", "Shop <jü@acme.example>"),  # SMTPUTF8: no traceback
    ],
)
def test_author_writes_one_address(display: str, address: str, written: str) -> None:
    assert rewrite_from.author(display, address) == written
    assert [a for _, a in email.utils.getaddresses([written]) if a] == [address]
