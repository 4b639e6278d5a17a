"""Rule `attachments`: no part of the message may be a forbidden file type.

Stage: eom. Reads the parsed message (every part, including the parts of attached messages,
message/rfc822) and the account's `forbidden_extensions`.

For every part it collects each file name the part gives: Content-Disposition `filename` and
Content-Type `name` (RFC 2231, with continuations and charsets; RFC 2047 encoded words, which
mail programs write although no RFC allows them there; raw UTF-8 as RFC 6532 allows), and
`begin 644 NAME` lines of uuencoded files inside text parts. A name is judged as Windows would
open it: Unicode compatibility forms folded (NFKC), control and format characters (such as the
right-to-left override) removed, any folder part dropped, trailing dots and spaces (and an NTFS
`::$DATA` stream suffix) stripped, case ignored. Only the last extension
counts, so `invoice.pdf.exe` is an .exe and `notes.exe.txt` is a text file.

The content is looked at too, whatever the name says: a part that starts with a Windows
executable header (MZ, with a PE header where one is pointed to) is refused, and a zip archive
(PK signature) is opened in memory (never written to disk) and the names and first bytes of its
members are judged the same way, down to ZIP_DEPTH nested archives. Office and OpenDocument files
are zip files too; they are documents, not archives, and their members are not judged.

Malformed MIME never raises: the parser records defects and the rule judges what it can read;
nothing forbidden found means the message passes. Structure too deep or too large to read, or a
zip archive that cannot be listed, is refused as unreadable.

Refuses: 554 5.7.1 naming the file and its type; 554 5.6.0 when the structure cannot be read.
Does not look inside other archive types (rar, 7z, gzip), TNEF (winmail.dat) or Office macros.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.header
import email.message
import email.utils
import functools
import io
import quopri
import re
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from txmail.milter.rules import EOM, Refusal
from txmail.milter.submission import Submission, UnreadableMessage

NAME = "attachments"
DESCRIPTION = "Forbidden attachment types (by name, inside zips, or Windows executables)"
STAGES = (EOM,)

MAX_DEPTH = 20           # nesting of multiparts and attached messages
MAX_PARTS = 2000         # parts in one message
MAX_NAME = 255           # characters of a file name that are judged
HEAD_BYTES = 4096        # decoded bytes looked at to recognise a file's type
ZIP_DEPTH = 3            # zip archives inside zip archives
ZIP_MAX_MEMBERS = 5000
ZIP_NESTED_MAX = 50 * 1024 * 1024   # a zip inside a zip is read into memory up to this size
# ASCII \s only: the text is bytes read as latin-1, where \x85 (a UTF-8 continuation byte) is NEL
UUENCODE_BEGIN = re.compile(r"^begin(?:-base64)? +[0-7]{3,4} +(.+?)\s*$", re.M | re.A)
ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?")
ADS_SUFFIX = re.compile(r"::\$data$", re.I)
DOCUMENT_MARKERS = ("[Content_Types].xml", "mimetype", "META-INF/manifest.xml")


class Forbidden(Exception):
    """A forbidden file was found; the message names it."""


class Unreadable(Exception):
    """Part of the structure could not be read."""


def check(submission: Submission, settings: dict[str, Any]) -> Refusal | None:
    forbidden = _forbidden(tuple(settings["forbidden_extensions"]))
    try:
        message = submission.parse()
        for part in _parts(message):
            _judge_part(part, forbidden)
    except Forbidden as found:
        return Refusal("554", "5.7.1", f"{found}; remove it (or send a link to it instead)")
    except (Unreadable, UnreadableMessage) as exc:
        return Refusal("554", "5.6.0", f"The message's MIME structure cannot be read ({exc}); "
                       "send it as a well-formed MIME message")
    return None


@functools.lru_cache(maxsize=256)
def _forbidden(extensions: tuple[str, ...]) -> frozenset[str]:
    return frozenset(e.lower().lstrip(".") for e in extensions)


# -- walking the structure -----------------------------------------------------------------

def _parts(message: email.message.Message) -> Iterator[email.message.Message]:
    """Every leaf part, depth first, in message order, including attached messages' parts."""
    stack: list[tuple[email.message.Message, int]] = [(message, 0)]
    count = 0
    while stack:
        part, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise Unreadable(f"nested more than {MAX_DEPTH} levels deep")
        if count > MAX_PARTS:
            raise Unreadable(f"more than {MAX_PARTS} parts")
        if part.is_multipart():
            if _names(part):
                yield part  # a container with a file name of its own is judged by that name
            stack.extend((child, depth + 1) for child in reversed(part.get_payload())
                         if isinstance(child, email.message.Message))
        else:
            yield part


