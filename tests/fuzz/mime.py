"""Hypothesis strategies for MIME messages: harmless trees, hidden forbidden files, garbling.

A message is built as a tree (multiparts, attached messages, leaves) and rendered to bytes with
CRLF line ends, the way Postfix hands it to the milter. File names are written by one of the
carriers mail programs use (a quoted parameter, RFC 2231 with or without continuations, RFC 2047
encoded words, raw UTF-8, Content-Type `name` only). A harmless tree holds no name, member or
content the attachments rule refuses; `hidden()` puts exactly one forbidden thing into one,
disguised by one or more of the evasions the rule claims to see through.
"""

from __future__ import annotations

import base64
import io
import quopri
import unicodedata
import urllib.parse
import zipfile
from dataclasses import dataclass, field

from hypothesis import event
from hypothesis import strategies as st

from txmail.accounts.settings import FORBIDDEN_EXTENSIONS

SAFE_EXTENSIONS = ("pdf", "txt", "jpg", "png", "csv", "html", "ics", "json", "eml", "xml")
# A minimal Windows PE image: DOS header whose e_lfanew (offset 60) points at "PE\0\0".
PE_HEAD = b"MZ\x90\x00" + b"\x00" * 56 + (64).to_bytes(4, "little") + b"PE\x00\x00\x4c\x01"
LEAF_TYPES = (
    "text/plain",
    "text/html",
    "image/png",
    "application/pdf",
    "application/octet-stream",
    "application/json",
    "audio/mpeg",
    "x-unknown/x-thing",
)
ENCODINGS = ("base64", "quoted-printable", "7bit", "8bit", None, "x-garbage")
CARRIERS = (
    "quoted",
    "content-type-name",
    "rfc2231",
    "rfc2231-continued",
    "rfc2047-b",
    "rfc2047-q",
    "both-headers",
)
CHARSETS = ("utf-8", "UTF-8", "Utf-8")

# Bytes that mean something to a MIME reader, for the mutations of tests/fuzz/mutations.py.
GARBLING = [
    b"\r\n",
    b"\r\n\r\n",
    b"--",
    b"\r\n--=_fuzz_1_boundary\r\n",
    b"--=_fuzz_2_boundary--",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n",
    b"; filename*0*=x-unknown''%FF",
    b"; filename*=''",
    b'; name="=?x?B?AAA?="',
    b"; filename*1=",
    b"=?utf-8?Q?=FF?=",
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"MZ",
    b"\x00",
    b"\xed\xa0\x80",
    b"\xff",
    b"begin 644 ",
    b";;;;",
    b'"',
    b"\\",
    b"\t",
    b" ",
    b"; charset*0=a",
    b"; filename*0=a",
    b"; boundary*0=a",
    b'; charset="\x00"',
]


@dataclass
class Leaf:
    content_type: str
    body: bytes  # the decoded content
    encoding: str | None = None
    name: str | None = None
    carrier: str = "quoted"
    disposition: str = "attachment"
    extra_params: list[str] = field(default_factory=list)


@dataclass
class Multipart:
    subtype: str
    children: list[Leaf | Multipart | Attached]


@dataclass
class Attached:
    """message/rfc822: a whole message as a part."""

    root: Leaf | Multipart | Attached
    name: str | None = None


Node = Leaf | Multipart | Attached


# -- rendering ------------------------------------------------------------------------------


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _percent(value: str) -> str:
    return urllib.parse.quote(value.encode("utf-8"), safe="")


def _encoded_word(value: str, kind: str) -> str:
    raw = value.encode("utf-8")
    if kind == "b":
        return f"=?utf-8?B?{base64.b64encode(raw).decode()}?="
    return "=?utf-8?Q?" + "".join(f"={b:02X}" for b in raw) + "?="


