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
import struct
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
HEAD = (
    "From: App <app@acme.example>\r\nTo: user@example.net\r\nSubject: corpus\r\n"
    "Message-ID: <corpus@acme.example>\r\nMIME-Version: 1.0\r\n"
)

# A minimal Windows PE image: DOS header with e_lfanew = 0x40, then the PE signature.
PE = (
    b"MZ\x90\x00"
    + b"\x00" * 56
    + (0x40).to_bytes(4, "little")
    + b"PE\x00\x00"
    + b"\x4c\x01"
    + b"\x00" * 200
)


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode().replace("\n", "\r\n")


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = method
            archive.writestr(info, content)
    return buffer.getvalue()


def raw_zip(members: list[tuple[str, bytes, int, int]], directory: bytes | None = None) -> bytes:
    """A zip written by hand (zipfile cannot encrypt): (name, stored bytes as they go on disk,
    CRC-32 of the plain bytes, general-purpose flags) per member, method 0 (stored). With
    `directory`, those bytes stand where the central directory belongs (an encrypted one)."""
    body, central = b"", b""
    for name, stored, crc, flags in members:
        plain_size = len(stored) - (12 if flags & 1 else 0)
        fields = struct.pack("<HHHHHIII", 20, flags, 0, 0, 0x5C21, crc, len(stored), plain_size)
        central += (
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, len(body))
            + name.encode()
        )
        body += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name.encode() + stored
    if directory is not None:
        central = directory
    end = struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(central), len(body), 0)
    return body + central + b"PK\x05\x06" + end


def _crc_byte(crc: int, byte: int) -> int:
    return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def zip_encrypted(plain: bytes, password: bytes = b"secret") -> tuple[bytes, int]:
    """Traditional PKWARE encryption (APPNOTE 6.1): the 12-byte header, then the data, each
    byte XORed with a keystream driven by the password. Returns (bytes on disk, CRC-32)."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(byte: int) -> None:
        keys[0] = _crc_byte(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _crc_byte(keys[2], keys[1] >> 24)

    for byte in password:
        update(byte)
    crc = zlib.crc32(plain)
    out = bytearray()
    for byte in bytes(range(11)) + bytes([crc >> 24]) + plain:  # the last header byte checks
        temp = keys[2] | 2
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    return bytes(out), crc


def encrypted_zip(members: dict[str, bytes]) -> bytes:
    entries = []
    for name, content in members.items():
        stored, crc = zip_encrypted(content)
        entries.append((name, stored, crc, 1))
    return raw_zip(entries)


def names_encrypted_zip() -> bytes:
    """Central directory encryption (APPNOTE 4.4.4 bit 13, strong encryption bit 6): the
    local header's name is masked and the directory is ciphertext, so nothing can be listed."""
    noise = bytes((i * 73 + 41) & 0xFF for i in range(96))
    return raw_zip([("0" * 8, noise, 0, 0x2041)], directory=noise[::-1])


def zip_bomb(archives: int, inner: int, megabytes: int) -> bytes:
    """Zips in zips: `archives` members, each a zip of `inner` zips that each hold
    `megabytes` MB of zeros stored uncompressed (so every inner zip is that large, and the
    deflated layers above shrink it again). Each inner zip is just under ZIP_NESTED_MAX."""
    innermost = zipped({"zeros.dat": bytes(megabytes << 20)}, zipfile.ZIP_STORED)
    middle = zipped({f"part{i}.zip": innermost for i in range(inner)})
    return zipped({f"volume{i}.zip": middle for i in range(archives)})


