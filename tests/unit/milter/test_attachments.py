"""Rule `attachments`: the hostile-attachment corpus in tests/data/attachments, one row each."""

from __future__ import annotations

import base64
import io
import lzma
import random
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.data.attachments import make_corpus
from tests.unit.milter.driver import Conversation, basic, eom_submission
from txmail.accounts.settings import from_fields
from txmail.milter.rules import Refusal, attachments
from txmail.milter.rules.attachments import extension, normalized
from txmail.milter.submission import Submission

CORPUS = Path(__file__).resolve().parents[2] / "data" / "attachments"

# file -> (expected reply, words the reply must contain)
EXPECTED: dict[str, tuple[str, tuple[str, ...]]] = {
    "plain-exe": ("554 5.7.1", ('"setup.exe"', "(.exe)")),
    "upper-case": ("554 5.7.1", ('"SETUP.EXE"', "(.exe)")),
    "mixed-case": ("554 5.7.1", ("(.exe)",)),
    "trailing-dot": ("554 5.7.1", ("(.exe)",)),
    "trailing-space": ("554 5.7.1", ("(.exe)",)),
    "trailing-dots-and-spaces": ("554 5.7.1", ("(.exe)",)),
    "double-extension": ("554 5.7.1", ('"invoice.pdf.exe"', "(.exe)")),
    "rfc2231-encoded": ("554 5.7.1", ('"invoice.pdf.exe"',)),
    "rfc2231-continuation": ("554 5.7.1", ('"invoice.exe"',)),
    "rfc2231-continuation-encoded": ("554 5.7.1", ('"résumé.scr"', "(.scr)")),
    "rfc2047-base64": ("554 5.7.1", ('"invoice.exe"',)),
    "rfc2047-q-in-name": ("554 5.7.1", ('"résumé.scr"',)),
    "content-type-name-only": ("554 5.7.1", ('"run.bat"', "(.bat)")),
    "name-differs-from-filename": ("554 5.7.1", ('"report.pdf.vbs"', "(.vbs)")),
    "right-to-left-override": ("554 5.7.1", ("(.exe)",)),
    "fullwidth-extension": ("554 5.7.1", ("(.exe)",)),
    "folder-in-name": ("554 5.7.1", ("(.exe)",)),
    "alternate-data-stream": ("554 5.7.1", ("(.exe)",)),
    "other-default-types": ("554 5.7.1", ('"update.JS"', "(.js)")),
    "shortcut": ("554 5.7.1", ("(.lnk)",)),
    "disk-image": ("554 5.7.1", ("(.iso)",)),
    "in-attached-message": ("554 5.7.1", ('"evil.vbs"',)),
    "in-message-in-message": ("554 5.7.1", ('"deep.hta"',)),
    "uuencoded-in-body": ("554 5.7.1", ('uuencoded file "setup.exe"',)),
    "zip-member": ("554 5.7.1", ('"files.zip" contains "setup.exe"', "(.exe)")),
    "zip-member-upper-case-with-folder": ("554 5.7.1", ('"bin/TOOL.SCR"', "(.scr)")),
    "zip-in-zip": ("554 5.7.1", ('"run.js"', '(in "inner.zip")')),
    "zip-member-executable-under-harmless-name": (
        "554 5.7.1",
        ('"photo.jpg", which is a Windows executable',),
    ),
    "zip-under-harmless-name": ("554 5.7.1", ('"report.pdf" contains "report.exe"',)),
    # zips that look like Office or OpenDocument files are judged member by member
    "document-marker-with-executable": ("554 5.7.1", ('"invoice.exe"', "(.exe)")),
    "document-marker-with-script-and-executable-pdf": ("554 5.7.1", ("files.zip",)),
    "document-marker-with-executable-pdf": (
        "554 5.7.1",
        ('"readme.pdf", which is a Windows executable',),
    ),
    "odt-with-executable-picture": (
        "554 5.7.1",
        ('"Pictures/logo.png", which is a Windows executable',),
    ),
    "docx-with-executable-member": ("554 5.7.1", ('"word/media/setup.exe"', "(.exe)")),
    "docx-with-embedded-executable": (
        "554 5.7.1",
        ('"word/embeddings/oleObject1.bin", which holds a Windows executable',),
    ),
    "docm-with-macros": (
        "554 5.7.1",
        ('"report.docm" holds macros ("word/vbaProject.bin")', "(.vba)"),
    ),
    "odt-with-macros": ("554 5.7.1", ('holds macros ("Basic/Standard/Module1.xml")',)),
    "bin-outside-a-document": ("554 5.7.1", ('"word/vbaProject.bin"', "(.bin)")),
    # found by what Office reads rather than by names
    "docm-with-renamed-vba-project": (
        "554 5.7.1",
        ('"report.docx" holds macros ("word/x.bin")', "(.vba)"),
    ),
    "doc-with-macros": ("554 5.7.1", ('"report.doc" holds macros ("VBA")', "(.vba)")),
    "docx-with-program-split-across-sectors": (
        "554 5.7.1",
        ('"word/embeddings/oleObject1.bin", which holds a Windows executable',),
    ),
    "docx-with-embedded-script": (
        "554 5.7.1",
        ('which holds an embedded file "invoice.js" of a forbidden type (.js)',),
    ),
    # members that cannot be read are not judged by their names alone
    "zip-member-local-name-differs": (
        "554 5.7.1",
        (
            '"files.zip" could not be checked: "readme.txt" in it cannot be read (the archive '
            "gives it two different names)",
        ),
    ),
    "zip-member-deflate64-executable": (
        "554 5.7.1",
        (
            '"report.pdf" in it cannot be read (it is packed with method 9, which this server '
            "cannot unpack)",
        ),
    ),
    "zip-executable-behind-local-name": ("554 5.7.1", ('"docs.zip" could not be checked',)),
    "zip-bomb-nested": ("554 5.7.1", ('"backup.zip" could not be checked',)),
    "ole-fat-sector-repeated": (
        "554 5.7.1",
        (
            '"report.zip" could not be checked: "report.doc" in it is an Office (OLE) file that '
            "cannot be read (more FAT sectors than the file needs)",
        ),
    ),
    "zip-encrypted-forbidden-name": ("554 5.7.1", ('"setup.exe"', "(.exe)")),
    "zip-encrypted-names": (
        "554 5.7.1",
        ('"files.zip" is an archive whose file names are encrypted',),
    ),
    "rar5-encrypted-names": ("554 5.7.1", ("file names are encrypted",)),
    "rar4-encrypted-names": ("554 5.7.1", ("file names are encrypted",)),
    "7z-encrypted-names": ("554 5.7.1", ("file names are encrypted",)),
    "executable-named-pdf": ("554 5.7.1", ('"report.pdf" is a Windows executable',)),
    "executable-without-name": ("554 5.7.1", ("application/octet-stream is a Windows",)),
    "executable-labelled-text": ("554 5.7.1", ('"notes.txt" is a Windows executable',)),
    "executable-quoted-printable": ("554 5.7.1", ('"data.dat" is a Windows executable',)),
    "executable-as-whole-message": ("554 5.7.1", ("is a Windows executable",)),
    "pdf": ("", ()),
    "exe-then-txt": ("", ()),
    "no-extension": ("", ()),
    "office-document-with-embedded-bin": ("", ()),
    "zip-of-documents": ("", ()),
    "odt-document": ("", ()),
    "xlsx-with-printer-settings-and-activex": ("", ()),
    "ole-document-without-executable": ("", ()),
    "zip-encrypted-harmless-names": ("", ()),  # names judged; see encrypted_archives
    "text-starting-with-mz": ("", ()),
    "malformed-no-boundary": ("", ()),
    "malformed-no-end-boundary": ("", ()),
    "malformed-headers-and-junk": ("", ()),
    "malformed-bad-rfc2231-charset": ("", ()),
    "nested-too-deep": ("554 5.6.0", ("nested more than",)),
    "corrupt-zip": ("554 5.6.0", ('"files.zip" looks like a zip archive',)),
}