def name_params(param: str, name: str, carrier: str) -> str:
    """`; PARAM=...` giving `name` by `carrier`."""
    if carrier in ("quoted", "content-type-name", "both-headers"):
        return f"; {param}={_quoted(name)}"
    if carrier == "rfc2231":
        return f"; {param}*={CHARSETS[len(name) % 3]}''{_percent(name)}"
    if carrier == "rfc2231-continued":
        encoded = _percent(name)
        # cut between %XX escapes only, in pieces of about 9 characters
        pieces, piece = [], ""
        for chunk in _escapes(encoded):
            piece += chunk
            if len(piece) >= 9:
                pieces.append(piece)
                piece = ""
        pieces.append(piece)
        first = f"; {param}*0*=utf-8''{pieces[0]}"
        return first + "".join(f"; {param}*{i}*={p}" for i, p in enumerate(pieces[1:], 1))
    return f"; {param}={_quoted(_encoded_word(name, carrier[-1]))}"


def _escapes(encoded: str) -> list[str]:
    chunks, i = [], 0
    while i < len(encoded):
        step = 3 if encoded[i] == "%" else 1
        chunks.append(encoded[i : i + step])
        i += step
    return chunks


def _encode_body(body: bytes, encoding: str | None) -> bytes:
    if encoding == "base64":
        return base64.encodebytes(body).replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return quopri.encodestring(body).replace(b"\n", b"\r\n")
    return body


def render(node: Node, boundary_seed: list[int]) -> bytes:
    """Headers and body of one node (no trailing CRLF)."""
    if isinstance(node, Multipart):
        boundary_seed[0] += 1
        boundary = f"=_fuzz_{boundary_seed[0]}_boundary"
        parts = b"".join(
            b"--" + boundary.encode() + b"\r\n" + render(child, boundary_seed) + b"\r\n"
            for child in node.children
        )
        return (
            (
                f'Content-Type: multipart/{node.subtype}; boundary="{boundary}"\r\n\r\n'
                "This is a MIME message.\r\n"
            ).encode()
            + parts
            + f"--{boundary}--".encode()
        )
    if isinstance(node, Attached):
        head = "Content-Type: message/rfc822\r\n"
        if node.name is not None:
            params = name_params("filename", node.name, "quoted")
            head += f"Content-Disposition: attachment{params}\r\n"
        inner = message(node.root, boundary_seed, sender="someone@elsewhere.example")
        return head.encode() + b"\r\n" + inner
    content_type = node.content_type
    disposition = node.disposition
    if node.name is not None:
        if node.carrier in ("content-type-name", "both-headers"):
            content_type += name_params("name", node.name, node.carrier)
        if node.carrier != "content-type-name":
            disposition += name_params("filename", node.name, node.carrier)
    content_type += "".join(f"; {p}" for p in node.extra_params)
    head = f"Content-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n"
    if node.encoding is not None:
        head += f"Content-Transfer-Encoding: {node.encoding}\r\n"
    return head.encode("utf-8") + b"\r\n" + _encode_body(node.body, node.encoding)


def message(
    root: Node, boundary_seed: list[int] | None = None, sender: str = "App <app@acme.example>"
) -> bytes:
    head = (
        f"From: {sender}\r\nTo: user@example.net\r\nSubject: fuzz\r\n"
        "Message-ID: <fuzz@acme.example>\r\nMIME-Version: 1.0\r\n"
    ).encode()
    return head + render(root, boundary_seed or [0]) + b"\r\n"


