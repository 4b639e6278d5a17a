"""Rule `line_length`: body lines over 998 characters would be folded by Postfix after DKIM."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.milter.driver import Conversation, basic
from txmail.milter.rules import line_length


@pytest.mark.parametrize(
    "body,expected",
    [
        ("x" * 998 + "\r\nshort\r\n", ""),
        ("short\r\n" + "x" * 999 + "\r\n", "554 5.6.0"),
        ("x" * 5000, "554 5.6.0"),  # no line end at all
        (("y" * 900 + "\r\n") * 50, ""),
    ],
)
def test_line_length_table(smtp: Callable[..., Conversation], body: str, expected: str) -> None:
    outcome = smtp({}).send(basic(body=body), "app@acme.example", ["u@example.net"])
    assert outcome.code == expected, outcome.reply
    if expected:
        assert "longer than 998 characters" in outcome.text
        assert "quoted-printable or base64" in outcome.text


def test_reply_names_the_line(smtp: Callable[..., Conversation]) -> None:
    outcome = smtp({}).send(
        basic(body="a\r\nb\r\n" + "z" * 1200 + "\r\n"), "app@acme.example", ["u@example.net"]
    )
    assert "Line 3 of the message body" in outcome.text


@pytest.mark.parametrize(
    "body,line",
    [
        (b"", 0),
        (b"x" * 998, 0),
        (b"x" * 998 + b"\r", 0),  # the CR of the last line end is not counted
        (b"x" * 999, 1),
        (b"ok\r\n" + b"x" * 998 + b"\r\r\n", 2),  # a bare CR before the line end is a character
        (b"a\nb\n" + b"c" * 1000 + b"\n", 3),
    ],
)
def test_too_long_counts_characters_per_line(body: bytes, line: int) -> None:
    assert line_length.too_long(body) == line
