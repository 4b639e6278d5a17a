"""Rule `attachments`: the hostile-attachment corpus in tests/data/attachments, one row each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.milter.driver import Conversation, basic
from txmail.milter.rules.attachments import extension, normalized

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
    "zip-member-executable-under-harmless-name": ("554 5.7.1", (
        '"photo.jpg", which is a Windows executable',)),
    "zip-under-harmless-name": ("554 5.7.1", ('"report.pdf" contains "report.exe"',)),
    # zips that look like Office or OpenDocument files are judged member by member
    "document-marker-with-executable": ("554 5.7.1", ('"invoice.exe"', "(.exe)")),
    "document-marker-with-script-and-executable-pdf": ("554 5.7.1", ("files.zip",)),
    "document-marker-with-executable-pdf": ("554 5.7.1", (
        '"readme.pdf", which is a Windows executable',)),
    "odt-with-executable-picture": ("554 5.7.1", (
        '"Pictures/logo.png", which is a Windows executable',)),
    "docx-with-executable-member": ("554 5.7.1", ('"word/media/setup.exe"', "(.exe)")),
    "docx-with-embedded-executable": ("554 5.7.1", (
        '"word/embeddings/oleObject1.bin", which holds a Windows executable',)),
    "docm-with-macros": ("554 5.7.1", ('"report.docm" holds macros ("word/vbaProject.bin")',
                                        "(.vba)")),
    "odt-with-macros": ("554 5.7.1", ('holds macros ("Basic/Standard/Module1.xml")',)),
    "bin-outside-a-document": ("554 5.7.1", ('"word/vbaProject.bin"', "(.bin)")),
    # found by what Office reads rather than by names
    "docm-with-renamed-vba-project": ("554 5.7.1", (
        '"report.docx" holds macros ("word/x.bin")', "(.vba)")),
    "doc-with-macros": ("554 5.7.1", ('"report.doc" holds macros ("VBA")', "(.vba)")),
    "docx-with-program-split-across-sectors": ("554 5.7.1", (
        '"word/embeddings/oleObject1.bin", which holds a Windows executable',)),
    "docx-with-embedded-script": ("554 5.7.1", (
        'which holds an embedded file "invoice.js" of a forbidden type (.js)',)),
    # members that cannot be read are not judged by their names alone
    "zip-member-local-name-differs": ("554 5.7.1", (
        '"files.zip" could not be checked: "readme.txt" in it cannot be read (the archive '
        "gives it two different names)",)),
    "zip-member-deflate64-executable": ("554 5.7.1", (
        '"report.pdf" in it cannot be read (it is packed with method 9, which this server '
        "cannot unpack)",)),
    "zip-executable-behind-local-name": ("554 5.7.1", ('"docs.zip" could not be checked',)),
    "zip-bomb-nested": ("554 5.7.1", ('"backup.zip" could not be checked',)),
    "zip-encrypted-forbidden-name": ("554 5.7.1", ('"setup.exe"', "(.exe)")),
    "zip-encrypted-names": ("554 5.7.1", ('"files.zip" is an archive whose file names are '
                                          "encrypted",)),
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
    outcome = conversation.send((CORPUS / "exe-then-txt.eml").read_bytes(), "app@acme.example",
                                ["user@example.net"])
    assert outcome.code == "554 5.7.1" and "(.txt)" in outcome.text
    outcome = conversation.send((CORPUS / "plain-exe.eml").read_bytes(), "app@acme.example",
                                ["user@example.net"])
    assert outcome.accepted  # .exe is no longer on the list and the content is harmless
    outcome = conversation.send((CORPUS / "executable-named-pdf.eml").read_bytes(),
                                "app@acme.example", ["user@example.net"])
    assert outcome.code == "554 5.7.1"  # Windows executables are refused whatever the list
    assert "is a Windows executable" in outcome.text


@pytest.mark.parametrize("name,default,refusing", [
    ("zip-encrypted-harmless-names", "", "554 5.7.1"),
    ("zip-encrypted-forbidden-name", "554 5.7.1", "554 5.7.1"),
    ("zip-encrypted-names", "554 5.7.1", "554 5.7.1"),
    ("zip-of-documents", "", ""),
])
def test_encrypted_archives_setting(smtp: Callable[..., Conversation], name: str, default: str,
                                    refusing: str) -> None:
    message = (CORPUS / f"{name}.eml").read_bytes()
    outcome = smtp().send(message, "app@acme.example", ["user@example.net"])
    assert outcome.code == default, outcome.reply
    outcome = smtp({"encrypted_archives": "refuse"}).send(message, "app@acme.example",
                                                           ["user@example.net"])
    assert outcome.code == refusing, outcome.reply
    if name == "zip-encrypted-harmless-names":
        assert outcome.text == (
            'Attachment "files.zip" is an encrypted archive ("report.pdf" is encrypted), and '
            "this account does not accept encrypted archives; send it unencrypted (or send a "
            "link to it instead)")


def test_plain_message_passes(smtp: Callable[..., Conversation]) -> None:
    assert smtp().send(basic(), "app@acme.example", ["user@example.net"]).accepted


@pytest.mark.parametrize("name,expected", [
    ("Invoice.PDF.exe", "exe"), ("a.exe. . .", "exe"), ("x\u202efdp.exe", "exe"),
    ("C:\\a\\b.Scr", "scr"), ("../../b.js", "js"), ("noext", ""), ("a.", ""),
    ("b.exe::$DATA", "exe"), ("setup.\uff45\uff58\uff45", "exe"), ("a.e\u200bxe", "exe"),
])
def test_extension_of_a_name(name: str, expected: str) -> None:
    assert extension(name) == expected
    assert normalized(name) == normalized(normalized(name))


# Inputs the fuzz suite (tests/fuzz/test_attachments.py) found the rule wrong on.
FUZZ_HEAD = (b"From: App <app@acme.example>\r\nTo: user@example.net\r\nSubject: found\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n")
FUZZ_PE = b"MZ\x90\x00" + b"\x00" * 56 + (64).to_bytes(4, "little") + b"PE\x00\x00\x4c\x01"


@pytest.mark.parametrize("part,expected", [
    # 8-bit text under an RFC 2231 charset: the stdlib's get_payload() raised TypeError
    (b"Content-Type: text/plain; charset*=utf-8''x\r\n\r\n\xc3\xa9t\xc3\xa9\r\n", ""),
    # the same with a NUL in the charset: ValueError
    (b'Content-Type: text/plain; charset="a\x00b"\r\n\r\n\xff\r\n', ""),
    # a two-byte MZ file: the base64 padding was dropped with the last partial quantum
    (b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\nTVo=\r\n",
     "554 5.7.1"),
    # a PE file sent as 8-bit text: its non-ASCII bytes became U+FFFD and the PE header moved
    (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\n" + FUZZ_PE,
     "554 5.7.1"),
    # a file name in raw UTF-8 (RFC 6532): get_param() turned it into U+FFFD
    ("Content-Type: text/plain\r\nContent-Disposition: attachment; "
     'filename="a.\uff56\uff42\uff53"\r\n\r\nx\r\n'.encode(), "554 5.7.1"),
    # the same on a uuencode begin line, read as latin-1, where the last byte of "ｅ" (\x85)
    # was taken for white space
    ("Content-Type: text/plain\r\n\r\nbegin 644 a.\uff45\uff58\uff45\r\n`\r\nend\r\n".encode(),
     "554 5.7.1"),
    # an NTFS stream suffix with a trailing dot after it
    (b'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="a.vbs::$data."'
     b"\r\n\r\nx\r\n", "554 5.7.1"),
    # an RFC 2047 B word with a broken base64 length: HeaderParseError, so 451 4.3.0
    (b'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="=?utf-8?B?QUJDR?="'
     b"\r\n\r\nx\r\n", ""),
], ids=["rfc2231-charset", "nul-in-charset", "two-byte-mz", "pe-as-binary-text",
        "raw-utf8-name", "raw-utf8-uuencode-name", "data-stream-then-dot", "bad-base64-word"])
def test_inputs_found_by_fuzzing(smtp: Callable[..., Conversation], part: bytes,
                                 expected: str) -> None:
    message = FUZZ_HEAD + part + b"\r\n--b--\r\n"
    outcome = smtp().send(message, "app@acme.example", ["user@example.net"])
    assert outcome.code == expected, outcome.reply
