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
(PK signature) is opened in memory (never written to disk) and every member of it is judged the
same way, by name and by first bytes, down to ZIP_DEPTH nested archives. What else an archive
holds never excuses a member: a zip holding `mimetype` or `[Content_Types].xml` is judged like
any other. A member that cannot be read is not judged by its name alone, since what Windows
or 7-Zip would unpack from it is unknown: a compression method zipfile lacks (Deflate64, 9,
which both open; PPMd), a local header whose name differs from the central directory's (an
extractor that reads local headers writes that other name), damaged data. Such an archive is
refused with 554 5.7.1 saying it could not be checked, unless the member is encrypted (see
encrypted_archives below).

Office (OOXML) and OpenDocument files are zip files, and are judged by what they hold:
  - a member with a forbidden name, or one that is a Windows executable, is refused as in any
    zip (`word/media/setup.exe`; an executable renamed `Pictures/logo.png`);
  - an OLE compound file (D0 CF 11 E0: embedded objects such as `word/embeddings/oleObject1.bin`,
    ActiveX controls, a .doc or .xls, in an archive or attached) is searched whole for a Windows
    executable, then walked: each stream is put back together from its sectors (a program
    embedded by Office's Packager need not be stored in one piece, and its DOS and PE headers
    can sit in sectors far apart) and searched on its own; the names Packager stores with an
    embedded file (its `Ole10Native` stream) are judged like attachment names; a zip or OLE
    file in a stream is judged as a nested archive; a VBA project in it (`VBA`, `_VBA_PROJECT_CUR`
    storages) counts as macros. An OLE file whose header, sector chains or directory do not
    hold together could not be checked and is refused: among them a FAT of more sectors than
    the file's size needs (2 spare), a FAT or DIFAT sector named twice, a chain longer than
    the file has sectors (it loops); sector numbers may repeat, and without these checks a
    file of zeros makes a FAT, and a directory chain, many times its own size. The walker is
    our own (MS-CFB needs little: header, DIFAT, FAT, mini FAT, directory) rather than
    olefile: it reads every directory entry, reachable or not, holds the FAT and mini FAT as
    4 bytes an entry, checks the budget between storages and streams, charges the FAT, mini
    FAT, directory and mini stream bytes it reads, and each stream's size (entries may share
    sectors, so a small file can claim large streams),
    and it refuses what it cannot follow instead of working around it; olefile would add a
    dependency to the process that parses hostile mail, its parse step cannot be interrupted
    by the budget, and its leniency with damaged files would need policing anyway;
  - `.bin` is the extension OOXML itself gives its binary parts (printer settings, ActiveX,
    embedded objects), so inside an OOXML package (`[Content_Types].xml` at the top) a `.bin`
    member in a folder is judged by its content only, not refused by name;
  - macros count as files of type `.vba`: a VBA project found by name (`vbaProject.bin`), by
    the content type [Content_Types].xml gives a part, as Office finds it (a vbaProject or
    macro-sheet type, or a macroEnabled main document; an Override for the part's name, else
    the Default for its extension, so `word/x.bin` declared a vbaProject is one), or by what an
    OLE file holds; Basic or script modules (`Basic/`, `Scripts/`) in ODF. [Content_Types].xml
    is decoded as UTF-8 or UTF-16, the only encodings OPC allows (one declaring another is
    refused), and read with expat, no DTD allowed (no entity expansion); one that cannot be
    read could not be checked and is refused. Macros are refused when `vba` is in the account's
    `forbidden_extensions`, which it is by default. Macros have long been how malware arrives by
    mail; invoices, receipts and reports need none, and the default list already names `vba`.
    An account that must send macro-enabled documents takes `vba` off its list; that keeps the
    choice per account without another setting, and embedded executables are refused anyway.

Encrypted archives (account setting `encrypted_archives`): a zip whose members are encrypted
still lists their names, and by default (`judge-names`) it is judged by those names alone, as
before; an archive whose names are encrypted too (zip central-directory encryption; RAR with
`-hp` headers; 7z with encrypted headers) cannot be judged at all and is refused. `refuse`
refuses every encrypted zip as well. (Only those RAR and 7z archives are recognised: the rule
does not otherwise look inside RAR, 7z or gzip files.)