def test_every_corpus_file_has_a_row() -> None:
    assert sorted(p.stem for p in CORPUS.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(smtp: Callable[..., Conversation], name: str) -> None:
    expected, words = EXPECTED[name]
    message = (CORPUS / f"{name}.eml").read_bytes()
    outcome = smtp().send(message, "app@acme.example", ["user@example.net"])
    assert outcome.code == expected, outcome.reply
    for word in words:
        assert word in outcome.text
    if expected == "554 5.7.1":
        assert outcome.text.endswith("(or send a link to it instead)")


def test_account_list_replaces_the_default(smtp: Callable[..., Conversation]) -> None:
    conversation = smtp({"forbidden_extensions": ["txt"]})
    outcome = conversation.send(
        (CORPUS / "exe-then-txt.eml").read_bytes(), "app@acme.example", ["user@example.net"]
    )
    assert outcome.code == "554 5.7.1" and "(.txt)" in outcome.text
    outcome = conversation.send(
        (CORPUS / "plain-exe.eml").read_bytes(), "app@acme.example", ["user@example.net"]
    )
    assert outcome.accepted  # .exe is no longer on the list and the content is harmless
    outcome = conversation.send(
        (CORPUS / "executable-named-pdf.eml").read_bytes(), "app@acme.example", ["user@example.net"]
    )
    assert outcome.code == "554 5.7.1"  # Windows executables are refused whatever the list
    assert "is a Windows executable" in outcome.text


@pytest.mark.parametrize(
    "name,default,refusing",
    [
        ("zip-encrypted-harmless-names", "", "554 5.7.1"),
        ("zip-encrypted-forbidden-name", "554 5.7.1", "554 5.7.1"),
        ("zip-encrypted-names", "554 5.7.1", "554 5.7.1"),
        ("zip-of-documents", "", ""),
    ],
)
def test_encrypted_archives_setting(
    smtp: Callable[..., Conversation], name: str, default: str, refusing: str
) -> None:
    message = (CORPUS / f"{name}.eml").read_bytes()
    outcome = smtp().send(message, "app@acme.example", ["user@example.net"])
    assert outcome.code == default, outcome.reply
    outcome = smtp({"encrypted_archives": "refuse"}).send(
        message, "app@acme.example", ["user@example.net"]
    )
    assert outcome.code == refusing, outcome.reply
    if name == "zip-encrypted-harmless-names":
        assert outcome.text == (
            'Attachment "files.zip" is an encrypted archive ("report.pdf" is encrypted), and '
            "this account does not accept encrypted archives; send it unencrypted (or send a "
            "link to it instead)"
        )


def test_plain_message_passes(smtp: Callable[..., Conversation]) -> None:
    assert smtp().send(basic(), "app@acme.example", ["user@example.net"]).accepted


@pytest.mark.parametrize(
    "name,expected",
    [
        ("Invoice.PDF.exe", "exe"),
        ("a.exe. . .", "exe"),
        ("x\u202efdp.exe", "exe"),
        ("C:\\a\\b.Scr", "scr"),
        ("../../b.js", "js"),
        ("noext", ""),
        ("a.", ""),
        ("b.exe::$DATA", "exe"),
        ("setup.\uff45\uff58\uff45", "exe"),
        ("a.e\u200bxe", "exe"),
    ],
)
def test_extension_of_a_name(name: str, expected: str) -> None:
    assert extension(name) == expected
    assert normalized(name) == normalized(normalized(name))


# Inputs the fuzz suite (tests/fuzz/test_attachments.py) found the rule wrong on.
FUZZ_HEAD = (
    b"From: App <app@acme.example>\r\nTo: user@example.net\r\nSubject: found\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
)
FUZZ_PE = b"MZ\x90\x00" + b"\x00" * 56 + (64).to_bytes(4, "little") + b"PE\x00\x00\x4c\x01"


@pytest.mark.parametrize(
    "part,expected",
    [
        # 8-bit text under an RFC 2231 charset: the stdlib's get_payload() raised TypeError
        (b"Content-Type: text/plain; charset*=utf-8''x\r\n\r\n\xc3\xa9t\xc3\xa9\r\n", ""),
        # the same with a NUL in the charset: ValueError
        (b'Content-Type: text/plain; charset="a\x00b"\r\n\r\n\xff\r\n', ""),
        # a two-byte MZ file: the base64 padding was dropped with the last partial quantum
        (
            b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\nTVo=\r\n",
            "554 5.7.1",
        ),
        # a PE file sent as 8-bit text: its non-ASCII bytes became U+FFFD and the PE header moved
        (
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\n" + FUZZ_PE,
            "554 5.7.1",
        ),
        # a file name in raw UTF-8 (RFC 6532): get_param() turned it into U+FFFD
        (
            "Content-Type: text/plain\r\nContent-Disposition: attachment; "
            'filename="a.\uff56\uff42\uff53"\r\n\r\nx\r\n'.encode(),
            "554 5.7.1",
        ),
        # the same on a uuencode begin line, read as latin-1, where the last byte of "ｅ" (\x85)
        # was taken for white space
        (
            (
                "Content-Type: text/plain\r\n\r\nbegin 644 a.\uff45\uff58\uff45\r\n`\r\nend\r\n"
            ).encode(),
            "554 5.7.1",
        ),
        # an NTFS stream suffix with a trailing dot after it
        (
            b'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="a.vbs::$data."'
            b"\r\n\r\nx\r\n",
            "554 5.7.1",
        ),
        # an RFC 2047 B word with a broken base64 length: HeaderParseError, so 451 4.3.0
        (
            b"Content-Type: text/plain\r\n"
            b'Content-Disposition: attachment; filename="=?utf-8?B?QUJDR?="'
            b"\r\n\r\nx\r\n",
            "",
        ),
    ],
    ids=[
        "rfc2231-charset",
        "nul-in-charset",
        "two-byte-mz",
        "pe-as-binary-text",
        "raw-utf8-name",
        "raw-utf8-uuencode-name",
        "data-stream-then-dot",
        "bad-base64-word",
    ],
)
def test_inputs_found_by_fuzzing(
    smtp: Callable[..., Conversation], part: bytes, expected: str
) -> None:
    message = FUZZ_HEAD + part + b"\r\n--b--\r\n"
    outcome = smtp().send(message, "app@acme.example", ["user@example.net"])
    assert outcome.code == expected, outcome.reply


# -- archives whose errors escaped the rule (mutation fuzzing): 451 4.3.0 and a traceback --

SETTINGS = from_fields({})


def attached(name: str, content: bytes) -> Submission:
    raw = (
        FUZZ_HEAD + b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="'
        + name.encode()
        + b'"\r\n\r\n'
        + base64.encodebytes(content).replace(b"\n", b"\r\n")
        + b"\r\n--b--\r\n"
    )
    return eom_submission(raw)


def central_field(archive: bytes, offset: int, value: bytes) -> bytes:
    """The zip with `value` written at `offset` of its first central directory record."""
    at = archive.find(b"PK\x01\x02") + offset
    return archive[:at] + value + archive[at + len(value) :]


def lzma_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_LZMA) as archive:
        for name, content in members.items():
            archive.writestr(
                zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)),
                content,
                compress_type=zipfile.ZIP_LZMA,
            )
    return buffer.getvalue()


