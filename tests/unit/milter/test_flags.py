"""Rule `flags`: X-Mxm-Flags, a bitwise integer 0-15; only the first header counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.unit.milter.driver import QUEUE_ID, Conversation, basic

CASES = [
    # (X-Mxm-Flags headers, expected reply, stored flags)
    ([], "", ""),
    (["3"], "", "3"),
    (["0"], "", "0"),
    (["15"], "", "15"),
    ([" 12 "], "", "12"),
    (["16"], "554 5.6.0", None),
    (["-1"], "554 5.6.0", None),
    (["3.0"], "554 5.6.0", None),
    (["0x3"], "554 5.6.0", None),
    (["three"], "554 5.6.0", None),
    ([""], "554 5.6.0", None),
    (["٣"], "554 5.6.0", None),  # a digit, but not an ASCII one
    (["1", "junk"], "", "1"),  # later headers are ignored
    (["junk", "1"], "554 5.6.0", None),
]


@pytest.mark.parametrize("values,expected,stored", CASES)
def test_flags_table(
    smtp: Callable[..., Conversation],
    client: redis.Redis,
    prefix: str,
    values: list[str],
    expected: str,
    stored: str | None,
) -> None:
    extra = [("X-Mxm-Flags", v) for v in values]
    outcome = smtp().send(basic(extra=extra), "app@acme.example", ["u@example.net"])
    assert outcome.code == expected, outcome.reply
    if expected:
        assert "from 0 to 15" in outcome.text and "8 ignore the bounce list" in outcome.text
        return
    # No flags: the field is not stored (store/messages.py), and reads as "".
    assert (client.hget(f"{prefix}{{acme}}:message:{QUEUE_ID}", "flags") or "") == stored
    assert outcome.header("X-Mxm-Flags") == []
