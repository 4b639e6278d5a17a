"""txmail/tags.py: the one definition of what tags a message may carry, which the milter's
`tags` rule and the HTTP API's `tags` field both use."""

from __future__ import annotations

import pytest

from tests.unit.milter.driver import eml, eom_submission
from txmail.accounts.settings import from_fields
from txmail.milter.plan import Refusal
from txmail.milter.rules import tags as tags_rule
from txmail.tags import MAX_LENGTH, MAX_TAGS, TagRefusal, merge
from txmail.tracker.api import ApiError, parse_send


def test_tags_are_stripped_merged_and_kept_in_order() -> None:
    assert merge([" b", "a ", "", "  ", "b", "c"]) == ("b", "a", "c")
    assert merge([]) == ()
    assert merge(["x"] * 1000) == ("x",)  # duplicates do not count against the limit


@pytest.mark.parametrize(
    "pieces,words",
    [
        ([f"t{i}" for i in range(MAX_TAGS + 1)], "Too many tags (maximum 10)"),
        (["a" * (MAX_LENGTH + 1)], "at most 64 printable characters"),
        (["line\r\nbreak"], 'Tag "line??break" is not allowed'),
    ],
)
def test_a_refusal_says_what_to_fix(pieces: list[str], words: str) -> None:
    refused = merge(pieces)
    assert isinstance(refused, TagRefusal)
    assert (refused.code, refused.status) == (554, "5.6.0")
    assert words in refused.sentence


@pytest.mark.parametrize(
    "tags",
    [
        [f"t{i}" for i in range(MAX_TAGS + 1)],
        ["a" * (MAX_LENGTH + 1)],
        ["ok", "bad\x01tag"],
    ],
)
def test_the_api_and_the_milter_refuse_with_the_same_sentence(tags: list[str]) -> None:
    headers = [("X-Mxm-Tag", ",".join(tags))]
    smtp = tags_rule.check(eom_submission(eml(headers)), from_fields({}))
    assert isinstance(smtp, Refusal)
    with pytest.raises(ApiError) as caught:
        parse_send({"recipient": "a@b.test", "mime": "x", "tags": tags}, 10_000)
    api = caught.value
    assert api.http_status == 422
    assert (str(api.smtp_code), api.status, api.message) == (smtp.code, smtp.status, smtp.text)