def test_a_zip_needing_a_newer_version_is_uncheckable() -> None:
    """(a) zipfile's NotImplementedError("zip file version 6.4") while listing."""
    archive = central_field(make_corpus.zipped({"setup.pdf": make_corpus.PE}), 6, b"\x40\x00")
    refusal = attachments.check(attached("files.zip", archive), SETTINGS)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert refusal.text.startswith(
        'Attachment "files.zip" could not be checked: it is a zip '
        "archive that needs a newer unpacker than this server has "
        "(zip file version 6.4)"
    )


def test_a_corrupt_lzma_member_is_uncheckable() -> None:
    """(b) lzma.LZMAError from a damaged LZMA (method 14) member, read whole or in part."""
    inner = lzma_zip({"report.pdf": b"%PDF-1.4 " * 200})
    assert attachments.check(attached("files.zip", inner), SETTINGS) is None
    # the LZMA properties (after the 4-byte LZMA header of the member's data) made invalid
    at = inner.find(b"report.pdf") + len(b"report.pdf") + 4
    damaged = inner[:at] + b"\xff" * 5 + inner[at + 5 :]
    with pytest.raises(lzma.LZMAError):
        zipfile.ZipFile(io.BytesIO(damaged)).read("report.pdf")
    for archive in (damaged, make_corpus.zipped({"inner.zip": damaged})):
        refusal = attachments.check(attached("files.zip", archive), SETTINGS)
        assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
        assert '"report.pdf" in it cannot be read (it is damaged)' in refusal.text


