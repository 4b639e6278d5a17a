"""Write the hostile-attachment corpus: one .eml per evasion, CRLF line ends, deterministic.

    .venv/bin/python tests/data/attachments/make_corpus.py

Each file is named for what it tries; tests/unit/milter/test_attachments.py holds the table of
what the milter must answer for each. Zip archives are built in memory with fixed timestamps,
so running this again writes the same bytes.
"""

from __future__ import annotations

import base64
import io
import quopri
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEAD = ("From: App <app@acme.example>\r\nTo: user@example.net\r\nSubject: corpus\r\n"
        "Message-ID: <corpus@acme.example>\r\nMIME-Version: 1.0\r\n")

# A minimal Windows PE image: DOS header with e_lfanew = 0x40, then the PE signature.
PE = b"MZ\x90\x00" + b"\x00" * 56 + (0x40).to_bytes(4, "little") + b"PE\x00\x00" + b"\x4c\x01" + \
    b"\x00" * 200


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode().replace("\n", "\r\n")


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def mixed(*parts: str, boundary: str = "b1") -> str:
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return (f"{HEAD}Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
            f"This is a MIME message.\r\n{body}--{boundary}--\r\n")


TEXT = "Content-Type: text/plain; charset=utf-8\r\n\r\nPlease find the file attached.\r\n"


def attachment(disposition: str | None, content: bytes = b"%PDF-1.4 harmless\n",
               content_type: str = "application/octet-stream") -> str:
    head = f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n"
    if disposition is not None:
        head += f"Content-Disposition: {disposition}\r\n"
    return head + "\r\n" + b64(content)


def named(filename: str, content: bytes = b"%PDF-1.4 harmless\n") -> str:
    return mixed(TEXT, attachment(f'attachment; filename="{filename}"', content))


def inner_message(*parts: str) -> str:
    return ("From: someone@elsewhere.example\r\nSubject: forwarded\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n"
            + "".join(f"--inner\r\n{p}\r\n" for p in parts) + "--inner--\r\n")


def nested(depth: int) -> str:
    text = TEXT
    for level in range(depth):
        text = (f"Content-Type: multipart/mixed; boundary=\"n{level}\"\r\n\r\n"
                f"--n{level}\r\n{text}\r\n--n{level}--\r\n")
    return HEAD + text


DOCX = zipped({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>",
               "word/embeddings/oleObject1.bin": b"\xd0\xcf\x11\xe0 ole"})

