"""The socketmap protocol (Postfix socketmap_table(5), Sendmail's socket map): netstrings.

    request   LEN ":" NAME " " KEY ","
    reply     LEN ":" ("OK " VALUE | "NOTFOUND " | "TEMP " REASON | "PERM " REASON) ","

Postfix keeps a connection open and sends one request at a time. Requests longer than
MAX_REQUEST bytes are refused (untrusted length field).

Fails: ProtocolError for anything that is not a netstring; the server then closes the
connection and Postfix reconnects.
"""

from __future__ import annotations

from io import BufferedIOBase
from typing import BinaryIO

MAX_REQUEST = 10_000


class ProtocolError(Exception):
    """The peer did not speak netstrings."""


def read_netstring(stream: BinaryIO | BufferedIOBase, limit: int = MAX_REQUEST) -> bytes | None:
    """One netstring's payload, or None at a clean end of stream."""
    digits = b""
    while True:
        char = stream.read(1)
        if not char:
            if digits:
                raise ProtocolError("connection closed inside a length")
            return None
        if char == b":":
            break
        if not char.isdigit() or len(digits) >= len(str(limit)):
            raise ProtocolError("bad netstring length")
        digits += char
    if not digits:
        raise ProtocolError("empty netstring length")
    length = int(digits)
    if length > limit:
        raise ProtocolError(f"request of {length} bytes is over the limit of {limit}")
    payload = stream.read(length)
    if len(payload) != length or stream.read(1) != b",":
        raise ProtocolError("truncated netstring")
    return payload


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def parse_request(payload: bytes) -> tuple[str, str]:
    """(map name, key) from a request payload."""
    text = payload.decode("utf-8", "replace")
    name, sep, key = text.partition(" ")
    if not sep or not name:
        raise ProtocolError("request is not 'NAME KEY'")
    return name, key