def test_a_member_without_a_name_is_uncheckable() -> None:
    """(c) ZipInfo.is_dir() raises IndexError on an empty name."""
    archive = make_corpus.raw_zip([("", b"MZ", 0, 0), ("a.txt", b"a", 0, 0)])
    assert zipfile.ZipFile(io.BytesIO(archive)).infolist()[0].filename == ""
    refusal = attachments.check(attached("files.zip", archive), SETTINGS)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert refusal.text.startswith(
        'Attachment "files.zip" could not be checked: a file in it has no name'
    )


@pytest.mark.parametrize("encoding", ["rot13", "base64_codec", "zlib", "latin-1", "cp037"])
def test_content_types_only_in_utf8_or_utf16(encoding: str) -> None:
    """(d) expat looked up whatever codec the declaration named: rot13, base64_codec and zlib
    raised LookupError. OPC allows UTF-8 and UTF-16 only; anything else cannot be checked."""
    declared = make_corpus.content_types(make_corpus.OOXML_DEFAULTS, {}).replace(
        b'encoding="UTF-8"', f'encoding="{encoding}"'.encode()
    )
    archive = make_corpus.zipped({"[Content_Types].xml": declared, "word/document.xml": b"<w/>"})
    refusal = attachments.check(attached("report.docx", archive), SETTINGS)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert (
        f'"[Content_Types].xml" cannot be read (it declares the encoding "{encoding}", and '
        "OPC allows only UTF-8 and UTF-16)"
    ) in refusal.text


