"""Rule `control_headers`: X-CloudMTA-* and X-Mxm-* never leave the relay."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.milter.driver import Conversation, basic

CASES = [
    # (headers sent, headers that must be gone, headers that must stay)
    (
        [("X-CloudMTA-Class", "digest"), ("X-CloudMTA-Tags", "a")],
        ["X-CloudMTA-Class", "X-CloudMTA-Tags"],
        [],
    ),
    (
        [("X-Mxm-Flags", "3"), ("X-Mxm-Tag", "a"), ("X-Mxm-Tag", "b"), ("X-MXM-Campaign", "c")],
        ["X-Mxm-Flags", "X-Mxm-Tag", "X-Mxm-Campaign"],
        [],
    ),
    ([("X-CloudMTA-Route", "priority")], ["X-CloudMTA-Route"], []),  # a forged routing header
    (
        [("x-cloudmta-tags", "a"), ("X-CLOUDMTA-TAGS", "b"), ("X-Mailer", "app")],
        ["X-CloudMTA-Tags"],
        ["X-Mailer"],
    ),
    ([("X-CloudMTAX", "keep"), ("X-Mxmfoo", "keep")], [], ["X-CloudMTAX", "X-Mxmfoo"]),
]


@pytest.mark.parametrize("headers,gone,kept", CASES)
def test_control_headers_table(
    smtp: Callable[..., Conversation],
    headers: list[tuple[str, str]],
    gone: list[str],
    kept: list[str],
) -> None:
    outcome = smtp().send(basic(extra=headers), "app@acme.example", ["a@example.net"])
    assert outcome.accepted, outcome.reply
    for name in gone:
        assert outcome.header(name) == []
    for name in kept:
        assert outcome.header(name) != []
    assert [n for n, _ in outcome.headers][:4] == ["From", "To", "Subject", "Message-ID"]


def test_deletions_go_highest_index_first(smtp: Callable[..., Conversation]) -> None:
    extra = [("X-Mxm-Tag", "a"), ("X-Mxm-Tag", "b"), ("X-Mxm-Tag", "c")]
    outcome = smtp().send(basic(extra=extra), "app@acme.example", ["a@example.net"])
    edits = [a for a in outcome.actions if a[0] == "chgheader"]
    assert edits == [
        ("chgheader", "X-Mxm-Tag", 3, ""),
        ("chgheader", "X-Mxm-Tag", 2, ""),
        ("chgheader", "X-Mxm-Tag", 1, ""),
    ]