CORPUS: dict[str, str] = {
    # forbidden by name
    "plain-exe": named("setup.exe"),
    "upper-case": named("SETUP.EXE"),
    "mixed-case": named("Setup.ExE"),
    "trailing-dot": named("setup.exe."),
    "trailing-space": named("setup.exe "),
    "trailing-dots-and-spaces": named("setup.exe . . "),
    "double-extension": named("invoice.pdf.exe"),
    "rfc2231-encoded": mixed(TEXT, attachment("attachment; filename*=UTF-8''invoice%2Epdf%2Eexe")),
    "rfc2231-continuation": mixed(TEXT, attachment(
        'attachment; filename*0="inv"; filename*1="oice.e"; filename*2="xe"')),
    "rfc2231-continuation-encoded": mixed(TEXT, attachment(
        "attachment; filename*0*=UTF-8''r%C3%A9sum%C3%A9; filename*1*=%2Escr")),
    "rfc2047-base64": named("=?UTF-8?B?aW52b2ljZS5leGU=?="),
    "rfc2047-q-in-name": mixed(TEXT, attachment(
        None, content_type='application/octet-stream; name="=?iso-8859-1?Q?r=E9sum=E9.scr?="')),
    "content-type-name-only": mixed(TEXT, attachment(
        None, content_type='application/octet-stream; name="run.bat"')),
    "name-differs-from-filename": mixed(TEXT, attachment(
        'attachment; filename="report.pdf"',
        content_type='application/octet-stream; name="report.pdf.vbs"')),
    "right-to-left-override": mixed(TEXT, attachment(
        "attachment; filename*=UTF-8''invoice%E2%80%AEfdp.exe")),
    "fullwidth-extension": mixed(TEXT, attachment(
        "attachment; filename*=UTF-8''setup.%EF%BD%85%EF%BD%98%EF%BD%85")),
    "folder-in-name": named("C:\\Users\\x\\Desktop\\setup.exe"),
    "alternate-data-stream": named("setup.exe::$DATA"),
    "other-default-types": mixed(TEXT, attachment('attachment; filename="photo.jpg"'),
                                 attachment('attachment; filename="update.JS"')),
    "shortcut": named("Invoice.lnk"),
    "disk-image": named("invoice.iso"),
    "in-attached-message": mixed(TEXT, "Content-Type: message/rfc822\r\n\r\n" + inner_message(
        TEXT, attachment('attachment; filename="evil.vbs"'))),
    "in-message-in-message": mixed(TEXT, "Content-Type: message/rfc822\r\n\r\n" + (
        "From: a@elsewhere.example\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
        "Content-Type: message/rfc822\r\n\r\n" + inner_message(
            attachment('attachment; filename="deep.hta"'))).replace("--inner", "--inner")),
    "uuencoded-in-body": (HEAD + "Content-Type: text/plain\r\n\r\nHere it is:\r\n\r\n"
                          "begin 644 setup.exe\r\nM35J0``,`````0```#__P``N```````````0```\r\n"
                          "`\r\nend\r\n"),
    # forbidden inside zip archives
    "zip-member": named("files.zip", zipped({"readme.txt": b"hi", "setup.exe": b"MZ"})),
    "zip-member-upper-case-with-folder": named("files.zip", zipped({
        "docs/readme.txt": b"hi", "bin/TOOL.SCR": b"x"})),
    "zip-in-zip": named("outer.zip", zipped({"inner.zip": zipped({"run.js": b"alert(1)"})})),
    "zip-member-executable-under-harmless-name": named("photos.zip", zipped({
        "photo.jpg": PE})),
    "zip-under-harmless-name": named("report.pdf", zipped({"report.exe": b"x"})),
    # Windows executables under harmless names
    "executable-named-pdf": named("report.pdf", PE),
    "executable-without-name": mixed(TEXT, attachment(None, PE)),
    "executable-labelled-text": mixed(TEXT, attachment(
        'attachment; filename="notes.txt"', PE, content_type="text/plain")),
    "executable-quoted-printable": mixed(TEXT, (
        'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; '
        'filename="data.dat"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
        + quopri.encodestring(PE).decode("ascii").replace("\n", "\r\n"))),
    "executable-as-whole-message": (HEAD + "Content-Type: application/octet-stream\r\n"
                                    "Content-Transfer-Encoding: base64\r\n\r\n" + b64(PE)),
    # allowed
    "pdf": named("invoice.pdf"),
    "exe-then-txt": named("notes.exe.txt"),
    "no-extension": named("exe"),
    "office-document-with-embedded-bin": named("contract.docx", DOCX),
    "zip-of-documents": named("docs.zip", zipped({"a.txt": b"a", "b/c.pdf": b"%PDF"})),
    "text-starting-with-mz": HEAD + "Content-Type: text/plain\r\n\r\nMZ is my name.\r\n",
    "malformed-no-boundary": (HEAD + "Content-Type: multipart/mixed\r\n\r\n--x\r\n"
                              "Content-Type: text/plain\r\n\r\nhello\r\n--x--\r\n"),
    "malformed-no-end-boundary": (HEAD + "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
                                  "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
                                  "Content-Type: application/pdf; name=\"a.pdf\"\r\n"
                                  "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0x!!!"),
    "malformed-headers-and-junk": (HEAD + "Content-Type: multipart/mixed; boundary=\r\n"
                                   "Content-Disposition: attachment; filename*0*=bogus''%ZZ\r\n"
                                   "Broken header line without colon\r\n\r\n\x00\xff junk\r\n"),
    "malformed-bad-rfc2231-charset": mixed(TEXT, attachment(
        "attachment; filename*=no-such-charset''report%2Epdf")),
    # unreadable
    "nested-too-deep": nested(30),
    "corrupt-zip": named("files.zip", b"PK\x03\x04" + b"\x00" * 30 + b"garbage"),
}


def main() -> None:
    for old in HERE.glob("*.eml"):
        old.unlink()
    for name, text in CORPUS.items():
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        (HERE / f"{name}.eml").write_bytes(data)
    print(f"wrote {len(CORPUS)} messages to {HERE}")


if __name__ == "__main__":
    main()
