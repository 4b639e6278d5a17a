"""Text out of a returned mail's MIME parts: transfer decoding, charset repair, HTML to text.

DESCRIPTION
    decode_bytes() turns body bytes into text by their declared charset, repairing what old
    MTAs and mobile carriers get wrong (misspelt and unknown names, undeclared ISO-2022-JP);
    header_text() does the same for a header value (RFC 2047 words, raw 8-bit bytes);
    part_text() is the decoded text of one non-multipart part, with line ends as LF;
    html_to_text() is just enough HTML removal to read an NDR that only comes as text/html.

READS
    email.message.Message parts built with policy compat32 (txmail.bounce_pipe.parse), at
    most MAX_TEXT_CHARS of text from each.

FAILURE
    Never raises on bad input: undecodable bytes become replacement characters, and unknown
    or misspelt charsets fall back to UTF-8 and then Latin-1.
"""

from __future__ import annotations

import codecs
import re
from email.errors import MessageError
from email.header import decode_header
from email.message import Message
from typing import Any

MAX_TEXT_CHARS = 200_000

_CHARSET_ALIASES = {
    "uft-8": "utf-8",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "x-unknown": "latin-1",
    "unknown-8bit": "latin-1",
    "x-user-defined": "latin-1",
    "iso-8859-8-i": "iso-8859-8",
    "ks_c_5601-1987": "cp949",
    "shift-jis": "shift_jis",
    "x-sjis": "shift_jis",
    "gb2312": "gb18030",
    "gbk": "gb18030",
}


_SEVEN_BIT = ("iso-2022-jp", "iso2022_jp", "us-ascii", "ascii", "iso-2022-jp-2")


def decode_bytes(payload: bytes, charset: str | None) -> str:
    """Decode body bytes by their declared charset, repairing what is wrong.

    An undeclared charset is guessed: ISO-2022-JP escapes, then UTF-8, then
    Latin-1 (which cannot fail), as Japanese carriers and old MTAs often omit it.
    """
    if charset:
        name = _CHARSET_ALIASES.get(charset.strip().lower(), charset.strip().lower())
        try:
            codecs.lookup(name)
        except (LookupError, UnicodeError, ValueError, TypeError):
            # Unknown, misspelt, or not even text (8-bit bytes in the name).
            name = ""
        if name:
            if name in _SEVEN_BIT and not payload.isascii():
                # A 7-bit charset (ISO-2022-JP, ASCII) over 8-bit bytes: carriers that
                # re-encode a notice to UTF-8 (or Shift_JIS) keep the old label.
                for guess in ("utf-8", "shift_jis", "euc-jp"):
                    try:
                        return payload.decode(guess)
                    except UnicodeDecodeError:
                        continue
            try:
                return payload.decode(name)
            except (UnicodeError, LookupError):
                if name not in ("utf-8", "us-ascii", "ascii"):
                    try:
                        return payload.decode(name, "replace")
                    except (UnicodeError, LookupError):
                        pass
    if b"\x1b$B" in payload or b"\x1b$@" in payload:
        try:
            return payload.decode("iso-2022-jp", "replace")
        except UnicodeError:
            pass
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")


def header_text(value: object) -> str:
    """A header value as readable text: RFC 2047 words and 8-bit bytes decoded."""
    if value is None:
        return ""
    raw = str(value)
    if "=?" not in raw:
        if not raw.isascii():
            raw = repair_surrogates(raw)
        return " ".join(raw.split())
    try:
        chunks = decode_header(raw)
    except (ValueError, LookupError, UnicodeError, AssertionError, MessageError):
        return " ".join(raw.split())
    words: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            words.append(decode_bytes(chunk, charset))
        else:
            words.append(repair_surrogates(chunk))
    return " ".join("".join(words).split())


def repair_surrogates(text: str) -> str:
    # compat32 keeps undecodable 8-bit header bytes as surrogate escapes.
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return decode_bytes(data, None)


def raw_payload(part: Message) -> Any:
    """part.get_payload(): the list of a multipart, else its text. The stdlib raises on 8-bit
    bytes whose charset parameter it cannot use (RFC 2231 form, a NUL in it); those are read
    decoded, as ASCII with U+FFFD, as it reads them under an unknown charset."""
    try:
        return part.get_payload()
    except (TypeError, ValueError):
        data = part.get_payload(decode=True)
        return data.decode("ascii", "replace") if isinstance(data, bytes) else ""


def part_text(part: Message) -> str:
    """The decoded text of a non-multipart part (never raises)."""
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError, LookupError):
        payload = None
    if payload is None:
        raw = raw_payload(part)
        if isinstance(raw, str):
            return repair_surrogates(raw) if not raw.isascii() else raw
        if isinstance(raw, list):
            # A message/* part: the stdlib parsed it already; flatten headers.
            return "\n".join(message_lines(m) for m in raw if isinstance(m, Message))
        return ""
    if not isinstance(payload, bytes):
        return ""
    # TypeError: an RFC 2231 parameter given both whole and in pieces (charset*= and
    # charset*0=) makes the stdlib raise it.
    try:
        charset = part.get_content_charset()
    except (ValueError, LookupError, UnicodeError, TypeError):
        charset = None
    text = decode_bytes(payload[: MAX_TEXT_CHARS * 2], charset)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def message_lines(msg: Message) -> str:
    lines = [f"{k}: {header_text(v)}" for k, v in msg.raw_items()]
    body = raw_payload(msg)
    if isinstance(body, str) and body:
        lines.append("")
        lines.append(body)
    return "\n".join(lines)


_TAG_RE = re.compile(r"<(?:br|p|div|tr|li|/p|/div|/tr|/li|/h\d|h\d)\b[^>]*>", re.I)
_ANY_TAG_RE = re.compile(r"<[^>]{0,2000}>")
_STYLE_RE = re.compile(r"<(style|script)\b.*?</\1\s*>", re.I | re.S)
_ENTITY = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'"}


def html_to_text(html: str) -> str:
    """Enough HTML removal to read an NDR that only comes as text/html."""
    text = _STYLE_RE.sub(" ", html)
    text = _TAG_RE.sub("\n", text)
    text = _ANY_TAG_RE.sub(" ", text)
    for entity, char in _ENTITY.items():
        text = text.replace(entity, char)
    return text
