"""Attack: getting an executable past the attachment rule.

The hostile-attachment corpus in tests/data/attachments tries every disguise we know: double
and fullwidth extensions, trailing dots and spaces, right-to-left override, RFC 2231 and 2047
encoded names, NTFS streams, executables named .pdf or labelled text, zip members and zips in
zips, uuencoded bodies, attached messages, malformed MIME. Its table of expected replies is
tests/unit/milter/test_attachments.py, where each file runs against the rule in-process; here
every file goes through a real node (Postfix, the milter, the account's rules) over
authenticated SMTP, and the client must see the same reply, while harmless files arrive.

Issue 15 added to the corpus: zips that look like Office or ODF files holding executables
(finding 1), a nested zip bomb (finding 3), encrypted archives with readable and unreadable
names (finding 9). The budget that stops the bomb is also tested in-process below, with limits
small enough to reach deterministically and a clock the test controls (never real timing).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import smtplib
import struct
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator

import pytest

from tests.data.attachments.make_corpus import (
    OOXML_DEFAULTS,
    VBA_PROJECT,
    VBA_PROJECT_BIN,
    WORD_MACRO_MAIN,
    WORD_MAIN,
    content_types,
    docm,
    ole10native,
    ole_fat_bomb,
    ole_file,
    ole_skeleton,
)
from tests.unit.milter.driver import eom_submission
from tests.unit.milter.test_attachments import CORPUS, EXPECTED
from txmail.accounts.settings import from_fields
from txmail.milter.rules import attachments
from txmail.milter.rules.attachments import Budget, Check, Uncheckable
from txmail.milter.submission import Submission
from txmail_testing.harness import Sink, Stack, wait_for

DOMAIN = "attsec.example"


@pytest.fixture(scope="module")
def refusing_login(stack: Stack) -> tuple[str, str]:
    return "attsecenc", stack.add_account(
        "attsecenc",
        "attsecenc.example",
        settings=[
            "warmup=false",
            "messages_per_minute=0",
            "recipients_per_minute=0",
            "encrypted_archives=refuse",
        ],
    )


@pytest.fixture(scope="module")
def login(stack: Stack) -> tuple[str, str]:
    return "attsec", stack.add_account(
        "attsec",
        DOMAIN,
        settings=["warmup=false", "messages_per_minute=0", "recipients_per_minute=0"],
    )


def submit(
    stack: Stack, login: tuple[str, str], recipient: str, message: bytes, domain: str = DOMAIN
) -> tuple[int, str]:
    with contextlib.closing(stack.client("submission", login)) as smtp:
        smtp.mail(f"app@{domain}")
        smtp.rcpt(recipient)
        try:
            code, text = smtp.data(message)
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error
    return code, " ".join(text.decode("utf-8", "replace").split())


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_through_a_real_node(
    stack: Stack, sink: Sink, login: tuple[str, str], name: str
) -> None:
    expected, words = EXPECTED[name]
    recipient = f"att-{name}@example.net"
    message = (
        (CORPUS / f"{name}.eml").read_bytes().replace(b"app@acme.example", f"app@{DOMAIN}".encode())
    )
    code, text = submit(stack, login, recipient, message)
    if not expected:
        assert code == 250, text
        wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
        return
    assert f"{code} {text}".startswith(expected), text
    for word in words:
        assert word in text
    if expected == "554 5.7.1":
        assert text.endswith("(or send a link to it instead)")


@pytest.mark.e2e
def test_an_account_can_refuse_every_encrypted_archive(
    stack: Stack, sink: Sink, login: tuple[str, str], refusing_login: tuple[str, str]
) -> None:
    """Finding 9: `encrypted_archives=refuse`; the default judges such a zip by its names."""
    eml = (CORPUS / "zip-encrypted-harmless-names.eml").read_bytes()
    code, text = submit(
        stack,
        refusing_login,
        "att-enc-refused@example.net",
        eml.replace(b"app@acme.example", b"app@attsecenc.example"),
        domain="attsecenc.example",
    )
    assert (code, text.split(" ", 1)[0]) == (554, "5.7.1"), text
    assert "this account does not accept encrypted archives" in text
    code, text = submit(
        stack,
        login,
        "att-enc-default@example.net",
        eml.replace(b"app@acme.example", f"app@{DOMAIN}".encode()),
    )
    assert code == 250, text


# -- in process: the rule and its budget ----------------------------------------------------

SETTINGS = from_fields({})


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(
                zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)),
                content,
                compress_type=method,
            )
    return buffer.getvalue()


def with_attachment(name: str, content: bytes) -> Submission:
    raw = (
        b"From: App <app@acme.example>\r\nTo: user@example.net\r\nSubject: s\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="'
        + name.encode()
        + b'"\r\n\r\n'
        + base64.encodebytes(content).replace(b"\n", b"\r\n")
        + b"\r\n--b--\r\n"
    )
    return eom_submission(raw)


def nested_zeros(archives: int, megabytes: int) -> bytes:
    """A zip of `archives` zips, each holding `megabytes` MB of zeros stored uncompressed."""
    inner = zipped({"zeros.dat": bytes(megabytes << 20)}, zipfile.ZIP_STORED)
    return zipped({f"part{i}.zip": inner for i in range(archives)})


def test_one_budget_covers_every_archive_of_a_message() -> None:
    """Finding 3: bytes inflated add up across nested archives; past the budget, 554 5.7.1."""
    submission = with_attachment("backup.zip", nested_zeros(3, 2))  # 6 MB inflated, ~20 KB
    assert attachments.check(submission, SETTINGS) is None
    refusal = attachments.check(submission, SETTINGS, Budget(inflated_bytes=5 << 20))
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert refusal.text.startswith(
        'Attachment "backup.zip" could not be checked: its archives '
        "unpack to more than 5 MB; send the files in fewer"
    )
    # no archive alone is over: 4 MB, then 2 MB more in a second attachment of the same message
    assert (
        attachments.check(
            with_attachment("a.zip", nested_zeros(2, 2)), SETTINGS, Budget(inflated_bytes=5 << 20)
        )
        is None
    )


def test_the_members_of_nested_archives_count_against_one_budget() -> None:
    inner = zipped({f"f{i}.txt": b"x" for i in range(40)})
    submission = with_attachment("many.zip", zipped({f"z{i}.zip": inner for i in range(5)}))
    assert attachments.check(submission, SETTINGS, Budget(members=300)) is None
    refusal = attachments.check(submission, SETTINGS, Budget(members=150))
    assert refusal is not None and "hold more than 150 files" in refusal.text


def test_cpu_time_is_a_second_guard() -> None:
    """The rule stops once the process clock says its CPU allowance is spent, whatever is
    left to look at (here a clock that advances one second each time it is read)."""
    ticks: Iterator[float] = iter(range(10_000))
    budget = Budget(cpu_seconds=5, clock=lambda: float(next(ticks)))
    submission = with_attachment("files.zip", zipped({f"f{i}.txt": b"x" for i in range(50)}))
    refusal = attachments.check(submission, SETTINGS, budget)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert "take too long to unpack" in refusal.text
    assert next(ticks) < 10  # it stopped, rather than reading all fifty members


def test_cpu_spent_by_other_threads_is_not_charged_to_a_message() -> None:
    """libmilter checks every connection in a thread of one process: what other threads burn
    (other accounts' archives, bombs sent in parallel) must not turn this message into a 554.
    The check starts, waits while another thread burns 0.3 s of CPU, then goes on; its own
    allowance here is 0.1 s, which it has not used."""
    outcome: list[str] = []
    burnt = threading.Event()

    def check_one_message() -> None:
        state = Check(frozenset(), False, Budget(cpu_seconds=0.1))
        burnt.wait(30)
        try:
            state.spend()
            outcome.append("checked")
        except Uncheckable as reason:
            outcome.append(str(reason))

    worker = threading.Thread(target=check_one_message)
    worker.start()
    started = time.thread_time()
    block = bytes(1 << 20)
    while time.thread_time() - started < 0.3:  # hashing a large buffer releases the GIL
        hashlib.sha256(block).digest()
    burnt.set()
    worker.join(30)
    assert outcome == ["checked"]


def test_a_document_marker_excuses_no_member() -> None:
    """Finding 1: whichever marker (OOXML, ODF) and wherever the executable is."""
    pe = b"MZ" + bytes(58) + (64).to_bytes(4, "little") + b"PE\0\0" + bytes(64)
    for marker in ("mimetype", "[Content_Types].xml", "META-INF/manifest.xml"):
        for member, content, words in (
            ("invoice.exe", b"x", "(.exe)"),
            ("payload.scr", b"x", "(.scr)"),
            ("readme.pdf", pe, "is a Windows executable"),
            ("word/media/image1.png", pe, "is a Windows executable"),
        ):
            archive = zipped(
                {
                    marker: b"application/vnd.oasis.opendocument.text",
                    "content.xml": b"<x/>",
                    member: content,
                }
            )
            refusal = attachments.check(with_attachment("report.docx", archive), SETTINGS)
            assert refusal is not None and words in refusal.text, (marker, member, refusal)


ALLOWING_VBA = dataclasses.replace(
    SETTINGS,
    forbidden_extensions=tuple(e for e in SETTINGS.forbidden_extensions if e != "vba"),
)


def test_macros_are_refused_unless_the_account_allows_vba() -> None:
    archive = zipped(
        {
            "[Content_Types].xml": b"<Types/>",
            "word/document.xml": b"<w/>",
            "word/vbaProject.bin": VBA_PROJECT_BIN,
        }
    )
    refusal = attachments.check(with_attachment("report.docm", archive), SETTINGS)
    assert refusal is not None and '"word/vbaProject.bin"' in refusal.text
    assert attachments.check(with_attachment("report.docm", archive), ALLOWING_VBA) is None


HARMLESS_OLE = ole_file({"contents": b"ActiveX control state" * 10})


@pytest.mark.parametrize(
    "declared,named",
    [
        # a VBA project under any name: the content type says what it is
        ({"/word/document.xml": WORD_MACRO_MAIN, "/word/x.bin": VBA_PROJECT}, "word/x.bin"),
        ({"/word/document.xml": WORD_MAIN, "/word/x.bin": VBA_PROJECT}, "word/x.bin"),
        ({"/WORD/X%2Ebin": "Application/VND.ms-office.vbaProject"}, "word/x.bin"),
        # written with a character reference, which every XML reader decodes
        ({"/word/x.bin": "application/vnd.ms-office.vba&#80;roject"}, "word/x.bin"),
        # the macro-enabled main document type alone
        ({"/word/document.xml": WORD_MACRO_MAIN}, "word/document.xml"),
        (
            {"/xl/macrosheets/sheet1.xml": "application/vnd.ms-excel.macrosheet+xml"},
            "[Content_Types].xml",
        ),
    ],
)
def test_macros_are_found_by_their_content_type(declared: dict[str, str], named: str) -> None:
    """Review of issue 15: Word finds the VBA project through its relationship and content
    type, not its name; `word/x.bin` passed as one of OOXML's own .bin parts."""
    archive = zipped(
        {
            "[Content_Types].xml": content_types(OOXML_DEFAULTS, declared),
            "word/document.xml": b"<w/>",
            "word/x.bin": HARMLESS_OLE,
        }
    )
    refusal = attachments.check(with_attachment("report.docx", archive), SETTINGS)
    assert refusal is not None and f'holds macros ("{named}")' in refusal.text, refusal
    assert attachments.check(with_attachment("report.docx", archive), ALLOWING_VBA) is None


def test_a_default_content_type_makes_every_such_part_a_macro() -> None:
    archive = zipped(
        {
            "[Content_Types].xml": content_types(
                {**OOXML_DEFAULTS, "bin": VBA_PROJECT}, {"/word/document.xml": WORD_MAIN}
            ),
            "word/document.xml": b"<w/>",
            "word/media/x.bin": HARMLESS_OLE,
        }
    )
    refusal = attachments.check(with_attachment("report.docx", archive), SETTINGS)
    assert refusal is not None and 'holds macros ("word/media/x.bin")' in refusal.text


def test_a_vba_project_is_found_by_what_it_holds() -> None:
    """Whatever [Content_Types].xml says, an OLE file holding a VBA project is macros."""
    archive = docm(
        WORD_MAIN,
        "application/vnd.openxmlformats-officedocument.oleObject",
        "word/embeddings/oleObject1.bin",
        VBA_PROJECT_BIN,
    )
    refusal = attachments.check(with_attachment("report.docx", archive), SETTINGS)
    assert refusal is not None and 'holds macros ("word/embeddings/oleObject1.bin")' in refusal.text


def test_content_types_that_cannot_be_read_are_not_passed() -> None:
    for text in (b"<Types", b'<!DOCTYPE t [<!ENTITY a "x">]><Types/>'):
        archive = zipped({"[Content_Types].xml": text, "word/document.xml": b"<w/>"})
        refusal = attachments.check(with_attachment("report.docx", archive), SETTINGS)
        assert refusal is not None and '"[Content_Types].xml" cannot be read' in refusal.text


@pytest.mark.parametrize(
    "where", [0, 1000, attachments.READ_CHUNK - 30, attachments.READ_CHUNK + 5]
)
def test_a_program_embedded_in_an_ole_object_is_found_wherever_it_sits(where: int) -> None:
    pe = b"MZ" + bytes(58) + (128).to_bytes(4, "little") + bytes(64) + b"PE\0\0" + bytes(64)

    def embedded(program: bytes) -> bytes:
        return zipped(
            {
                "[Content_Types].xml": b"<Types/>",
                "word/document.xml": b"<w/>",
                "word/embeddings/oleObject1.bin": ole_file(
                    {
                        "\x01Ole10Native": ole10native("a.dat", bytes(where) + program),
                        "WordDocument": b"text " * 1000,
                    }
                ),
            }
        )

    refusal = attachments.check(with_attachment("contract.docx", embedded(pe)), SETTINGS)
    assert refusal is not None and "holds a Windows executable" in refusal.text
    harmless = embedded(pe.replace(b"PE\0\0", b"PX\0\0"))
    assert attachments.check(with_attachment("contract.docx", harmless), SETTINGS) is None


@pytest.mark.parametrize("before_end", [2, 30, 62, 100, 190])
def test_a_program_split_across_ole_sectors_is_found(before_end: int) -> None:
    """Review of issue 15: the program's sectors are not next to each other in the file (they
    alternate with another stream's), so MZ and its PE header, 200 bytes on, are together
    only once the stream is put back together. The DOS header starts `before_end` bytes before
    the end of the stream's second sector."""
    pe = b"MZ" + bytes(58) + (200).to_bytes(4, "little") + bytes(136) + b"PE\0\0" + bytes(64)
    header = len(ole10native("a.dat", b"")) - 6  # the stream's bytes before the file
    stream = ole10native("a.dat", bytes(1024 - before_end - header) + pe + bytes(5000))
    ole = ole_file({"\x01Ole10Native": stream, "WordDocument": b"text " * 2000})
    at = ole.find(b"MZ")
    assert ole[at + 200 : at + 204] != b"PE\0\0" and at % 512 == 512 - before_end
    refusal = attachments.check(with_attachment("old.doc", ole), SETTINGS)
    assert refusal is not None and "holds a Windows executable" in refusal.text


def test_an_ole_file_that_cannot_be_followed_is_not_passed() -> None:
    ole = bytearray(ole_file({"WordDocument": b"text " * 2000}))
    ole[48:52] = (10_000).to_bytes(4, "little")  # the directory starts past the end
    refusal = attachments.check(with_attachment("old.doc", bytes(ole)), SETTINGS)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert "an Office (OLE) file that cannot be read" in refusal.text


def test_ole_streams_count_against_the_budget() -> None:
    ole = ole_file({f"s{i}": bytes(5000) for i in range(8)})
    assert attachments.check(with_attachment("old.doc", ole), SETTINGS) is None
    refusal = attachments.check(with_attachment("old.doc", ole), SETTINGS, Budget(members=5))
    assert refusal is not None and "hold more than 5 files" in refusal.text
    refusal = attachments.check(
        with_attachment("old.doc", ole), SETTINGS, Budget(inflated_bytes=30_000)
    )
    assert refusal is not None and "could not be checked" in refusal.text


# -- OLE files built to make the reader's FAT, DIFAT or directory large (review of issue 15)


def test_a_repeated_fat_sector_costs_no_more_than_the_file() -> None:
    """A 48 MB OLE file of zeros (the corpus's ole-fat-sector-repeated, 8 MB here) that names
    sector 0 as every one of its FAT sectors: read naively, a FAT of 128 entries per sector
    of the file as a tuple of ints, through which the directory chain loops as many times;
    2 s of CPU and 300 MB for one attachment. It is refused at its header, holding nothing
    but the member itself."""
    ole = ole_fat_bomb(8)
    submission = with_attachment("report.zip", zipped({"report.doc": ole}))
    tracemalloc.start()
    try:
        refusal = attachments.check(submission, SETTINGS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert "(more FAT sectors than the file needs)" in refusal.text
    assert peak < len(ole) * 1.5, peak  # the inflated member, held once (not joined)


SECTORS = 237 * 128  # 15 MB of sectors, which need 237 FAT sectors: more than the header lists


def fat_sector(entries: dict[int, int]) -> bytes:
    return struct.pack("<128I", *(entries.get(i, 0xFFFFFFFF) for i in range(128)))


@pytest.mark.parametrize(
    "ole,why",
    [
        # as many FAT sectors as sectors in the file
        (
            ole_skeleton(SECTORS, SECTORS, [0] * 109, difat_next=0),
            "more FAT sectors than the file needs",
        ),
        # as many as the file needs (and slack), but one sector named each time: read naively,
        # the three copies of one FAT sector make a FAT the directory chain is followed through
        (
            ole_skeleton(
                40,
                3,
                [1, 1, 1],
                directory_start=0,
                sectors={0: bytes(66) + b"\x05", 1: fat_sector({0: 0xFFFFFFFE, 1: 0xFFFFFFFD})},
            ),
            "a FAT sector is listed twice",
        ),
        # a DIFAT sector that names itself as the next one: read naively, again and again
        (
            ole_skeleton(
                SECTORS,
                237,
                list(range(109)),
                difat_next=200,
                sectors={200: struct.pack("<128I", *range(300, 427), 200)},
            ),
            "the DIFAT loops",
        ),
    ],
)
def test_a_fat_made_larger_than_the_file_is_refused(ole: bytes, why: str) -> None:
    refusal = attachments.check(with_attachment("old.doc", ole), SETTINGS)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.7.1")
    assert f"an Office (OLE) file that cannot be read ({why})" in refusal.text


def test_the_fat_and_directory_count_against_the_budget() -> None:
    """A directory 4 MB long (every sector of the file chained into it, one root entry and
    unused entries after it) holds no stream, but it is read: its bytes are charged."""
    count = 8 * 1024
    fats = -(-count // 128)
    fat = (
        {n: n + 1 for n in range(count - fats - 1)}
        | {count - fats - 1: 0xFFFFFFFE}
        | {n: 0xFFFFFFFD for n in range(count - fats, count)}
    )
    sectors = {0: bytes(66) + b"\x05" + bytes(49) + struct.pack("<I", 0xFFFFFFFE)}
    for i, number in enumerate(range(count - fats, count)):
        sectors[number] = struct.pack(
            "<128I", *(fat.get(i * 128 + k, 0xFFFFFFFF) for k in range(128))
        )
    ole = ole_skeleton(count, fats, list(range(count - fats, count)), sectors=sectors)
    assert attachments.check(with_attachment("old.doc", ole), SETTINGS) is None
    refusal = attachments.check(
        with_attachment("old.doc", ole), SETTINGS, Budget(inflated_bytes=3 << 20)
    )
    assert refusal is not None and "unpack to more than 3 MB" in refusal.text


@pytest.mark.parametrize("entries,size", [(1_000_000, 46_000_000), (1, 46_000_000)])
def test_a_huge_zip_directory_is_refused_before_it_is_listed(entries: int, size: int) -> None:
    """zipfile lists a whole central directory at once (by its size, whatever the count says):
    a million entries cost 4.4 s of CPU and 370 MB before the member limit was looked at. The
    end record's count and size are judged first; this archive has no directory at all, so
    only the end record can have refused it."""
    end = b"PK\x05\x06" + struct.pack(
        "<HHHHIIH", 0, 0, min(entries, 0xFFFF), min(entries, 0xFFFF), size, 0, 0
    )
    if entries > 0xFFFF:  # the count in the zip64 end record, which a locator points at
        zip64 = b"PK\x06\x06" + struct.pack(
            "<QHHIIQQQQ", 44, 45, 45, 0, 0, entries, entries, size, 0
        )
        end = zip64 + b"PK\x06\x07" + struct.pack("<IQI", 0, 4, 1) + end  # record at 4
    refusal = attachments.check(with_attachment("files.zip", b"PK\x03\x04" + end), SETTINGS)
    assert refusal is not None and (refusal.code, refusal.status) == ("554", "5.6.0")
    assert "more than 5000 files" in refusal.text
