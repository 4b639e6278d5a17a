"""Fuzz: the milter's HTML rewrite for open and click tracking (txmail/milter/tracking.py).

Generated MIME trees (tests/fuzz/mime.py, with HTML parts full of links) and garbled ones go
through rewrite_html(). Properties: it never raises (a crash there is a 451 for ever for every
tracked message like it), never takes a second of CPU, and what it writes parses again.
"""

from __future__ import annotations

import email

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.budget import examples, within_budget
from tests.fuzz.mime import GARBLING, Leaf, harmless_leaves, message, trees
from tests.fuzz.mutations import Change, mutate, mutations
from txmail.milter.tracking import rewrite_html
from txmail.tokens.links import LinkSigner

SIGNER = LinkSigner(b"0123456789abcdef-fuzzing")
HTML_HEAD = (
    b"From: a@acme.example\r\nTo: b@example.net\r\nMIME-Version: 1.0\r\nContent-Type: text/html; "
)

links = st.lists(
    st.sampled_from(
        [
            '<a href="https://shop.example.com/a?x=1&amp;y=2">a</a>',
            "<a href=http://e.example/b>",
            "<a href='mailto:x@y'>",
            '<a data-unsubscribe href="https://e.example/u">',
            "<a href=>",
            '<a href="https://e.example/\u00e9">',
            '<A HREF="https://E.example/">',
            "</body>",
            "<a",
        ]
    ),
    max_size=6,
).map(" ".join)
html_leaves = st.builds(
    lambda html, encoding, charset: Leaf(
        f"text/html; charset={charset}", html.encode("utf-8"), encoding, disposition="inline"
    ),
    links,
    st.sampled_from(["base64", "quoted-printable", "7bit", "8bit", None]),
    st.sampled_from(["utf-8", "us-ascii", "iso-8859-1", "x-unknown", '"utf-8"']),
)
html_trees = trees(st.one_of(html_leaves, html_leaves, harmless_leaves()))


def rewritten(raw: bytes) -> None:
    result = within_budget(
        rewrite_html,
        raw,
        SIGNER,
        "https://track.example",
        "acme",
        "4jXCs06YbRzJJ2Y",
        "b@example.net",
    )
    if result is not None:
        email.message_from_bytes(result.body if isinstance(result.body, bytes) else raw)


@examples(200)
@given(
    st.one_of(
        html_trees.map(message),
        html_trees.map(message).flatmap(
            lambda raw: mutations(GARBLING).map(lambda changes: mutate(raw, changes))
        ),
    )
)
# found: a charset given whole and in RFC 2231 pieces (TypeError in get_content_charset), and
# a NUL in the charset name (ValueError in bytes.decode): both made the milter answer 451
@example(HTML_HEAD + b"charset*=utf-8''a; charset*0=b\r\n\r\n<a href=\"https://e.example/\">\r\n")
@example(HTML_HEAD + b'charset="a\x00b"\r\n\r\n<a href="https://e.example/">\r\n')
# found: a UTF-8 link in a part labelled us-ascii kept its bytes as surrogate escapes, and
# signing the click token raised UnicodeEncodeError
@example(HTML_HEAD + b'charset=us-ascii\r\n\r\n<a href="https://e.example/\xc3\xa9">\r\n')
# found by a long run: a raw UTF-8 file name made Content-Disposition an email.header.Header,
# which has no strip()
@example(
    HTML_HEAD + b'charset=utf-8\r\nContent-Disposition: inline; filename="\xc3\xa9.html"'
    b'\r\n\r\n<a href="https://e.example/">\r\n'
)
@example(
    HTML_HEAD + b"charset=utf-8\r\nContent-Transfer-Encoding: 7bit\xc3\xa9\r\n\r\n"
    b'<a href="https://e.example/">\r\n'
)
# found by a long run: a multipart without a boundary holding 8-bit bytes, beside an HTML part
# that was rewritten: the stdlib's BytesGenerator raised UnicodeEncodeError writing it back
@example(
    b"From: a@acme.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
    b'boundary="b"\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<a href="https://e.example/">'
    b"\r\n--b\r\nContent-Type: multipart/mixed\r\n\r\n\xc3\xa9\r\n--b--\r\n"
)
def test_rewrite_never_raises(raw: bytes) -> None:
    rewritten(raw)


@examples(100)
@given(st.binary(max_size=3000), mutations(GARBLING))
def test_rewrite_of_random_bytes_never_raises(raw: bytes, changes: list[Change]) -> None:
    rewritten(HTML_HEAD + b"charset=utf-8\r\n\r\n" + mutate(raw, changes))
