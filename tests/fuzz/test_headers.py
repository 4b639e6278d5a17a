"""Fuzz: the header rules, on any text a client can put in a header.

X-CloudMTA-Tags / X-Mxm-Tag (rule tags), X-Mxm-Flags (flags), X-CloudMTA-Class (message_class)
and the From / To addresses the sender and single_recipient rules parse. Header values arrive as
pymilter gives them: UTF-8 decoded with surrogate escapes, folded lines joined by a bare
newline; here they are any text at all, CR, LF, NUL and non-ASCII included.
Properties: no rule raises or takes a second of CPU; every refusal is 5xx with an enhanced code
and a one-line sentence (no CR, LF or NUL that could split a log line or a reply); and each
decision is consistent with the header (accepted tags: at most 10, each 1 to 64 printable
characters, no duplicates, in the order given; flags only for a whole number 0 to 15; a class
only when every header names the same known class; a From accepted only when every address is
at one of the account's domains; a single-mode To only when it is an envelope recipient).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.budget import examples, within_budget
from txmail import tags as tag_limits
from txmail.accounts.settings import AccountSettings, from_fields
from txmail.milter.plan import Plan, Refusal
from txmail.milter.rules import flags, message_class, sender, single_recipient, tags
from txmail.milter.submission import Submission, domain_of, unfold

DOMAINS = ("acme.example", "mail.acme.example")
SETTINGS = from_fields({})
SINGLE = dataclasses.replace(SETTINGS, recipient_mode="single")

# Any text, with the characters that matter to headers made likely.
header_text = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),  # pymilter's escaped bytes
        st.sampled_from(list("\r\n\t\x00 ,;:<>@\"'()[]\\=.") + ["\n ", "\r\n ", "=?utf-8?B?"]),
    ),
    max_size=120,
).map("".join)
addresses = st.one_of(
    header_text,
    st.builds(
        lambda local, domain: f"{local}@{domain}",
        st.text(st.characters(codec="ascii"), max_size=12),
        st.sampled_from(
            [
                *DOMAINS,
                "ACME.example",
                "acme.example.",
                "[acme.example]",
                "evil.example",
                "acme.example.evil.example",
                "",
            ]
        ),
    ),
)
address_lists = st.lists(
    st.one_of(
        addresses,
        st.builds(lambda name, address: f'"{name}" <{address}>', header_text, addresses),
    ),
    min_size=0,
    max_size=4,
).map(", ".join)


def submission_with(
    headers: list[tuple[str, str]],
    envelope_sender: str = "app@acme.example",
    recipients: list[str] | None = None,
) -> Submission:
    submission = Submission(
        account="acme",
        domains=DOMAINS,
        sender=envelope_sender,
        recipients=list(recipients or ["user@example.net"]),
        plan=Plan(recipients=list(recipients or ["user@example.net"])),
    )
    for name, value in headers:
        submission.add_header(name, value)
    submission.stage = "eom"
    return submission


def judged(rule: Any, submission: Submission, settings: AccountSettings = SETTINGS) -> Any:
    verdict = within_budget(rule.check, submission, settings)
    if isinstance(verdict, Refusal):
        assert verdict.code[0] == "5" and verdict.status[0] == "5", verdict
        assert verdict.text and not any(c in verdict.text for c in "\r\n\x00"), verdict
    return verdict


@examples(400)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "X-CloudMTA-Tags",
                    "X-Mxm-Tag",
                    "x-mxm-tag",
                    "X-CLOUDMTA-TAGS",
                    "X-Mxm-Tags",
                    "Subject",
                ]
            ),
            st.one_of(header_text, st.lists(header_text, max_size=12).map(",".join)),
        ),
        max_size=4,
    )
)
@example([("X-Mxm-Tag", "a\n b, a ,\tc")])
@example([("X-Mxm-Tag", "x" * 64 + ",y")])
def test_tags(headers: list[tuple[str, str]]) -> None:
    verdict = judged(tags, submission_with(headers))
    pieces = [
        piece.strip()
        for name, value in headers
        if name.lower() in ("x-cloudmta-tags", "x-mxm-tag")
        for piece in unfold(value).split(",")
        if piece.strip()
    ]
    if isinstance(verdict, Refusal):
        assert verdict.status == "5.6.0"
        assert len(set(pieces)) > tag_limits.MAX_TAGS or any(
            len(p) > tag_limits.MAX_LENGTH or not p.isprintable() for p in pieces
        )
        return
    given_tags = list(verdict.tags) if verdict is not None else []
    assert given_tags == list(dict.fromkeys(pieces))  # every tag, once, in the order given
    assert len(given_tags) <= tag_limits.MAX_TAGS
    for tag in given_tags:
        assert 0 < len(tag) <= tag_limits.MAX_LENGTH and tag.isprintable() and "," not in tag
        assert tag == tag.strip()


@examples(300)
@given(
    st.lists(
        st.one_of(
            header_text,
            st.integers(-20, 40).map(str),
            st.integers(0, 15).map(lambda n: f" {n:03d} "),
        ),
        max_size=3,
    )
)
@example(["\u0661"])  # ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
@example(["15", "junk"])
def test_flags(values: list[str]) -> None:
    verdict = judged(flags, submission_with([("X-Mxm-Flags", v) for v in values]))
    if not values:
        assert verdict is None
        return
    first = values[0].strip()
    if first.isascii() and first.isdigit() and int(first) <= flags.MAXIMUM:
        assert isinstance(verdict, flags.Flagged) and verdict.flags == int(first)
    else:
        assert isinstance(verdict, Refusal) and verdict.status == "5.6.0"


@examples(300)
@given(
    st.lists(
        st.one_of(
            header_text,
            st.sampled_from(
                ["standard", "PRIORITY", " digest ", "Digest\n", "priority\x00", "bulk"]
            ),
        ),
        max_size=3,
    )
)
def test_message_class(values: list[str]) -> None:
    verdict = judged(message_class, submission_with([("X-CloudMTA-Class", v) for v in values]))
    named = {v.strip().lower() for v in values}
    if not values:
        assert verdict is None
    elif len(named) == 1 and named <= set(message_class.CLASSES):
        assert isinstance(verdict, message_class.Route) and {verdict.message_class} == named
    else:
        assert isinstance(verdict, Refusal) and verdict.status == "5.6.0"


@examples(400)
@given(st.lists(address_lists, max_size=3), addresses)
@example(['"a@acme.example" <x@evil.example>'], "app@acme.example")
@example(["x@evil.example\n\t<y@acme.example>"], "")
@example(["a@acme.example"], "a@b\rc")  # found: the CR reached the refusal text (and log line)
def test_sender(from_values: list[str], envelope_sender: str) -> None:
    submission = submission_with([("From", v) for v in from_values], envelope_sender)
    verdict = judged(sender, submission)
    if verdict is None:
        assert not envelope_sender or domain_of(envelope_sender) in DOMAINS
        assert submission.authors()
        assert all(domain_of(address) in DOMAINS for _, address in submission.authors())
    else:
        assert (verdict.code, verdict.status) in (("553", "5.7.1"), ("550", "5.6.0"))


@examples(300)
@given(
    st.lists(address_lists, max_size=3),
    st.lists(addresses.filter(bool), min_size=1, max_size=4),  # RCPT TO is never empty
    st.lists(address_lists, max_size=2),
)
@example(['"\n\r" <>'], ["user@example.net"], [])  # found: the To address was "\n"
# found: formataddr() raised on an SMTPUTF8 To address, so 451 4.3.0 for ever
@example(["Jos\u00e9 <jos\u00e9@example.net>, other@example.net"], ["jos\u00e9@example.net"], [])
@example(["\udc80 <\udc80@example.net>, other@example.net"], ["\udc80@example.net"], [])
def test_single_recipient(
    to_values: list[str], recipients: list[str], cc_values: list[str]
) -> None:
    headers = [("To", v) for v in to_values] + [("Cc", v) for v in cc_values]
    verdict = judged(single_recipient, submission_with(headers, recipients=recipients), SINGLE)
    if isinstance(verdict, Refusal):
        assert (verdict.code, verdict.status) in (("550", "5.6.0"), ("550", "5.7.1"))
        return
    assert isinstance(verdict, single_recipient.SingleRecipient)
    assert verdict.to in recipients
    kept = (
        [verdict.to] + ([verdict.bcc] if verdict.bcc is not None else []) + list(verdict.discarded)
    )
    assert sorted(kept) == sorted(recipients) or len(set(r.lower() for r in recipients)) < len(
        recipients
    )
    for edit in verdict.edits:
        assert edit.value is None or not any(c in edit.value for c in "\r\n\x00"), edit
        if edit.value is not None and verdict.to.isprintable():
            assert verdict.to.lower() in edit.value.lower(), edit