def _judge_part(part: email.message.Message, forbidden: frozenset[str]) -> None:
    names = _names(part)
    for name in names:
        _judge_name(name, forbidden, f'Attachment "{_shown(name)}"')
    if part.is_multipart():
        return
    label = f'Attachment "{_shown(names[0])}"' if names else (
        f"A part of type {part.get_content_type()}")
    head = _head(part)
    _judge_content(head, part.get_content_maintype() == "text", label)
    if _is_zip(head):
        _judge_zip(_decoded(part), forbidden, label, 1)
    if part.get_content_maintype() == "text":
        text = head.decode("latin-1") if len(head) < HEAD_BYTES else _text(part)
        for match in UUENCODE_BEGIN.finditer(text):
            # the text is the part's bytes read as latin-1; a name is most likely UTF-8
            name = match.group(1).encode("latin-1").decode("utf-8", "replace")
            _judge_name(name, forbidden, f'The uuencoded file "{_shown(name)}"')


# -- file names ---------------------------------------------------------------------------

def _names(part: email.message.Message) -> list[str]:
    """Every file name the part's headers give, decoded, without duplicates."""
    raw: list[Any] = []
    headers = _utf8_headers(part)
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        try:
            value = headers.get_param(param, None, header)
        except (ValueError, TypeError, IndexError, LookupError):
            continue
        if value is not None:
            raw.append(value)
    names: list[str] = []
    for value in raw:
        try:
            text = email.utils.collapse_rfc2231_value(value).strip()
        except (ValueError, TypeError, LookupError, UnicodeError):
            text = str(value[2] if isinstance(value, tuple) else value)
        text = _decode_words(text)
        if text and text not in names:
            names.append(text[:MAX_NAME * 4])
    return names