# RAR 5 with encrypted headers (rar -hp): the signature, then an archive encryption header
# (CRC32, size, type 4, flags 0, version 0, flags 1 = password check present, KDF count, salt,
# check value); every header after it is ciphertext.
RAR5_ENCRYPTED_NAMES = (
    b"Rar!\x1a\x07\x01\x00"
    + struct.pack("<I", 0x1C2D3E4F)
    + bytes([33, 4, 0, 0, 1, 15])
    + bytes(range(16))
    + bytes(range(12))
    + bytes((i * 29) & 0xFF for i in range(64))
)
# RAR 4 (1.5-4.x) with encrypted headers: the main header (type 0x73) with flag 0x0080.
RAR4_ENCRYPTED_NAMES = (
    b"Rar!\x1a\x07\x00"
    + struct.pack("<HBHH", 0x90CF, 0x73, 0x0080, 13)
    + bytes(6)
    + bytes((i * 31) & 0xFF for i in range(64))
)


def seven_zip_encrypted_names() -> bytes:
    """7z with encrypted headers (7z -mhe=on): the next header is an encoded header
    (kEncodedHeader, 0x17) whose coder is 7zAES (06 F1 07 01)."""
    packed = bytes((i * 53) & 0xFF for i in range(48))
    header = (
        b"\x17\x06\x00\x01\x09\x30\x00\x07\x0b\x01\x00\x01\x24\x06\xf1\x07\x01"
        b"\x0a\x53\x07" + bytes(10) + b"\x0c\x30\x00\x00"
    )
    start = struct.pack("<QQI", len(packed), len(header), zlib.crc32(header))
    return (
        b"7z\xbc\xaf\x27\x1c\x00\x04"
        + struct.pack("<I", zlib.crc32(start))
        + start
        + packed
        + header
    )


def with_method(archive: bytes, method: int) -> bytes:
    """The zip with every member's compression method field set to `method` (local headers and
    central directory alike); the data is left as it is."""
    data = bytearray(archive)
    for signature, field in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)
        while at != -1:
            data[at + field : at + field + 2] = struct.pack("<H", method)
            at = data.find(signature, at + 4)
    return bytes(data)


def deflate64_zip(name: str, content: bytes) -> bytes:
    """A zip whose member uses method 9 (Deflate64), which Windows Explorer and 7-Zip open and
    Python's zipfile cannot. Stored deflate blocks mean the same in Deflate64, so raw deflate at
    level 0 is a valid Deflate64 stream."""
    packer = zlib.compressobj(0, zlib.DEFLATED, -15)
    packed = packer.compress(content) + packer.flush()
    stored = zipped({name: packed}, zipfile.ZIP_STORED)
    entry = zipfile.ZipFile(io.BytesIO(stored)).infolist()[0]
    fixed = bytearray(with_method(stored, 9))
    for signature, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size
        at = fixed.find(signature)
        fixed[at + field : at + field + 4] = struct.pack("<I", len(content))
    for signature, field in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):  # CRC-32
        at = fixed.find(signature)
        fixed[at + field : at + field + 4] = struct.pack("<I", zlib.crc32(content))
    assert entry.file_size == len(packed)
    return bytes(fixed)


def renamed_in_local_header(archive: bytes, listed: str, stored: str) -> bytes:
    """The zip with one member's local-header name changed (same length): the central
    directory lists `listed`, an extractor that reads local headers writes `stored`."""
    assert len(listed) == len(stored)
    at = archive.find(b"PK\x03\x04" + archive[4:26])  # the first local header
    at = archive.find(listed.encode(), at)
    return archive[:at] + stored.encode() + archive[at + len(listed) :]


# -- OLE compound files (MS-CFB version 3, 512-byte sectors) --------------------------------

FREESECT, ENDOFCHAIN, FATSECT, NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