def zipped(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        seen: set[str] = set()
        for index, (name, content) in enumerate(members):
            if name in seen:  # zipfile warns of duplicates; a prefix keeps the extension
                name = f"{index}-{name}"
            seen.add(name)
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


# -- harmless trees -------------------------------------------------------------------------


def _plain_stem(text: str) -> bool:
    """Nothing in it that could become a dot or a folder separator once folded."""
    folded = unicodedata.normalize("NFKC", text)
    return bool(folded.strip()) and not any(c in folded for c in "./\\;\"'=?%")


stems = st.text(
    st.characters(categories=("L", "N"), include_characters=" -_()"), min_size=1, max_size=16
).filter(_plain_stem)
safe_names = st.builds(lambda stem, ext: f"{stem}.{ext}", stems, st.sampled_from(SAFE_EXTENSIONS))
carriers = st.sampled_from(CARRIERS)


# Heads the rule reads as a program or an archive (and so may refuse when it cannot read it):
# Windows executables, zip, OLE compound files, RAR and 7z.
ARCHIVE_HEADS = (b"MZ", b"PK", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"Rar!", b"7z\xbc\xaf")


def _harmless_content(body: bytes) -> bool:
    return not body.startswith(ARCHIVE_HEADS) and b"begin" not in body and b"=_fuzz_" not in body


harmless_bodies = st.binary(max_size=300).filter(_harmless_content)
extra_params = st.lists(
    st.sampled_from(
        [
            "charset=utf-8",
            "charset=x-unknown",
            "format=flowed",
            "x-junk",
            "size=12345",
            "charset*=x-bad''%FF",
            "title*=utf-8'en'%E2%80%AE",
            "name*0=a; name*2=b",
            'creation-date="Thu, 1 Jan 2026 00:00:00 +0000"',
        ]
    ),
    max_size=3,
)


@st.composite
def harmless_leaves(draw: st.DrawFn) -> Leaf:
    content_type = draw(st.sampled_from(LEAF_TYPES))
    body = draw(harmless_bodies)
    if content_type == "application/octet-stream" and draw(st.booleans()):
        body = zipped(
            [(draw(safe_names), draw(harmless_bodies)) for _ in range(draw(st.integers(1, 3)))]
        )
        content_type = "application/zip"
    return Leaf(
        content_type=content_type,
        body=body,
        encoding=draw(st.sampled_from(ENCODINGS)) if not body.startswith(b"PK") else "base64",
        name=draw(st.none() | safe_names),
        carrier=draw(carriers),
        disposition=draw(st.sampled_from(["attachment", "inline"])),
        extra_params=draw(extra_params),
    )


def trees(leaves: st.SearchStrategy[Leaf]) -> st.SearchStrategy[Node]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.builds(
                Multipart,
                st.sampled_from(["mixed", "alternative", "related", "x-odd"]),
                st.lists(children, min_size=1, max_size=4),
            ),
            st.builds(Attached, children, st.none() | safe_names),
        ),
        max_leaves=12,
    )


harmless_trees = trees(harmless_leaves())


# -- evasions -------------------------------------------------------------------------------


def _mixed_case(text: str, pattern: int) -> str:
    return "".join(c.upper() if pattern >> (i % 16) & 1 else c.lower() for i, c in enumerate(text))


NAME_EVASIONS = (
    "case",
    "trailing",
    "double-extension",
    "folder",
    "right-to-left-override",
    "zero-width",
    "fullwidth",
    "data-stream",
)


@st.composite
def forbidden_names(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """(name, its real extension, the evasions used)."""
    extension = draw(st.sampled_from(FORBIDDEN_EXTENSIONS))
    stem = draw(stems)
    evasions = draw(st.lists(st.sampled_from(NAME_EVASIONS), unique=True, max_size=4))
    ext = extension
    dot = "."
    if "case" in evasions:
        ext = _mixed_case(ext, draw(st.integers(0, 0xFFFF)))
        stem = _mixed_case(stem, draw(st.integers(0, 0xFFFF)))
    if "fullwidth" in evasions:
        ext = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in ext)
        dot = draw(st.sampled_from([".", "\uff0e"]))
    if "double-extension" in evasions:
        stem = f"{stem}.{draw(st.sampled_from(SAFE_EXTENSIONS))}"
    if "right-to-left-override" in evasions:
        stem = f"{stem}\u202e{draw(st.sampled_from(SAFE_EXTENSIONS))[::-1]}"
    if "zero-width" in evasions:
        stem += draw(st.sampled_from(["\u200b", "\u200e", "\ufeff", "\u2060"]))
    name = f"{stem}{dot}{ext}"
    if "zero-width" in evasions:
        name += draw(st.sampled_from(["", "\u200b", "\u200f"]))
    if "data-stream" in evasions:
        name += _mixed_case("::$data", draw(st.integers(0, 0xFFFF)))
    if "trailing" in evasions:
        name += draw(st.text(st.sampled_from(". "), min_size=1, max_size=4))
    if "folder" in evasions:
        name = (
            draw(st.sampled_from(["C:\\Users\\x\\", "../", "dir/sub/", "\\\\host\\share\\"])) + name
        )
    return name, extension, evasions


# "named" twice: it has the most ways to be written
CONTENT_EVASIONS = ("named", "named", "executable", "zip-member", "zip-executable", "uuencoded")