Cost: checking one message's archives has one Budget, shared by every archive in it, nested or
not: bytes inflated (ARCHIVE_BYTES), members looked at (ARCHIVE_MEMBERS), and CPU time of the
whole rule (ARCHIVE_CPU_SECONDS, measured with the CPU clock of the thread checking this
message, checked between members and between chunks of what is inflated). Past any of them
the message is refused with 554 5.7.1 saying the archive could not be checked; the byte and
member limits make that deterministic, the CPU limit catches what they do not price (slow
codecs, many tiny members). The clock is the thread's, not the process's: libmilter runs every
connection in a thread of the one milter process, and a process clock would charge each
message for all the others checked at the same time, so load (or bombs sent in parallel by
someone else) would turn an ordinary archive into a permanent 554. The same
limits bound memory: what the rule holds (nested zips and OLE files, read into memory once,
not as chunks joined; an OLE file's FAT, directory and streams) is charged to the byte budget
as it is read, so it holds no more than that budget in all, beside the message itself, the
chunk (READ_CHUNK) being inflated and passing copies of what is being read. libmilter gives
no way to notice, in the middle of a callback, that Postfix or its client has gone away (an
abort arrives only after eom returns), so the budget is also what bounds work done for a
client that has left.

Malformed MIME never raises: the parser records defects and the rule judges what it can read;
nothing forbidden found means the message passes. Structure too deep or too large to read, or a
zip archive that cannot be listed, is refused as unreadable; one that needs a zip version
zipfile lacks, or holds a member without a name, could not be checked. Damaged archives never
raise either: as a last line, check() answers "could not be checked" (and logs a warning with
the traceback) for the errors zipfile, zlib, lzma, bz2 and expat raise (ARCHIVE_ERRORS) where
no handler closer to them caught one; any other exception is a bug and is let out.

Refuses: 554 5.7.1 naming the file and its type, or saying why an archive could not be checked
(too costly, or encrypted); 554 5.6.0 when the structure cannot be read. Does not list other
archive types (rar, 7z, gzip: only the encrypted headers above are recognised), does not look
inside TNEF (winmail.dat), does not judge what a macro does, and does not find Excel 4 macros
kept inside an .xls's Workbook stream (in OOXML their macro-sheet content type is found).
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
import logging
import lzma
import quopri
import re
import struct
import sys
import time
import unicodedata
import urllib.parse
import zipfile
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, Refusal
from txmail.milter.submission import Submission, UnreadableMessage

NAME = "attachments"
DESCRIPTION = "Forbidden attachment types (by name, inside zips, or Windows executables)"
STAGES = (EOM,)

MAX_DEPTH = 20  # nesting of multiparts and attached messages
MAX_PARTS = 2000  # parts in one message
MAX_NAME = 255  # characters of a file name that are judged
HEAD_BYTES = 4096  # decoded bytes looked at to recognise a file's type
ZIP_DEPTH = 3  # zip archives inside zip archives
ZIP_MAX_MEMBERS = 5000
# A central directory entry is 46 bytes plus its name, extra field and comment; 1 KiB an entry
# on average is far above what archives carry (names of a few dozen characters)
ZIP_MAX_DIRECTORY = ZIP_MAX_MEMBERS * 1024
ZIP_END_SEARCH = 22 + 65535  # the end record, and the archive comment it may end with
ZIP_NESTED_MAX = 50 * 1024 * 1024  # a zip inside a zip is read into memory up to this size
# One budget per message, across all its archives (see Budget). 128 MB is many times what a
# 10 MB message holds unless it is built to inflate: real nested zips hold compressed data.
ARCHIVE_BYTES = 128 * 1024 * 1024
ARCHIVE_MEMBERS = 20_000
ARCHIVE_CPU_SECONDS = 3.0  # of this thread, for the whole rule: from before the MIME is parsed
READ_CHUNK = 1024 * 1024
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# MZ followed, where e_lfanew sits, by an offset under 4096 (a lookahead, so an MZ inside
# another's header is still seen)
PE_CANDIDATE = re.compile(rb"MZ(?=.{58}[\x00-\xff][\x00-\x0f]\x00\x00)", re.S)
MAX_PE_PROBES = 10_000
ZIP_ENCRYPTED = 0x0001  # general-purpose flag bits (APPNOTE 4.4.4)
ZIP_STRONG_ENCRYPTION = 0x0040
ZIP_MASKED_HEADERS = 0x2000  # the central directory is encrypted
ZIP_AES = 99  # WinZip AES "compression method"
# ASCII \s only: the text is bytes read as latin-1, where \x85 (a UTF-8 continuation byte) is NEL
UUENCODE_BEGIN = re.compile(r"^begin(?:-base64)? +[0-7]{3,4} +(.+?)\s*$", re.M | re.A)
ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?")
ADS_SUFFIX = re.compile(r"::\$data$", re.I)
OOXML_MARKER = "[Content_Types].xml"
ODF_MARKERS = ("mimetype", "META-INF/manifest.xml")
ODF_LIBRARY_INDEXES = ("script-lc.xml", "script-lb.xml", "dialog-lc.xml", "dialog-lb.xml")
MACRO_TYPE = "vba"
# Content types (in [Content_Types].xml, lower-cased) of a VBA project, its signatures, Excel 4
# macro sheets, and the main parts of macro-enabled documents, templates and add-ins.
MACRO_CONTENT_TYPES = ("vbaproject", "macroenabled", "macrosheet")
# OLE storage and stream names that only a VBA project has (.doc: Macros/VBA; .xls:
# _VBA_PROJECT_CUR; a vbaProject.bin: VBA, with _VBA_PROJECT in it)
OLE_MACRO_NAMES = ("vba", "_vba_project", "_vba_project_cur")
OLE_PACKAGE = "\x01ole10native"  # the stream in which Packager embeds a file
OLE_END, OLE_FREE = 0xFFFFFFFE, 0xFFFFFFFF
OLE_MINI_CUTOFF = 4096
OLE_MINI_SECTOR = 64
OLE_FAT_SLACK = 2  # FAT sectors a writer may keep beyond those the file's size needs
SECTOR_NUMBER_TYPE = next(code for code in "IL" if array(code).itemsize == 4)
# What zipfile raises for a member it cannot read: its own errors, a method it lacks
# (NotImplementedError), encryption (RuntimeError), and its decompressors' errors (zlib.error,
# lzma.LZMAError; bz2 raises OSError; a truncated stream EOFError).
MEMBER_ERRORS = (
    RuntimeError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
)
# The last line of check(): what zipfile, zlib, lzma, bz2 and expat raise on hostile input
# (struct.error from a truncated record, UnicodeDecodeError, a ValueError, from a name), so
# that a place the rule does not yet guard answers "could not be checked", not 451 and a
# traceback. Anything else is a bug and is let through to surface.
ARCHIVE_ERRORS = (*MEMBER_ERRORS, zipfile.LargeZipFile, struct.error, expat.ExpatError)
# OPC allows its XML parts only these encodings (ECMA-376 Part 2, 8.1.4)
OPC_ENCODINGS = ("utf-8", "utf-16")
XML_ENCODING = re.compile(r"""\A\ufeff?<\?xml\s[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")

log = logging.getLogger(__name__)


@dataclass
class Budget:
    """What checking one message's archives may cost; the defaults are the module's limits.
    `clock` is the CPU clock of the thread doing the check (a test passes its own): libmilter
    runs each connection in a thread of one process, and the process clock would charge this
    message for every other one being checked at the same time."""

    inflated_bytes: int = ARCHIVE_BYTES
    members: int = ARCHIVE_MEMBERS
    cpu_seconds: float = ARCHIVE_CPU_SECONDS
    clock: Callable[[], float] = time.thread_time


@dataclass
class Check:
    """One message being checked: the account's choices and what has been spent so far."""

    forbidden: frozenset[str]
    refuse_encrypted: bool
    budget: Budget = field(default_factory=Budget)
    inflated: int = 0
    members: int = 0
    started: float = 0.0
    attachment: str = "An attachment"  # the message's part being judged, for replies

    def __post_init__(self) -> None:
        self.started = self.budget.clock()

    def spend(self, inflated: int = 0, members: int = 0) -> None:
        self.inflated += inflated
        self.members += members
        if self.inflated > self.budget.inflated_bytes:
            why = f"its archives unpack to more than {self.budget.inflated_bytes >> 20} MB"
        elif self.members > self.budget.members:
            why = f"its archives hold more than {self.budget.members} files"
        elif self.budget.clock() - self.started > self.budget.cpu_seconds:
            why = "its archives take too long to unpack"
        else:
            return
        raise Uncheckable(
            f"{self.attachment} could not be checked: {why}; send the files in "
            "fewer or smaller archives (or send a link to it instead)"
        )


class Forbidden(Exception):
    """A forbidden file was found; the message names it."""


class Unreadable(Exception):
    """Part of the structure could not be read."""


class Uncheckable(Exception):
    """An archive could not be judged (too costly, or encrypted); the message is the whole
    sentence for the client."""


def check(
    submission: Submission, settings: AccountSettings, budget: Budget | None = None
) -> Refusal | None:
    state = Check(
        _forbidden(tuple(settings.forbidden_extensions)),
        settings.encrypted_archives == "refuse",
        budget or Budget(),
    )
    try:
        message = submission.parse()
        for part in _parts(message):
            _judge_part(part, state)
    except Forbidden as found:
        return Refusal("554", "5.7.1", f"{found}; remove it (or send a link to it instead)")
    except Uncheckable as reason:
        return Refusal("554", "5.7.1", str(reason))
    except (Unreadable, UnreadableMessage) as exc:
        return Refusal(
            "554",
            "5.6.0",
            f"The message's MIME structure cannot be read ({exc}); "
            "send it as a well-formed MIME message",
        )
    except ARCHIVE_ERRORS as exc:  # a place not yet guarded below: log it, refuse the message
        log.warning("%s could not be checked", state.attachment, exc_info=exc)
        return Refusal(
            "554",
            "5.7.1",
            f"{state.attachment} could not be checked: an archive "
            f"in it cannot be read ({exc.__class__.__name__}); send the files again "
            "in a zip archive that uses ordinary (Deflate) compression (or send a "
            "link to it instead)",
        )
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
            children = part.get_payload()
            if isinstance(children, list):  # always, for a multipart part
                stack.extend(
                    (child, depth + 1)
                    for child in reversed(children)
                    if isinstance(child, email.message.Message)
                )
        else:
            yield part


def _judge_part(part: email.message.Message, state: Check) -> None:
    forbidden = state.forbidden
    names = _names(part)
    for name in names:
        _judge_name(name, forbidden, f'Attachment "{_shown(name)}"')
    if part.is_multipart():
        return
    label = (
        f'Attachment "{_shown(names[0])}"'
        if names
        else (f"A part of type {part.get_content_type()}")
    )
    head = _head(part)
    _judge_content(head, part.get_content_maintype() == "text", label)
    state.attachment = label
    if _is_zip(head):
        _judge_zip(_decoded(part), state, label, 1)
    elif head.startswith(OLE_SIGNATURE):
        _judge_ole(_decoded(part), state, label, None, 0)
    elif _is_rar_or_7z(head):
        _judge_other_archive(_decoded(part), label)
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
            names.append(text[: MAX_NAME * 4])
    return names


def _utf8_headers(part: email.message.Message) -> email.message.Message:
    """The part, or when its Content-Type or Content-Disposition holds raw UTF-8 (RFC 6532) a
    message with just those headers decoded as a mail program shows them: the parser keeps such
    bytes escaped and get_param() would turn each of them into U+FFFD."""
    wanted = [
        (name, value)
        for name, value in part.raw_items()
        if name.lower() in ("content-type", "content-disposition")
    ]
    decoded = [
        (name, value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        for name, value in wanted
    ]
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
        return "".join(
            p.decode(c or "ascii", "replace") if isinstance(p, bytes) else p for p, c in pieces
        )
    except (
        ValueError,
        LookupError,
        binascii.Error,
        UnicodeError,
        email.errors.HeaderParseError,
    ):  # a B word whose base64 is one character long
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
        chunk = re.sub(r"[^A-Za-z0-9+/]", "", payload[: HEAD_BYTES * 2])
        # the "=" padding was dropped with the line ends: put it back, or a file shorter than
        # three bytes (or the last bytes of the head) would be lost
        chunk = chunk[:-1] if len(chunk) % 4 == 1 else chunk + "=" * (-len(chunk) % 4)
        try:
            return base64.b64decode(chunk)[:HEAD_BYTES]
        except (binascii.Error, ValueError):
            return b""
    return quopri.decodestring(payload[: HEAD_BYTES * 3].encode("ascii", "replace"))[:HEAD_BYTES]


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
        if head[offset : offset + 4] == b"PE\0\0":
            return True
    return not text_part


def _judge_content(head: bytes, text_part: bool, label: str) -> None:
    if _is_executable(head, text_part):
        raise Forbidden(f"{label} is a Windows executable")


def _is_zip(head: bytes) -> bool:
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def _judge_zip(content: bytes, state: Check, label: str, depth: int) -> None:
    archive, members = _listed(content, label)
    if len(members) > ZIP_MAX_MEMBERS:
        raise Unreadable(f"{label.lower()} is a zip archive of more than {ZIP_MAX_MEMBERS} files")
    state.spend(members=len(members))
    names = {m.filename for m in members}
    ooxml = OOXML_MARKER in names
    odf = any(marker in names for marker in ODF_MARKERS)
    for member in members:
        if not member.filename:  # is_dir() would raise; an extractor makes up a name
            raise Uncheckable(
                f"{label} could not be checked: a file in it has no name; send "
                "the files again in an ordinary zip archive (or send a link to "
                "it instead)"
            )
        if member.filename.endswith("/"):  # a folder
            continue
        state.spend()
        where = f'{label} contains "{_shown(member.filename)}",'
        if _is_macro(member.filename, ooxml, odf) and MACRO_TYPE in state.forbidden:
            raise _macros(label, member.filename)
        ext = extension(member.filename)
        format_part = ooxml and ext == "bin" and "/" in member.filename.strip("/")
        if ext and ext in state.forbidden and not format_part:
            raise Forbidden(f"{where} which has a forbidden type (.{ext})")
        if _is_encrypted(member):
            if state.refuse_encrypted:
                raise Uncheckable(
                    f'{label} is an encrypted archive ("{_shown(member.filename)}"'
                    " is encrypted), and this account does not accept encrypted "
                    "archives; send it unencrypted (or send a link to it "
                    "instead)"
                )
            continue  # only its name can be judged, and it was
        head = _member_head(archive, member, state, label)
        inner = f'{label} (in "{_shown(member.filename)}")'
        if _is_executable(head, False):
            raise Forbidden(f"{where} which is a Windows executable")
        if _is_zip(head):
            if depth >= ZIP_DEPTH:
                raise Unreadable(f"{label.lower()} nests zip archives more than {ZIP_DEPTH} deep")
            if member.file_size > ZIP_NESTED_MAX:
                raise Unreadable(
                    f'{label.lower()} holds "{_shown(member.filename)}", a zip '
                    "archive too large to check"
                )
            _judge_zip(_member_bytes(archive, member, state, label), state, inner, depth + 1)
        elif head.startswith(OLE_SIGNATURE):
            if member.file_size > ZIP_NESTED_MAX:
                raise Uncheckable(
                    f'{label} could not be checked: "{_shown(member.filename)}" '
                    "is too large to look into; send it unpacked (or send a link "
                    "to it instead)"
                )
            _judge_ole(
                _member_bytes(archive, member, state, label), state, label, member.filename, depth
            )
        elif _is_rar_or_7z(head):
            _judge_other_archive(_member_bytes(archive, member, state, label), inner)
    if ooxml and MACRO_TYPE in state.forbidden:  # after the members: a program is named first
        _judge_content_types(archive, members, state, label)


def _is_encrypted(member: zipfile.ZipInfo) -> bool:
    return (
        bool(member.flag_bits & (ZIP_ENCRYPTED | ZIP_STRONG_ENCRYPTION))
        or member.compress_type == ZIP_AES
    )


def _macros(label: str, part: str) -> Forbidden:
    return Forbidden(f'{label} holds macros ("{_shown(part)}"), a forbidden type (.{MACRO_TYPE})')


def _listed(content: bytes, label: str) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    entries, size = _directory(content)
    if entries > ZIP_MAX_MEMBERS or size > ZIP_MAX_DIRECTORY:
        # refused before zipfile lists it: listing cannot be stopped halfway, and a directory
        # of a million entries (44 MB, 137 KB zipped) cost 4.4 s of CPU and 370 MB to list
        raise Unreadable(f"{label.lower()} is a zip archive of more than {ZIP_MAX_MEMBERS} files")
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
        return archive, archive.infolist()
    except NotImplementedError as exc:  # "zip file version 6.4": a version zipfile lacks
        raise Uncheckable(
            f"{label} could not be checked: it is a zip archive that needs a "
            f"newer unpacker than this server has ({exc}); send the files again "
            "in an ordinary zip archive (or send a link to it instead)"
        ) from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        if (
            len(content) >= 8
            and content.startswith(b"PK\x03\x04")
            and int.from_bytes(content[6:8], "little") & ZIP_MASKED_HEADERS
        ):
            raise _names_encrypted(label) from exc
        raise Unreadable(
            f"{label.lower()} looks like a zip archive but cannot be listed: "
            f"{exc.__class__.__name__}"
        ) from exc


def _directory(content: bytes) -> tuple[int, int]:
    """The number of entries and the bytes of the central directory that a zip archive's end
    record declares (its zip64 record when it has one); (0, 0) when there is no end record
    (zipfile then fails to list it as well). zipfile reads the directory by its size, not by
    the count, so both are judged."""
    tail_start = max(0, len(content) - ZIP_END_SEARCH)
    at = content.rfind(b"PK\x05\x06", tail_start)
    if at < 0 or len(content) - at < 22:
        return 0, 0
    entries = int.from_bytes(content[at + 10 : at + 12], "little")
    size = int.from_bytes(content[at + 12 : at + 16], "little")
    locator = at - 20
    if locator >= 0 and content[locator : locator + 4] == b"PK\x06\x07":
        record = int.from_bytes(content[locator + 8 : locator + 16], "little")
        if content[record : record + 4] == b"PK\x06\x06":
            entries = max(entries, int.from_bytes(content[record + 32 : record + 40], "little"))
            size = max(size, int.from_bytes(content[record + 40 : record + 48], "little"))
    return entries, size


def _names_encrypted(label: str) -> Uncheckable:
    return Uncheckable(
        f"{label} is an archive whose file names are encrypted, so what it holds "
        "cannot be checked; send it unencrypted (or send a link to it instead)"
    )


def _is_macro(name: str, ooxml: bool, odf: bool) -> bool:
    """A VBA project (OOXML) or a Basic or script module (ODF)."""
    if ooxml and name.rsplit("/", 1)[-1].lower() in ("vbaproject.bin", "vbaprojectsignature.bin"):
        return True
    if odf and name.startswith(("Basic/", "Scripts/")):
        return name.rsplit("/", 1)[-1] not in ODF_LIBRARY_INDEXES
    return False


def _part_name(name: str) -> str:
    """An OPC part name as compared: without the leading slash, percent-decoded, case
    ignored (ECMA-376 Part 2, 6.2.2)."""
    return urllib.parse.unquote(name).lstrip("/").lower()


def _judge_content_types(
    archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], state: Check, label: str
) -> None:
    """Macros in an OOXML package, found as Office finds them: by the content type that
    [Content_Types].xml gives a part (an Override for its name, else the Default for its
    extension), whatever the part is called. Office refuses a part whose content type does not
    fit the relationship pointing at it, so a VBA project renamed `word/x.bin` still carries
    the vbaProject type here. A macro type declared for a part that is not there counts too."""
    marker = next(m for m in members if m.filename == OOXML_MARKER)
    if _is_encrypted(marker):
        return  # judged by names only (encrypted_archives); Office cannot open it either
    defaults: dict[str, str] = {}
    overrides: dict[str, str] = {}

    def element(tag: str, attributes: dict[str, str]) -> None:
        local = tag.rsplit(" ", 1)[-1]
        if local == "Default":
            defaults[attributes.get("Extension", "").lower()] = attributes.get("ContentType", "")
        elif local == "Override":
            overrides[_part_name(attributes.get("PartName", ""))] = attributes.get(
                "ContentType", ""
            )

    def declaration(*_: object) -> None:
        raise ValueError("a document type declaration")  # no entities: no entity expansion

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = element
    parser.StartDoctypeDeclHandler = declaration
    parser.EntityDeclHandler = declaration
    try:
        parser.Parse(_opc_text(_member_bytes(archive, marker, state, label)), True)
    except (expat.ExpatError, ValueError) as exc:
        raise Uncheckable(
            f'{label} could not be checked: its "{OOXML_MARKER}" cannot be read '
            f"({exc}); send the document as saved by Office (or send a link to "
            "it instead)"
        ) from exc

    def rank(content_type: str) -> int:  # the VBA project itself is the part worth naming
        lowered = content_type.lower()
        return next((i for i, word in enumerate(MACRO_CONTENT_TYPES) if word in lowered), -1)

    found: list[tuple[int, str]] = []
    for member in members:
        last = member.filename.rsplit("/", 1)[-1]
        default = defaults.get(last.rsplit(".", 1)[1].lower(), "") if "." in last else ""
        content_type = overrides.get(_part_name(member.filename), default)
        if rank(content_type) >= 0:
            found.append((rank(content_type), member.filename))
    if found:
        raise _macros(label, min(found)[1])
    if any(rank(t) >= 0 for t in (*defaults.values(), *overrides.values())):
        raise _macros(label, OOXML_MARKER)


def _opc_text(document: bytes) -> str:
    """An OPC XML part decoded as UTF-8 or UTF-16 (by its byte order mark or first bytes),
    the only encodings OPC allows. Expat is given text, so it never looks up the codec a
    declaration names (`rot13` or `zlib` would raise LookupError); a declaration naming any
    other encoding, or bytes that do not decode, raise ValueError."""
    if document.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif document.startswith(b"<\0"):
        encoding = "utf-16-le"
    elif document.startswith(b"\0<"):
        encoding = "utf-16-be"
    else:
        encoding = "utf-8-sig"
    text = document.decode(encoding)  # UnicodeDecodeError is a ValueError
    declared = XML_ENCODING.match(text)
    if declared and declared.group(1).lower() not in OPC_ENCODINGS:
        raise ValueError(
            f'it declares the encoding "{_shown(declared.group(1))}", and OPC '
            "allows only UTF-8 and UTF-16"
        )
    return text


class _DamagedOle(Exception):
    """An OLE compound file whose structure cannot be followed; the message says where."""


def _judge_ole(content: bytes, state: Check, label: str, member: str | None, depth: int) -> None:
    """An OLE compound file (a .doc, .xls, embedded object, ActiveX control or VBA project),
    attached (`member` None) or a member of a zip. The bytes are searched whole for a
    Windows executable, then every stream is put back together from its sectors (an embedded
    program need not be stored in one piece) and judged on its own: a Windows executable in
    it; the names Packager gives a file it embeds (`\\x01Ole10Native`); a zip or OLE file in
    it, as a nested archive; and a VBA project, as macros. A file whose sectors cannot be
    followed cannot be checked."""
    subject = f'{label} contains "{_shown(member)}", which' if member else label
    if _holds_executable(content, state):
        raise Forbidden(f"{subject} holds a Windows executable")
    inner = f'{label} (in "{_shown(member)}")' if member else label
    try:
        for name, stream in _ole_entries(content, state):
            if name.lower() in OLE_MACRO_NAMES and MACRO_TYPE in state.forbidden:
                raise _macros(label, member or name)
            if stream is None:
                continue
            if _holds_executable(stream, state):
                raise Forbidden(f"{subject} holds a Windows executable")
            if name.lower() == OLE_PACKAGE:
                for packaged in _packaged_names(stream):
                    ext = extension(packaged)
                    if ext and ext in state.forbidden:
                        raise Forbidden(
                            f'{subject} holds an embedded file "{_shown(packaged)}"'
                            f" of a forbidden type (.{ext})"
                        )
            if _is_zip(stream) or stream.startswith(OLE_SIGNATURE):
                if depth >= ZIP_DEPTH:
                    raise Unreadable(f"{inner.lower()} nests archives more than {ZIP_DEPTH} deep")
                if _is_zip(stream):
                    _judge_zip(stream, state, f'{inner} (in "{_shown(name)}")', depth + 1)
                else:
                    _judge_ole(stream, state, inner, name, depth + 1)
    except _DamagedOle as exc:
        what = f'"{_shown(member)}" in it is' if member else "it is"
        raise Uncheckable(
            f"{label} could not be checked: {what} an Office (OLE) file that "
            f"cannot be read ({exc}); save it again in a current Office format "
            "(or send a link to it instead)"
        ) from exc


def _ole_entries(content: bytes, state: Check) -> Iterator[tuple[str, bytes | None]]:
    """Every storage (name, None) and stream (name, bytes) of an OLE compound file (MS-CFB),
    in directory order. Every entry of the directory is read, reachable from the root or not.
    Each stream counts as a member against the budget and its size as bytes inflated (two
    entries may share sectors, so a small file can claim large streams). Raises _DamagedOle
    when the header, a sector chain or the directory does not hold together."""
    if len(content) < 512:
        raise _DamagedOle("shorter than its header")
    major, byte_order, shift, mini_shift = struct.unpack_from("<HHHH", content, 26)
    if (major, shift) not in ((3, 9), (4, 12)) or byte_order != 0xFFFE or mini_shift != 6:
        raise _DamagedOle("unknown header")
    (fat_count, directory_start, _, cutoff, minifat_start, _, difat_next, _) = struct.unpack_from(
        "<IIIIIIII", content, 44
    )
    if cutoff != OLE_MINI_CUTOFF:
        raise _DamagedOle("unknown header")
    size = 1 << shift
    sector_count = -(-(len(content) - size) // size)  # the header takes sector -1
    per_sector = size // 4
    # The FAT needs one sector per `per_sector` sectors of the file, its own included: more
    # is a file built to make the FAT (and what is read through it) larger than the file.
    if fat_count > -(-sector_count // per_sector) + OLE_FAT_SLACK:
        raise _DamagedOle("more FAT sectors than the file needs")

    def sector(number: int) -> bytes:
        if number >= sector_count:
            raise _DamagedOle(f"sector {number} is past the end")
        data = content[(number + 1) * size : (number + 2) * size]
        return data + bytes(size - len(data))  # writers may cut the last sector short

    def chain(start: int, table: array[int], needed: int | None) -> list[int]:
        """A chain of sector numbers; `needed` of them, or up to ENDOFCHAIN. A chain longer
        than the table has entries visits some sector twice: it loops."""
        if needed is not None and needed > len(table):
            raise _DamagedOle("a stream is larger than the file")
        numbers: list[int] = []
        number = start
        while number != OLE_END and (needed is None or len(numbers) < needed):
            if number >= len(table) or len(numbers) >= len(table):
                raise _DamagedOle("a sector chain is broken")
            numbers.append(number)
            number = table[number]
        if needed is not None and len(numbers) < needed:
            raise _DamagedOle("a stream is shorter than its size")
        return numbers

    def sectors_read(numbers: list[int]) -> bytes:
        state.spend(inflated=len(numbers) * size)  # a chain may name one sector many times
        return b"".join(sector(n) for n in numbers)

    fat_sectors = list(struct.unpack_from("<109I", content, 76))
    difat_seen: set[int] = set()
    while difat_next not in (OLE_END, OLE_FREE) and len(fat_sectors) < fat_count:
        if difat_next in difat_seen:
            raise _DamagedOle("the DIFAT loops")
        difat_seen.add(difat_next)
        entries = struct.unpack(f"<{per_sector}I", sector(difat_next))
        fat_sectors += entries[:-1]
        difat_next = entries[-1]
    fat_sectors = fat_sectors[:fat_count]
    if len(fat_sectors) < fat_count:
        raise _DamagedOle("the FAT is incomplete")
    if len(set(fat_sectors)) < fat_count:
        raise _DamagedOle("a FAT sector is listed twice")
    # Only the entries of sectors the file holds; 4 bytes each, not a tuple of ints
    fat = _sector_numbers(sectors_read(fat_sectors)[: sector_count * 4])
    directory = sectors_read(chain(directory_start, fat, None))
    if len(directory) < 128 or directory[66] != 5:
        raise _DamagedOle("no root entry")
    minifat = _sector_numbers(b"")
    if minifat_start not in (OLE_END, OLE_FREE):
        minifat = _sector_numbers(sectors_read(chain(minifat_start, fat, None)))
    mini_stream: bytes | None = None

    def stream_size(entry: bytes) -> int:
        low, high = struct.unpack_from("<II", entry, 120)
        return low if major == 3 else low | high << 32  # version 3 leaves the high half

    for at in range(0, len(directory) - 127, 128):
        entry = directory[at : at + 128]
        kind = entry[66]
        if kind not in (1, 2):
            continue
        name_length = min(int.from_bytes(entry[64:66], "little"), 64)
        name = entry[: max(name_length - 2, 0)].decode("utf-16-le", "replace")
        if kind == 1:
            state.spend(members=1)
            yield name, None
            continue
        length = stream_size(entry)
        start = int.from_bytes(entry[116:120], "little")
        state.spend(inflated=length, members=1)
        if length == 0:
            yield name, b""
        elif length < OLE_MINI_CUTOFF:
            if mini_stream is None:
                root_length = stream_size(directory)
                mini_stream = sectors_read(
                    chain(
                        int.from_bytes(directory[116:120], "little"), fat, -(-root_length // size)
                    )
                )
            pieces = []
            for number in chain(start, minifat, -(-length // OLE_MINI_SECTOR)):
                piece = mini_stream[number * OLE_MINI_SECTOR : (number + 1) * OLE_MINI_SECTOR]
                if len(piece) < OLE_MINI_SECTOR:
                    raise _DamagedOle("a mini sector is past the end of the mini stream")
                pieces.append(piece)
            yield name, b"".join(pieces)[:length]
        else:
            # charged above, by the size the entry gives
            yield name, b"".join(sector(n) for n in chain(start, fat, -(-length // size)))[:length]


def _sector_numbers(table: bytes) -> array[int]:
    """A FAT or mini FAT (little-endian 32-bit sector numbers) held as 4 bytes an entry."""
    numbers = array(SECTOR_NUMBER_TYPE)
    numbers.frombytes(table[: len(table) // 4 * 4])
    if sys.byteorder == "big":
        numbers.byteswap()
    return numbers


def _packaged_names(stream: bytes) -> list[str]:
    """The names in an Ole10Native stream: its size (4 bytes), 2 bytes, the label and the
    path it was embedded from (each ending with NUL), 4 bytes, then the length of the
    temporary path Windows writes it to and that path. Packager opens the file by the last."""
    fields = stream[6 : 6 + 3 * 4 * MAX_NAME].split(b"\0", 2)
    names = fields[:2]
    if len(fields) == 3 and len(fields[2]) >= 8:
        length = int.from_bytes(fields[2][4:8], "little")
        names.append(fields[2][8 : 8 + min(length, 4 * MAX_NAME)].split(b"\0", 1)[0])
    return [name.decode("latin-1") for name in names if name]


def _holds_executable(content: bytes, state: Check) -> bool:
    """A Windows executable anywhere in the bytes: MZ with a PE header where e_lfanew points
    (inside an OLE file, the embedded program is stored whole, after a small header). Only
    MZs whose e_lfanew is small, as every real one is, are followed, and at most
    MAX_PE_PROBES of them: a file made of such headers would otherwise cost CPU, not bytes."""
    probes = 0
    for window in range(0, len(content), READ_CHUNK):  # the CPU clock is read between windows
        state.spend()
        for candidate in PE_CANDIDATE.finditer(content, window, window + READ_CHUNK + 64):
            start = candidate.start()
            if start >= window + READ_CHUNK:
                break  # the next window's
            probes += 1
            if probes > MAX_PE_PROBES:
                raise Uncheckable(
                    f"{state.attachment} could not be checked: it holds a file "
                    "made to be slow to search for programs; send the files "
                    "unpacked (or send a link to it instead)"
                )
            offset = int.from_bytes(content[start + 60 : start + 64], "little")
            if content[start + offset : start + offset + 4] == b"PE\0\0":
                return True
    return False


def _is_rar_or_7z(head: bytes) -> bool:
    return head.startswith((b"Rar!\x1a\x07", b"7z\xbc\xaf\x27\x1c"))


def _judge_other_archive(content: bytes, label: str) -> None:
    """RAR and 7z archives are not opened; one whose names are encrypted is refused, because
    even the names that a zip would show cannot be judged."""
    if content.startswith(b"Rar!\x1a\x07\x01\x00"):
        # RAR 5: CRC32, then the header size and type as variable-length integers; type 4
        # is the archive encryption header, present only when headers are encrypted
        position = 12
        while position < len(content) and content[position] & 0x80:  # the size
            position += 1
        if content[position + 1 : position + 2] == b"\x04":  # a one-byte type, 4
            raise _names_encrypted(label)
    elif content.startswith(b"Rar!\x1a\x07\x00"):
        # RAR 1.5-4: the main header (type 0x73) with MHD_PASSWORD (0x0080)
        if len(content) >= 12 and content[9] == 0x73 and content[10] & 0x80:
            raise _names_encrypted(label)
    elif content.startswith(b"7z\xbc\xaf\x27\x1c") and len(content) >= 32:
        # the next header, located by the start header; an encoded header (0x17) whose coder
        # is 7zAES (06 F1 07 01) hides the names
        offset, size = struct.unpack_from("<QQ", content, 12)
        header = (
            content[32 + offset : 32 + offset + min(size, 4096)] if offset < len(content) else b""
        )
        if header[:1] == b"\x17" and b"\x06\xf1\x07\x01" in header:
            raise _names_encrypted(label)


def _member_head(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, state: Check, label: str
) -> bytes:
    """The first bytes of a member. One that cannot be read (a compression method zipfile
    lacks, such as Deflate64; a local header whose name differs from the directory's; damaged
    data) is Uncheckable: what another program would unpack from it is unknown."""
    try:
        with archive.open(member) as stream:
            head = stream.read(HEAD_BYTES)
    except MEMBER_ERRORS as exc:
        raise _member_unreadable(label, member, exc) from exc
    state.spend(inflated=len(head))
    return head


def _member_bytes(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, state: Check, label: str
) -> bytes:
    """A member, up to ZIP_NESTED_MAX, inflated a chunk at a time within the budget; one that
    cannot be read is Uncheckable, as in _member_head."""
    # BytesIO, not a list of chunks joined: getvalue() hands over its buffer, so the member
    # is held once, not twice, at the end
    kept = io.BytesIO()
    try:
        with archive.open(member) as stream:
            while kept.tell() < ZIP_NESTED_MAX:
                chunk = stream.read(min(READ_CHUNK, ZIP_NESTED_MAX - kept.tell()))
                if not chunk:
                    break
                state.spend(inflated=len(chunk))
                kept.write(chunk)
    except MEMBER_ERRORS as exc:
        raise _member_unreadable(label, member, exc) from exc
    return kept.getvalue()


def _member_unreadable(label: str, member: zipfile.ZipInfo, exc: Exception) -> Uncheckable:
    if isinstance(exc, NotImplementedError):
        why = f"it is packed with method {member.compress_type}, which this server cannot unpack"
    elif "differ" in str(exc):
        why = "the archive gives it two different names"
    else:
        why = "it is damaged"
    return Uncheckable(
        f'{label} could not be checked: "{_shown(member.filename)}" in it cannot '
        f"be read ({why}); send the files again in a zip archive that uses "
        "ordinary (Deflate) compression (or send a link to it instead)"
    )
