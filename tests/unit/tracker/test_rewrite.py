"""milter/tracking.py: which links are tracked, the open pixel, encodings kept, headers kept."""

from __future__ import annotations

import dataclasses
import email
import email.message
import re
from email.policy import compat32

from txmail.accounts.settings import from_fields
from txmail.milter.tracking import rewrite_html, wanted
from txmail.tokens.links import LinkSigner, Tracking

SIGNER = LinkSigner(b"0123456789abcdef-tracking")
DEFAULTS = from_fields({})  # neither opens nor clicks tracked
BASE = "https://track.example.com"
HTML = """<html><body>
<p><a href="https://shop.example.com/a?x=1&amp;y=2">shop</a>
<a class="btn" href='http://example.com/b'>b</a>
<a href=https://example.com/c>c</a>
<a href="mailto:help@example.com">mail</a>
<a href="#top">top</a>
<a href="/relative">rel</a>
<a href="tel:+3112345">call</a>
<a data-unsubscribe href="https://example.com/unsub">unsubscribe</a>
<a href="https://example.com/unsub2" rel="unsubscribe">unsub2</a>
<a href="https://example.com/list-unsub">list</a>
<a name="anchor">no href</a>
</p></body></html>
"""


def message(
    html: str = HTML, cte: str = "7bit", charset: str = "utf-8", multipart: bool = True
) -> bytes:
    if not multipart:
        return (
            f"From: a@example.com\r\nTo: b@example.net\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/html; charset={charset}\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n"
        ).encode() + _encode(html, cte, charset)
    head = (
        "From: a@example.com\r\nTo: b@example.net\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        "List-Unsubscribe: <https://example.com/list-unsub>, <mailto:u@example.com>\r\n"
        'Content-Type: multipart/alternative; boundary="BOUND"\r\n\r\n'
    )
    return (
        head.encode() + b"--BOUND\r\nContent-Type: text/plain\r\n\r\n"
        b"see https://shop.example.com/a\r\n--BOUND\r\n"
        + f"Content-Type: text/html; charset={charset}\r\n"
        f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + _encode(html, cte, charset)
        + b"\r\n--BOUND--\r\n"
    )


def _encode(html: str, cte: str, charset: str) -> bytes:
    part = email.message.Message()
    data = html.encode(charset)
    if cte == "base64":
        import base64

        return base64.encodebytes(data).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        import quopri

        return quopri.encodestring(data).replace(b"\n", b"\r\n")
    del part
    return data.replace(b"\n", b"\r\n")


def html_of(raw: bytes, body: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0]
    parsed = email.message_from_bytes(head + b"\r\n\r\n" + body, policy=compat32)
    for part in parsed.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            return payload.decode(part.get_content_charset() or "utf-8")
    raise AssertionError("no html part")


def tracked_targets(html: str) -> list[str]:
    found = []
    for token in re.findall(re.escape(BASE) + r"/c/([A-Za-z0-9_.-]+)", html):
        mark = SIGNER.verify(token)
        assert mark is not None
        found.append((mark.index, mark.url, mark.recipient, mark.queue_id))
    return found


def test_web_links_are_tracked_and_nothing_else() -> None:
    raw = message()
    result = rewrite_html(raw, SIGNER, BASE, "acme", "QID123456", "b@example.net")
    assert result is not None and result.links == 3 and result.pixel
    html = html_of(raw, result.body)
    assert tracked_targets(html) == [
        (0, "https://shop.example.com/a?x=1&y=2", "b@example.net", "QID123456"),
        (1, "http://example.com/b", "b@example.net", "QID123456"),
        (2, "https://example.com/c", "b@example.net", "QID123456"),
    ]
    for kept in (
        'href="mailto:help@example.com"',
        'href="#top"',
        'href="/relative"',
        'href="tel:+3112345"',
        'href="https://example.com/unsub"',
        'href="https://example.com/unsub2"',
        'href="https://example.com/list-unsub"',
        'class="btn"',
    ):
        assert kept in html
    pixel = re.search(re.escape(BASE) + r"/o/([A-Za-z0-9_.-]+)\.gif", html)
    assert pixel and SIGNER.verify(pixel.group(1)).kind == "open"
    assert html.index(pixel.group(0)) < html.index("</body>")
    # the plain part is untouched
    assert b"see https://shop.example.com/a\r\n" in result.body


def test_encodings_are_kept_and_lines_stay_short() -> None:
    html = HTML.replace("<p>", "<p>" + "word " * 400 + "é")
    for cte in ("7bit", "8bit", "base64", "quoted-printable"):
        for multipart in (True, False):
            raw = message(html, cte, multipart=multipart)
            result = rewrite_html(raw, SIGNER, BASE, "acme", "QID123456", "")
            assert result is not None, cte
            # the single-part message has no List-Unsubscribe header naming /list-unsub
            assert len(tracked_targets(html_of(raw, result.body))) == (3 if multipart else 4)
            assert max(len(line) for line in result.body.split(b"\r\n")) <= 998
            assert "é" in html_of(raw, result.body)


def test_only_opens_or_only_clicks() -> None:
    raw = message()
    opens = rewrite_html(raw, SIGNER, BASE, "acme", "QID123456", "", opens=True, clicks=False)
    assert opens is not None and opens.links == 0 and b"/o/" in opens.body
    clicks = rewrite_html(raw, SIGNER, BASE, "acme", "QID123456", "", opens=False, clicks=True)
    assert clicks is not None and clicks.links == 3 and b"/o/" not in clicks.body
    assert rewrite_html(raw, SIGNER, BASE, "acme", "Q", "", opens=False, clicks=False) is None


def test_plain_text_html_attachments_and_attached_messages_are_left_alone() -> None:
    plain = b"From: a@example.com\r\nSubject: x\r\n\r\nhttps://example.com/\r\n"
    assert rewrite_html(plain, SIGNER, BASE, "acme", "Q", "") is None
    attached = (
        b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--B\r\nContent-Type: text/html\r\nContent-Disposition: attachment; "
        b'filename="page.html"\r\n\r\n<a href="https://example.com/x">x</a>\r\n'
        b"--B\r\nContent-Type: message/rfc822\r\n\r\nSubject: fwd\r\n"
        b'Content-Type: text/html\r\n\r\n<a href="https://example.com/y">y</a>\r\n'
        b"--B--\r\n"
    )
    assert rewrite_html(attached, SIGNER, BASE, "acme", "Q", "") is None


def test_flags_override_the_account() -> None:
    account = dataclasses.replace(DEFAULTS, track_opens=True, track_clicks=False)
    assert wanted(None, account) == Tracking(True, False)
    assert wanted(2, account) == Tracking(False, True)
    assert wanted(3, DEFAULTS) == Tracking(True, True)
    assert wanted(4, account) == Tracking(False, False)
    assert not wanted(None, DEFAULTS)