def _utf8_headers(part: email.message.Message) -> email.message.Message:
    """The part, or when its Content-Type or Content-Disposition holds raw UTF-8 (RFC 6532) a
    message with just those headers decoded as a mail program shows them: the parser keeps such
    bytes escaped and get_param() would turn each of them into U+FFFD."""
    wanted = [(name, value) for name, value in part.raw_items()
              if name.lower() in ("content-type", "content-disposition")]
    decoded = [(name, value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
               for name, value in wanted]
    if decoded == wanted:
        return part
    headers = email.message.Message()
    for name, value in decoded:
        headers[name] = value
    return headers


def _decode_words(text: str) -> str:
    if not ENCODED_WORD.search(text):
        return text
    try:
        pieces = email.header.decode_header(text)
        return "".join(p.decode(c or "ascii", "replace") if isinstance(p, bytes) else p
                       for p, c in pieces)
    except (ValueError, LookupError, binascii.Error, UnicodeError,
            email.errors.HeaderParseError):  # a B word whose base64 is one character long
        return text


def normalized(name: str) -> str:
    """The name as Windows would store it: folded, cleaned, lower-cased, without folders."""
    name = unicodedata.normalize("NFKC", name)
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf"))
    name = re.split(r"[\\/]", name)[-1]
    name = ADS_SUFFIX.sub("", name.rstrip(" .\t\u3000"))  # ::$DATA before or after the dots
    return name.rstrip(" .\t\u3000").lower()[-MAX_NAME:]


def extension(name: str) -> str:
    name = normalized(name)
    return name.rsplit(".", 1)[1].strip() if "." in name else ""


def _judge_name(name: str, forbidden: frozenset[str], label: str) -> None:
    ext = extension(name)
    if ext and ext in forbidden:
        raise Forbidden(f"{label} has a forbidden type (.{ext})")


def _shown(name: str) -> str:
    """A file name fit for an SMTP reply: printable, short."""
    clean = "".join(c if c.isprintable() and c not in '"' else "?" for c in name)
    return clean if len(clean) <= 80 else clean[:77] + "..."


# -- content ------------------------------------------------------------------------------

def _head(part: email.message.Message) -> bytes:
    """The first decoded bytes of a part, without decoding the whole of a large base64 or
    quoted-printable one."""
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding not in ("base64", "quoted-printable"):
        # 7bit, 8bit, binary, uuencode or unknown: the part's own bytes (get_payload() would
        # read 8-bit ones through the charset and turn them into U+FFFD)
        return _decoded(part)[:HEAD_BYTES]
    try:
        payload = part.get_payload()
    except (TypeError, ValueError):
        # 8-bit bytes with a charset the stdlib cannot use (RFC 2231 style, a NUL) trip it
        return _decoded(part)[:HEAD_BYTES]
    if not isinstance(payload, str):
        return b""
    if encoding == "base64":
        chunk = re.sub(r"[^A-Za-z0-9+/]", "", payload[:HEAD_BYTES * 2])
        # the "=" padding was dropped with the line ends: put it back, or a file shorter than
        # three bytes (or the last bytes of the head) would be lost
        chunk = chunk[:-1] if len(chunk) % 4 == 1 else chunk + "=" * (-len(chunk) % 4)
        try:
            return base64.b64decode(chunk)[:HEAD_BYTES]
        except (binascii.Error, ValueError):
            return b""
    return quopri.decodestring(payload[:HEAD_BYTES * 3].encode("ascii", "replace"))[:HEAD_BYTES]


def _decoded(part: email.message.Message) -> bytes:
    try:
        decoded = part.get_payload(decode=True)
    except (ValueError, TypeError, binascii.Error):
        return b""
    return decoded if isinstance(decoded, bytes) else b""


def _text(part: email.message.Message) -> str:
    return _decoded(part).decode("latin-1")


def _is_executable(head: bytes, text_part: bool) -> bool:
    """A Windows (or DOS) executable: MZ, and a PE header where e_lfanew points, or any MZ
    file that is not labelled as text (a text part may well begin with the letters MZ)."""
    if not head.startswith(b"MZ"):
        return False
    if len(head) >= 64:
        offset = int.from_bytes(head[60:64], "little")
        if head[offset:offset + 4] == b"PE\0\0":
            return True
    return not text_part


def _judge_content(head: bytes, text_part: bool, label: str) -> None:
    if _is_executable(head, text_part):
        raise Forbidden(f"{label} is a Windows executable")


def _is_zip(head: bytes) -> bool:
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def _judge_zip(content: bytes, forbidden: frozenset[str], label: str, depth: int) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise Unreadable(f"{label.lower()} looks like a zip archive but cannot be listed: "
                         f"{exc.__class__.__name__}") from exc
    if len(members) > ZIP_MAX_MEMBERS:
        raise Unreadable(f"{label.lower()} is a zip archive of more than {ZIP_MAX_MEMBERS} "
                         "files")
    names = {m.filename for m in members}
    if any(marker in names for marker in DOCUMENT_MARKERS):
        return
    for member in members:
        if member.is_dir():
            continue
        where = f'{label} contains "{_shown(member.filename)}",'
        ext = extension(member.filename)
        if ext and ext in forbidden:
            raise Forbidden(f"{where} which has a forbidden type (.{ext})")
        head = _member_head(archive, member)
        if _is_executable(head, False):
            raise Forbidden(f"{where} which is a Windows executable")
        if _is_zip(head):
            if depth >= ZIP_DEPTH:
                raise Unreadable(f"{label.lower()} nests zip archives more than {ZIP_DEPTH} "
                                 "deep")
            if member.file_size > ZIP_NESTED_MAX:
                raise Unreadable(f'{label.lower()} holds "{_shown(member.filename)}", a zip '
                                 "archive too large to check")
            _judge_zip(_member_bytes(archive, member), forbidden,
                       f'{label} (in "{_shown(member.filename)}")', depth + 1)


def _member_head(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    """The first bytes of a member; an encrypted or unsupported member gives nothing (its
    name was judged already)."""
    try:
        with archive.open(member) as stream:
            return stream.read(HEAD_BYTES)
    except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError,
            OSError, ValueError):
        return b""


def _member_bytes(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    try:
        with archive.open(member) as stream:
            return stream.read(ZIP_NESTED_MAX + 1)[:ZIP_NESTED_MAX]
    except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError,
            OSError, ValueError):
        return b""