@pytest.mark.parametrize(
    "codec,bom",
    [
        ("utf-8", b""),
        ("utf-8", b"\xef\xbb\xbf"),
        ("utf-16-le", b"\xff\xfe"),
        ("utf-16-be", b"\xfe\xff"),
        ("utf-16-le", b""),
    ],
)
def test_content_types_in_utf8_and_utf16_are_read(codec: str, bom: bytes) -> None:
    declaration = "UTF-16" if codec.startswith("utf-16") else "UTF-8"
    for declared, named in (
        (make_corpus.WORD_MAIN, None),
        (make_corpus.WORD_MACRO_MAIN, "word/document.xml"),
    ):
        xml = (
            make_corpus.content_types(make_corpus.OOXML_DEFAULTS, {"/word/document.xml": declared})
            .decode()
            .replace('"UTF-8"', f'"{declaration}"')
        )
        archive = make_corpus.zipped(
            {"[Content_Types].xml": bom + xml.encode(codec), "word/document.xml": b"<w/>"}
        )
        refusal = attachments.check(attached("report.docx", archive), SETTINGS)
        if named is None:
            assert refusal is None
        else:
            assert refusal is not None and f'holds macros ("{named}")' in refusal.text


FUZZ_SEED = 15


def fuzz_targets() -> dict[str, bytes]:
    """Archives of the corpus's kinds, each with a member whose decoder the flips reach."""
    zip_methods = {
        "bzip2": zipfile.ZIP_BZIP2,
        "lzma": zipfile.ZIP_LZMA,
        "deflate": zipfile.ZIP_DEFLATED,
    }
    targets = {
        name: make_corpus.zipped(
            {
                "report.pdf": b"%PDF-1.4 text " * 40,
                "inner.zip": make_corpus.zipped({"a.txt": b"a" * 300}),
            },
            method,
        )
        for name, method in zip_methods.items()
    }
    targets["docx-stored"] = make_corpus.zipped(
        {
            "[Content_Types].xml": make_corpus.content_types(
                {**make_corpus.OOXML_DEFAULTS, "bin": make_corpus.OLE_OBJECT},
                {"/word/document.xml": make_corpus.WORD_MAIN},
            ),
            "word/document.xml": b"<w:document/>",
            "word/embeddings/oleObject1.bin": make_corpus.OLE_WITH_TEXT,
        },
        zipfile.ZIP_STORED,
    )
    targets["doc"] = make_corpus.OLE
    targets["vba-project"] = make_corpus.VBA_PROJECT_BIN
    return targets


@pytest.mark.parametrize("name", sorted(fuzz_targets()))
def test_flipped_archives_never_raise(name: str) -> None:
    """Every archive with one byte set to a random value, at a few hundred positions (all of
    them for the smaller ones; a fixed seed): the rule answers nothing or a refusal, never an
    exception (which the milter turns into 451 4.3.0)."""
    original = fuzz_targets()[name]
    rng = random.Random(f"{FUZZ_SEED}-{name}")
    positions = (
        range(len(original))
        if len(original) <= 400
        else sorted(rng.sample(range(len(original)), 400))
    )
    started = time.process_time()
    for position in positions:
        flipped = bytearray(original)
        flipped[position] = rng.choice([0, 0xFF, 0x80, 0x7F, rng.randrange(256)])
        outcome = attachments.check(attached("files.zip", bytes(flipped)), SETTINGS)
        assert outcome is None or isinstance(outcome, Refusal), (position, outcome)
    assert time.process_time() - started < 5


@pytest.mark.parametrize(
    "raised,escapes",
    [
        (struct.error("unpack requires a buffer"), False),
        (EOFError("truncated"), False),
        (KeyError("a bug"), True),
    ],
)
def test_archive_errors_no_place_guards_are_refused_and_bugs_surface(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, escapes: bool
) -> None:
    """The last line of check(): what the archive libraries raise becomes "could not be
    checked" even from a place no handler guards yet; anything else is a bug and escapes."""

    def unguarded(content: bytes, label: str) -> None:
        raise raised

    monkeypatch.setattr(attachments, "_judge_other_archive", unguarded)
    submission = attached("files.rar", make_corpus.RAR4_ENCRYPTED_NAMES)
    if escapes:
        with pytest.raises(type(raised)):
            attachments.check(submission, SETTINGS)
        return
    refusal = attachments.check(submission, SETTINGS)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert refusal.text.startswith(
        'Attachment "files.rar" could not be checked: an archive in '
        f"it cannot be read ({type(raised).__name__})"
    )
