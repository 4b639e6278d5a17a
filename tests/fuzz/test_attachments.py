"""Fuzz: the attachments rule (txmail/milter/rules/attachments.py) and Submission parsing.

Generated MIME trees (tests/fuzz/mime.py), given to the rule the way the milter does: headers
split and unfolded as Postfix sends them, the body as one chunk, parsed by Submission.parse().
Properties:
  - a tree with nothing forbidden in it is never refused;
  - a forbidden member of a zip is found whatever Office or ODF marker the zip also holds;
  - one forbidden file hidden anywhere in such a tree, by any of the evasions the rule claims
    to see through, is always refused with 554 5.7.1;
  - garbled, truncated and spliced messages never raise: the rule answers nothing, 554 5.7.1 or
    the documented 554 5.6.0 (UnreadableMessage / unreadable structure);
  - no message costs a second of CPU.
"""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.budget import examples, within_budget
from tests.fuzz.mime import (
    GARBLING,
    PE_HEAD,
    Node,
    forbidden_names,
    harmless_bodies,
    harmless_trees,
    hidden,
    message,
    safe_names,
    zipped,
)
from tests.fuzz.mutations import Change, mutate, mutations
from tests.unit.milter.driver import eom_submission
from txmail.accounts.settings import from_fields
from txmail.milter.plan import Refusal
from txmail.milter.rules import attachments

SETTINGS = from_fields({})


def verdict(raw: bytes) -> Refusal | None:
    return within_budget(attachments.check, eom_submission(raw), SETTINGS)


@examples(600)
@given(harmless_trees)
def test_nothing_forbidden_is_never_refused(tree: Node) -> None:
    raw = message(tree)
    refusal = verdict(raw)
    assert refusal is None, f"{refusal} for\n{raw[:3000]!r}"


@examples(1000)
@given(hidden())
def test_a_hidden_forbidden_file_is_always_found(case: tuple[bytes, str]) -> None:
    raw, what = case
    refusal = verdict(raw)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1"), (
        f"{what}: {refusal} for\n{raw[:3000]!r}"
    )


DOCUMENT_MEMBERS = [
    ("mimetype", b"application/vnd.oasis.opendocument.text"),
    ("[Content_Types].xml", b"<Types/>"),
    ("META-INF/manifest.xml", b"<m/>"),
    ("word/document.xml", b"<w/>"),
    ("content.xml", b"<o/>"),
]


@examples(300)
@given(
    st.lists(st.sampled_from(DOCUMENT_MEMBERS), min_size=1, max_size=3, unique=True),
    st.lists(st.tuples(safe_names, harmless_bodies), max_size=3),
    # .bin in an OOXML folder is a format part, judged by content (see the rule's docstring)
    forbidden_names().filter(lambda found: found[1] != "bin"),
    st.booleans(),
    st.integers(0, 8),
)
def test_document_markers_hide_nothing(
    markers: list[tuple[str, bytes]],
    others: list[tuple[str, bytes]],
    forbidden: tuple[str, str, list[str]],
    as_program: bool,
    position: int,
) -> None:
    members = [*markers, *others]
    hidden_member = (
        (members[0][0].rsplit("/", 1)[0] + "/x.png", PE_HEAD + bytes(64))
        if as_program
        else (forbidden[0], b"x")
    )
    members.insert(position % (len(members) + 1), hidden_member)
    archive = zipped(members)
    raw = (
        b"From: App <app@acme.example>\r\nTo: user@example.net\r\nSubject: doc\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream; name=report.docx\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(archive).replace(b"\n", b"\r\n")
    )
    refusal = verdict(raw)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1"), (
        f"{hidden_member[0]!r} among {[m[0] for m in members]}: {refusal}"
    )


@examples(800)
@given(
    st.one_of(harmless_trees.map(message), hidden().map(lambda case: case[0])), mutations(GARBLING)
)
def test_garbled_messages_never_raise(raw: bytes, changes: list[Change]) -> None:
    refusal = verdict(mutate(raw, changes))
    if refusal is not None:
        assert (refusal.code, refusal.status) in (("554", "5.7.1"), ("554", "5.6.0")), refusal
        assert refusal.text


@examples(300)
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    refusal = verdict(raw)
    if refusal is not None:
        assert (refusal.code, refusal.status) in (("554", "5.7.1"), ("554", "5.6.0")), refusal