@st.composite
def hidden_leaves(draw: st.DrawFn) -> tuple[Leaf, str]:
    """A leaf that hides one forbidden thing, and a description of what was hidden."""
    how = draw(st.sampled_from(CONTENT_EVASIONS))
    name, extension, evasions = draw(forbidden_names())
    event(f"hidden as: {how}")  # --hypothesis-show-statistics shows how often each was tried
    for evasion in evasions if how in ("named", "uuencoded", "zip-member") else ():
        event(f"name evasion: {evasion}")
    padding = draw(st.binary(max_size=200))
    encoding = draw(st.sampled_from(["base64", "quoted-printable", "8bit", "binary", None]))
    if how == "named":
        leaf = Leaf(
            draw(st.sampled_from(LEAF_TYPES)), draw(harmless_bodies), encoding, name, draw(carriers)
        )
        event(f"name written as: {leaf.carrier}")
        return leaf, f"{name!r} (.{extension}, {evasions}) written as {leaf.carrier}"
    if how == "executable":
        # a text part may begin with the letters MZ: only a PE header makes it a program
        text = draw(st.booleans())
        binary_types = [t for t in LEAF_TYPES if not t.startswith("text/")]
        leaf = Leaf(
            "text/plain" if text else draw(st.sampled_from(binary_types)),
            PE_HEAD + padding if text or draw(st.booleans()) else b"MZ" + padding,
            encoding,
            draw(st.none() | safe_names),
            draw(carriers),
        )
        return leaf, f"an MZ executable as {leaf.content_type} named {leaf.name!r}"
    if how == "uuencoded":
        mode = draw(st.sampled_from(["644", "755", "0644"]))
        body = (
            b"Your file:\r\n\r\nbegin "
            + mode.encode()
            + b" "
            + name.rstrip(" ").encode("utf-8")
            + b"\r\nM86QL\r\n`\r\nend\r\n"
        )
        return Leaf(
            "text/plain", body, draw(st.sampled_from(["7bit", "8bit", None]))
        ), f"uuencoded {name!r} (.{extension}, {evasions})"
    inner: tuple[str, bytes] = (
        (name, padding) if how == "zip-member" else (draw(safe_names), PE_HEAD + padding)
    )
    depth = draw(st.integers(1, 3))
    archive = zipped(
        [
            *((draw(safe_names), draw(harmless_bodies)) for _ in range(draw(st.integers(0, 2)))),
            inner,
        ]
    )
    for _ in range(depth - 1):
        archive = zipped([(draw(stems) + ".zip", archive)])
    leaf = Leaf(
        draw(st.sampled_from(["application/zip", "application/octet-stream", "application/pdf"])),
        archive,
        "base64",
        draw(st.none() | safe_names | stems.map(lambda s: s + ".zip")),
        draw(carriers),
    )
    return leaf, f"{inner[0]!r} ({how}) in a zip {depth} deep named {leaf.name!r}"


@st.composite
def hidden(draw: st.DrawFn) -> tuple[bytes, str]:
    """A message whose tree holds exactly one forbidden thing, and what it is."""
    leaf, what = draw(hidden_leaves())
    tree = draw(harmless_trees)
    path = draw(st.lists(st.integers(0, 10), max_size=6))
    wrappers = draw(st.lists(st.sampled_from(["message", "mixed"]), max_size=3))
    event(f"wrapped in message/rfc822: {'message' in wrappers}")
    node: Node = leaf
    for wrapper in wrappers:
        node = Attached(node) if wrapper == "message" else Multipart("mixed", [node])
    return message(_insert(tree, node, path)), what


def _insert(tree: Node, node: Node, path: list[int]) -> Node:
    """`tree` with `node` added at the container `path` leads to (or beside a leaf)."""
    if isinstance(tree, Leaf):
        return Multipart("mixed", [tree, node])
    if isinstance(tree, Attached):
        return Attached(_insert(tree.root, node, path[1:]), tree.name)
    if path and path[0] < len(tree.children) and not isinstance(tree.children[path[0]], Leaf):
        children = list(tree.children)
        children[path[0]] = _insert(children[path[0]], node, path[1:])
        return Multipart(tree.subtype, children)
    position = path[0] % (len(tree.children) + 1) if path else 0
    return Multipart(tree.subtype, [*tree.children[:position], node, *tree.children[position:]])