def ole_file(streams: dict[str, bytes]) -> bytes:
    """An OLE compound file holding `streams` ("Macros/VBA/dir": storages are made for the
    folders). Streams under 4096 bytes go in the mini stream, as the format requires; the
    sectors of larger streams are allocated in turn, one each, so none of them is stored in
    one piece (files edited in place look like this)."""
    paths = sorted(streams)
    storages = sorted(
        {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    )
    entries = [""] + storages + paths  # index 0 is the root
    mini, mini_start = b"", {}
    for path in paths:
        if len(streams[path]) < 4096:
            mini_start[path] = len(mini) // 64
            mini += streams[path] + bytes(-len(streams[path]) % 64)
    big = [p for p in paths if p not in mini_start]
    chunks = {p: [streams[p][i : i + 512] for i in range(0, len(streams[p]), 512)] for p in big}
    order: list[tuple[str, int]] = []  # (stream, chunk), round-robin
    for i in range(max((len(c) for c in chunks.values()), default=0)):
        order += [(p, i) for p in big if i < len(chunks[p])]
    sectors: list[bytes] = [chunks[p][i] for p, i in order]
    chains: dict[str, list[int]] = {p: [] for p in big}
    for number, (p, _) in enumerate(order):
        chains[p].append(number)

    def allocate(data: bytes) -> list[int]:
        numbers = []
        for i in range(0, len(data), 512):
            numbers.append(len(sectors))
            sectors.append(data[i : i + 512])
        return numbers

    mini_chain = allocate(mini)
    # the mini FAT chains each small stream through its own consecutive mini sectors
    minifat_entries = []
    for path in paths:
        if path in mini_start:
            count = max(1, -(-len(streams[path]) // 64))
            first = mini_start[path]
            minifat_entries += [first + k + 1 for k in range(count - 1)] + [ENDOFCHAIN]
    minifat = struct.pack(f"<{len(minifat_entries)}I", *minifat_entries)
    minifat_chain = allocate(minifat + bytes(-len(minifat) % 512))

    def entry(name: str, kind: int, child: int, right: int, start: int, size: int) -> bytes:
        encoded = name.encode("utf-16-le") + b"\0\0"
        return (
            encoded
            + bytes(64 - len(encoded))
            + struct.pack("<HBBIII", len(encoded), kind, 1, NOSTREAM, right, child)
            + bytes(36)
            + struct.pack("<IQ", start, size)
        )

    def key(path: str) -> tuple[int, str]:
        name = path.rsplit("/", 1)[-1]
        return len(name), name.upper()

    directory = b""
    for index, path in enumerate(entries):
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        siblings = sorted(
            (e for e in entries[1:] if (e.rsplit("/", 1)[0] if "/" in e else "") == parent), key=key
        )
        children = (
            sorted(
                (e for e in entries[1:] if (e.rsplit("/", 1)[0] if "/" in e else "") == path),
                key=key,
            )
            if index == 0 or path in storages
            else []
        )
        child = entries.index(children[0]) if children else NOSTREAM
        if index == 0:
            directory += entry(
                "Root Entry",
                5,
                child,
                NOSTREAM,
                mini_chain[0] if mini_chain else ENDOFCHAIN,
                len(mini),
            )
            continue
        after = siblings.index(path) + 1
        right = entries.index(siblings[after]) if after < len(siblings) else NOSTREAM
        if path in storages:
            directory += entry(path.rsplit("/", 1)[-1], 1, child, right, 0, 0)
        else:
            data = streams[path]
            start = (
                mini_start[path]
                if path in mini_start
                else (chains[path][0] if chains[path] else ENDOFCHAIN)
            )
            directory += entry(path.rsplit("/", 1)[-1], 2, NOSTREAM, right, start, len(data))
    empty = bytes(64) + struct.pack("<HBBIII", 0, 0, 0, NOSTREAM, NOSTREAM, NOSTREAM) + bytes(52)
    directory += empty * (-len(directory) // 128 % 4)
    directory_chain = allocate(directory)
    fat_count = 1
    while (len(sectors) + fat_count) > fat_count * 128:
        fat_count += 1
    fat_chain = list(range(len(sectors), len(sectors) + fat_count))
    fat = [FREESECT] * (fat_count * 128)
    for chain in filter(None, [*chains.values(), mini_chain, minifat_chain, directory_chain]):
        for here, following in zip(chain, [*chain[1:], ENDOFCHAIN], strict=True):
            fat[here] = following
    for number in fat_chain:
        fat[number] = FATSECT
    sectors += [struct.pack("<128I", *fat[i * 128 : (i + 1) * 128]) for i in range(fat_count)]
    difat = fat_chain + [FREESECT] * (109 - fat_count)
    header = (
        OLE_SIGNATURE
        + bytes(16)
        + struct.pack(
            "<HHHHH6xIIIIIIIII",
            0x3E,
            3,
            0xFFFE,
            9,
            6,
            0,
            fat_count,
            directory_chain[0],
            0,
            4096,
            minifat_chain[0] if minifat else ENDOFCHAIN,
            len(minifat_chain),
            ENDOFCHAIN,
            0,
        )
        + struct.pack("<109I", *difat)
    )
    return header + b"".join(s + bytes(512 - len(s)) for s in sectors)


def ole_skeleton(
    sector_count: int,
    fat_count: int,
    fat_sectors: list[int],
    difat_next: int = ENDOFCHAIN,
    directory_start: int = 0,
    sectors: dict[int, bytes] | None = None,
) -> bytes:
    """A version 3 OLE header over `sector_count` sectors of zeros, with `sectors` written
    in: for files built to break the reader (its FAT, DIFAT or directory) rather than ones
    Office writes. `fat_sectors` are the header's DIFAT entries (up to 109)."""
    header = (
        OLE_SIGNATURE
        + bytes(16)
        + struct.pack(
            "<HHHHH6xIIIIIIIII",
            0x3E,
            3,
            0xFFFE,
            9,
            6,
            0,
            fat_count,
            directory_start,
            0,
            4096,
            ENDOFCHAIN,
            0,
            difat_next,
            0,
        )
        + struct.pack("<109I", *fat_sectors, *[FREESECT] * (109 - len(fat_sectors)))
    )
    body = bytearray(sector_count * 512)
    for number, content in (sectors or {}).items():
        body[number * 512 : number * 512 + len(content)] = content
    return header + bytes(body)


def ole_fat_bomb(megabytes: int) -> bytes:
    """An OLE file of zeros that declares a FAT sector for every sector it has, each of them
    sector 0, found through a DIFAT that points at itself (sector 0 again): read naively, a
    FAT of 128 entries per sector of the file, whose zeros make the directory chain loop."""
    count = (megabytes << 20) // 512
    return ole_skeleton(count, count, [0] * 109, difat_next=0)


def ole10native(name: str, content: bytes) -> bytes:
    """The stream in which Office's Packager embeds a file: its label, where it came from, a
    temporary path, then the file itself."""
    path = f"C:\\Users\\x\\{name}".encode()
    body = (
        struct.pack("<H", 2)
        + name.encode()
        + b"\0"
        + path
        + b"\0"
        + struct.pack("<HH", 0, 3)
        + struct.pack("<I", len(path) + 1)
        + path
        + b"\0"
        + struct.pack("<I", len(content))
        + content
        + bytes(6)
    )
    return struct.pack("<I", len(body)) + body


def mixed(*parts: str, boundary: str = "b1") -> str:
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return (
        f'{HEAD}Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"This is a MIME message.\r\n{body}--{boundary}--\r\n"
    )


TEXT = "Content-Type: text/plain; charset=utf-8\r\n\r\nPlease find the file attached.\r\n"


def attachment(
    disposition: str | None,
    content: bytes = b"%PDF-1.4 harmless\n",
    content_type: str = "application/octet-stream",
) -> str:
    head = f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n"
    if disposition is not None:
        head += f"Content-Disposition: {disposition}\r\n"
    return head + "\r\n" + b64(content)


def named(filename: str, content: bytes = b"%PDF-1.4 harmless\n") -> str:
    return mixed(TEXT, attachment(f'attachment; filename="{filename}"', content))


def inner_message(*parts: str) -> str:
    return (
        "From: someone@elsewhere.example\r\nSubject: forwarded\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="inner"\r\n\r\n'
        + "".join(f"--inner\r\n{p}\r\n" for p in parts)
        + "--inner--\r\n"
    )


def nested(depth: int) -> str:
    text = TEXT
    for level in range(depth):
        text = (
            f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n'
            f"--n{level}\r\n{text}\r\n--n{level}--\r\n"
        )
    return HEAD + text


def content_types(defaults: dict[str, str], overrides: dict[str, str]) -> bytes:
    """[Content_Types].xml as Office writes it."""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n<Types xmlns="http://'
        'schemas.openxmlformats.org/package/2006/content-types">'
        + "".join(f'<Default Extension="{e}" ContentType="{t}"/>' for e, t in defaults.items())
        + "".join(f'<Override PartName="{p}" ContentType="{t}"/>' for p, t in overrides.items())
        + "</Types>"
    ).encode()


OOXML_DEFAULTS = {
    "rels": "application/vnd.openxmlformats-package.relationships+xml",
    "xml": "application/xml",
}
WORD_MAIN = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
WORD_MACRO_MAIN = "application/vnd.ms-word.document.macroEnabled.main+xml"
VBA_PROJECT = "application/vnd.ms-office.vbaProject"
OLE_OBJECT = "application/vnd.openxmlformats-officedocument.oleObject"

# OLE compound files, built as Office builds them (ole_file above). A .doc with its usual
# streams, large enough that they are stored in pieces, and the letters MZ but no program.
OLE = ole_file(
    {
        "WordDocument": b"Quarterly report. MZ is a name here. " * 250,
        "1Table": bytes(range(256)) * 20,
        "\x01CompObj": b"\x01\x00\xfe\xff" + bytes(24),
        "\x05SummaryInformation": b"\xfe\xff\x00\x00" + bytes(44),
    }
)
# The same with a VBA project, as Word 97-2003 stores one.
OLE_WITH_MACROS = ole_file(
    {
        "WordDocument": b"Quarterly report. " * 250,
        "Macros/VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff" + bytes(3),
        "Macros/VBA/dir": b"\x01\x9a\xb1" + bytes(64),
        "Macros/PROJECT": b'ID="{00000000-0000-0000-0000-000000000000}"',
    }
)
# A VBA project on its own, as vbaProject.bin holds it in an OOXML package.
VBA_PROJECT_BIN = ole_file(
    {
        "VBA/_VBA_PROJECT": b"\xcc\x61\xff\xff" + bytes(3),
        "VBA/dir": b"\x01\x9a\xb1" + bytes(64),
        "VBA/ThisDocument": bytes(900),
        "PROJECT": b"Document=ThisDocument/&H00000000",
    }
)
# A Windows executable embedded the way Office's Packager embeds one (an Ole10Native stream).
OLE_WITH_PE = ole_file(
    {
        "\x01Ole10Native": ole10native("invoice.exe", PE),
        "\x01CompObj": b"\x01\x00\xfe\xff" + bytes(24),
    }
)
OLE_WITH_SCRIPT = ole_file(
    {"\x01Ole10Native": ole10native("invoice.js", b'WScript.Echo("hi");\r\n')}
)
OLE_WITH_TEXT = ole_file({"\x01Ole10Native": ole10native("notes.txt", b"Meeting notes.\r\n")})


def split_program_ole() -> bytes:
    """A program embedded by Packager whose DOS header ends one sector and whose PE header
    starts the next; the stream's sectors alternate with another stream's, so in the file's
    bytes the two halves are 512 bytes apart and nothing points from one to the other."""
    header_length = len(ole10native("report.pdf", b"")) - 6  # all before the file itself
    padding = 1024 - 20 - header_length  # MZ 20 bytes before the end of the second sector
    stream = ole10native("report.pdf", bytes(padding) + PE + bytes(5000))
    data = ole_file({"\x01Ole10Native": stream, "WordDocument": b"Contract text. " * 500})
    at = data.find(b"MZ\x90\x00")
    assert data[at + 64 : at + 68] != b"PE\x00\x00" and at % 512 == 512 - 20
    return data


DOCX = zipped(
    {
        "[Content_Types].xml": content_types(
            {**OOXML_DEFAULTS, "bin": OLE_OBJECT}, {"/word/document.xml": WORD_MAIN}
        ),
        "word/document.xml": b"<w:document/>",
        "word/embeddings/oleObject1.bin": OLE_WITH_TEXT,
    }
)
ODT = {
    "mimetype": b"application/vnd.oasis.opendocument.text",
    "content.xml": b"<office/>",
    "Pictures/logo.png": b"\x89PNG\r\n",
    "META-INF/manifest.xml": b"<manifest/>",
}
XLSX = {
    "[Content_Types].xml": content_types(
        {
            **OOXML_DEFAULTS,
            "bin": "application/vnd.openxmlformats-officedocument.spreadsheetml.printerSettings",
        },
        {
            "/xl/workbook.xml": "application/vnd.openxmlformats-officedocument.spreadsheetml."
            "sheet.main+xml",
            "/xl/activeX/activeX1.bin": "application/vnd.ms-office.activeX",
        },
    ),
    "xl/workbook.xml": b"<workbook/>",
    "xl/printerSettings/printerSettings1.bin": b"\x00printer\x00",
    "xl/activeX/activeX1.bin": ole_file({"contents": b"\x00ActiveX control state" * 10}),
}


def docm(main_type: str, vba_type: str, vba_part: str, vba_content: bytes) -> bytes:
    return zipped(
        {
            "[Content_Types].xml": content_types(
                OOXML_DEFAULTS, {"/word/document.xml": main_type, f"/{vba_part}": vba_type}
            ),
            "word/document.xml": b"<w:document/>",
            "word/_rels/document.xml.rels": (
                b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                b'<Relationship Id="rId1" Type="http://schemas.microsoft.com/office/2006/'
                b'relationships/vbaProject" Target="' + vba_part.split("/", 1)[1].encode() + b'"/>'
                b"</Relationships>"
            ),
            vba_part: vba_content,
        }
    )


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
    "rfc2231-continuation": mixed(
        TEXT, attachment('attachment; filename*0="inv"; filename*1="oice.e"; filename*2="xe"')
    ),
    "rfc2231-continuation-encoded": mixed(
        TEXT, attachment("attachment; filename*0*=UTF-8''r%C3%A9sum%C3%A9; filename*1*=%2Escr")
    ),
    "rfc2047-base64": named("=?UTF-8?B?aW52b2ljZS5leGU=?="),
    "rfc2047-q-in-name": mixed(
        TEXT,
        attachment(
            None, content_type='application/octet-stream; name="=?iso-8859-1?Q?r=E9sum=E9.scr?="'
        ),
    ),
    "content-type-name-only": mixed(
        TEXT, attachment(None, content_type='application/octet-stream; name="run.bat"')
    ),
    "name-differs-from-filename": mixed(
        TEXT,
        attachment(
            'attachment; filename="report.pdf"',
            content_type='application/octet-stream; name="report.pdf.vbs"',
        ),
    ),
    "right-to-left-override": mixed(
        TEXT, attachment("attachment; filename*=UTF-8''invoice%E2%80%AEfdp.exe")
    ),
    "fullwidth-extension": mixed(
        TEXT, attachment("attachment; filename*=UTF-8''setup.%EF%BD%85%EF%BD%98%EF%BD%85")
    ),
    "folder-in-name": named("C:\\Users\\x\\Desktop\\setup.exe"),
    "alternate-data-stream": named("setup.exe::$DATA"),
    "other-default-types": mixed(
        TEXT,
        attachment('attachment; filename="photo.jpg"'),
        attachment('attachment; filename="update.JS"'),
    ),
    "shortcut": named("Invoice.lnk"),
    "disk-image": named("invoice.iso"),
    "in-attached-message": mixed(
        TEXT,
        "Content-Type: message/rfc822\r\n\r\n"
        + inner_message(TEXT, attachment('attachment; filename="evil.vbs"')),
    ),
    "in-message-in-message": mixed(
        TEXT,
        "Content-Type: message/rfc822\r\n\r\n"
        + (
            "From: a@elsewhere.example\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
            "Content-Type: message/rfc822\r\n\r\n"
            + inner_message(attachment('attachment; filename="deep.hta"'))
        ).replace("--inner", "--inner"),
    ),
    "uuencoded-in-body": (
        HEAD + "Content-Type: text/plain\r\n\r\nHere it is:\r\n\r\n"
        "begin 644 setup.exe\r\nM35J0``,`````0```#__P``N```````````0```\r\n"
        "`\r\nend\r\n"
    ),
    # forbidden inside zip archives
    "zip-member": named("files.zip", zipped({"readme.txt": b"hi", "setup.exe": b"MZ"})),
    "zip-member-upper-case-with-folder": named(
        "files.zip", zipped({"docs/readme.txt": b"hi", "bin/TOOL.SCR": b"x"})
    ),
    "zip-in-zip": named("outer.zip", zipped({"inner.zip": zipped({"run.js": b"alert(1)"})})),
    "zip-member-executable-under-harmless-name": named("photos.zip", zipped({"photo.jpg": PE})),
    "zip-under-harmless-name": named("report.pdf", zipped({"report.exe": b"x"})),
    # forbidden inside zips that look like Office or OpenDocument files (issue 15, finding 1)
    "document-marker-with-executable": named(
        "files.zip",
        zipped({"mimetype": b"application/vnd.oasis.opendocument.text", "invoice.exe": PE}),
    ),
    "document-marker-with-script-and-executable-pdf": named(
        "files.zip",
        zipped({"[Content_Types].xml": b"<Types/>", "readme.pdf": PE, "payload.scr": b"x"}),
    ),
    "document-marker-with-executable-pdf": named(
        "files.zip", zipped({"[Content_Types].xml": b"<Types/>", "readme.pdf": PE})
    ),
    "odt-with-executable-picture": named("letter.odt", zipped({**ODT, "Pictures/logo.png": PE})),
    "docx-with-executable-member": named(
        "contract.docx",
        zipped(
            {
                "[Content_Types].xml": b"<Types/>",
                "word/document.xml": b"<w:document/>",
                "word/media/setup.exe": b"x",
            }
        ),
    ),
    "docx-with-embedded-executable": named(
        "contract.docx",
        zipped(
            {
                "[Content_Types].xml": b"<Types/>",
                "word/document.xml": b"<w:document/>",
                "word/embeddings/oleObject1.bin": OLE_WITH_PE,
            }
        ),
    ),
    "docm-with-macros": named(
        "report.docm",
        zipped(
            {
                "[Content_Types].xml": b"<Types/>",
                "word/document.xml": b"<w:document/>",
                "word/vbaProject.bin": VBA_PROJECT_BIN,
            }
        ),
    ),
    "odt-with-macros": named(
        "letter.odt", zipped({**ODT, "Basic/Standard/Module1.xml": b"<script:module/>"})
    ),
    # macros and programs found by what Office reads, not by names (review of issue 15)
    "docm-with-renamed-vba-project": named(
        "report.docx", docm(WORD_MACRO_MAIN, VBA_PROJECT, "word/x.bin", VBA_PROJECT_BIN)
    ),
    "doc-with-macros": named("report.doc", OLE_WITH_MACROS),
    "docx-with-program-split-across-sectors": named(
        "contract.docx",
        zipped(
            {
                "[Content_Types].xml": content_types(
                    {**OOXML_DEFAULTS, "bin": OLE_OBJECT}, {"/word/document.xml": WORD_MAIN}
                ),
                "word/document.xml": b"<w:document/>",
                "word/embeddings/oleObject1.bin": split_program_ole(),
            }
        ),
    ),
    "docx-with-embedded-script": named(
        "contract.docx",
        zipped(
            {
                "[Content_Types].xml": content_types(
                    {**OOXML_DEFAULTS, "bin": OLE_OBJECT}, {"/word/document.xml": WORD_MAIN}
                ),
                "word/document.xml": b"<w:document/>",
                "word/embeddings/oleObject1.bin": OLE_WITH_SCRIPT,
            }
        ),
    ),
    "bin-outside-a-document": named(
        "files.zip", zipped({"readme.txt": b"hi", "word/vbaProject.bin": OLE})
    ),
    # members that cannot be read, so what another program unpacks is unknown (review of
    # issue 15): judged by name only, these passed
    "zip-member-local-name-differs": named(
        "files.zip",
        renamed_in_local_header(zipped({"readme.txt": b"MsgBox 1"}), "readme.txt", "readme.vbs"),
    ),
    "zip-member-deflate64-executable": named("files.zip", deflate64_zip("report.pdf", PE)),
    "zip-executable-behind-local-name": named(
        "docs.zip",
        renamed_in_local_header(zipped({"a.txt": b"a", "setup.pdf": PE}), "setup.pdf", "setup.exe"),
    ),
    # archives that cost too much to check (finding 3): 3 x 48 MB inflated from ~1 KB
    "zip-bomb-nested": named("backup.zip", zip_bomb(1, 3, 48)),
    # an OLE file whose FAT is made huge by naming one sector as every FAT sector: 48 MB of
    # zeros in ~50 KB; read naively it took 2 s of CPU and 300 MB (review of issue 15)
    "ole-fat-sector-repeated": named("report.zip", zipped({"report.doc": ole_fat_bomb(48)})),
    # encrypted archives (finding 9)
    "zip-encrypted-harmless-names": named(
        "files.zip", encrypted_zip({"report.pdf": b"%PDF-1.4", "notes.txt": b"hello"})
    ),
    "zip-encrypted-forbidden-name": named(
        "files.zip", encrypted_zip({"report.pdf": b"%PDF-1.4", "setup.exe": PE})
    ),
    "zip-encrypted-names": named("files.zip", names_encrypted_zip()),
    "rar5-encrypted-names": named("files.rar", RAR5_ENCRYPTED_NAMES),
    "rar4-encrypted-names": named("files.rar", RAR4_ENCRYPTED_NAMES),
    "7z-encrypted-names": named("files.7z", seven_zip_encrypted_names()),
    # Windows executables under harmless names
    "executable-named-pdf": named("report.pdf", PE),
    "executable-without-name": mixed(TEXT, attachment(None, PE)),
    "executable-labelled-text": mixed(
        TEXT, attachment('attachment; filename="notes.txt"', PE, content_type="text/plain")
    ),
    "executable-quoted-printable": mixed(
        TEXT,
        (
            "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
            'filename="data.dat"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
            + quopri.encodestring(PE).decode("ascii").replace("\n", "\r\n")
        ),
    ),
    "executable-as-whole-message": (
        HEAD + "Content-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + b64(PE)
    ),
    # allowed
    "pdf": named("invoice.pdf"),
    "exe-then-txt": named("notes.exe.txt"),
    "no-extension": named("exe"),
    "office-document-with-embedded-bin": named("contract.docx", DOCX),
    "odt-document": named("letter.odt", zipped(ODT)),
    "xlsx-with-printer-settings-and-activex": named("figures.xlsx", zipped(XLSX)),
    "ole-document-without-executable": named("old.doc", OLE),
    "zip-of-documents": named("docs.zip", zipped({"a.txt": b"a", "b/c.pdf": b"%PDF"})),
    "text-starting-with-mz": HEAD + "Content-Type: text/plain\r\n\r\nMZ is my name.\r\n",
    "malformed-no-boundary": (
        HEAD + "Content-Type: multipart/mixed\r\n\r\n--x\r\n"
        "Content-Type: text/plain\r\n\r\nhello\r\n--x--\r\n"
    ),
    "malformed-no-end-boundary": (
        HEAD + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
        'Content-Type: application/pdf; name="a.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0x!!!"
    ),
    "malformed-headers-and-junk": (
        HEAD + "Content-Type: multipart/mixed; boundary=\r\n"
        "Content-Disposition: attachment; filename*0*=bogus''%ZZ\r\n"
        "Broken header line without colon\r\n\r\n\x00\xff junk\r\n"
    ),
    "malformed-bad-rfc2231-charset": mixed(
        TEXT, attachment("attachment; filename*=no-such-charset''report%2Epdf")
    ),
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
