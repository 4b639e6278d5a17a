"""Attack (on the customer): a message of exactly the size an account may send is refused.

An account whose max_message_size is the node's whole postfix.message_size_limit sent a
message of exactly that many bytes and got "552 5.3.4 Error: message file too big": Postfix
counts its whole queue file (its Received header, txmail's headers and signature, the
envelope) against message_size_limit, so even 19,000 bytes failed a limit of 20,000. And the
milter counted two bytes fewer than sent (the empty line after the header), so it let 20,002
bytes through a limit of 20,000. The size that counts is what the client sent after DATA,
byte for byte (RFC 1870): exactly the limit is accepted, one byte more is refused by the
milter with the account's sentence.
"""

from __future__ import annotations

import contextlib
import smtplib
from collections.abc import Iterator

import pytest

from txmail_testing.harness import Sink, Stack, simple_message

pytestmark = pytest.mark.e2e

LIMIT = 20_000


@pytest.fixture(scope="module")
def node(sink: Sink) -> Iterator[Stack]:
    made = Stack(relay_port=sink.port, name="size").configure("postfix", message_size_limit=LIMIT)
    try:
        yield made.start()
    finally:
        made.close()


@pytest.fixture(scope="module")
def password(node: Stack) -> str:
    return node.add_account("sizer", "size.example", settings=[f"max_message_size={LIMIT}"])


def message(size: int) -> bytes:
    """A message of exactly `size` bytes as sent after DATA (CRLF line ends, ending in CRLF),
    with a folded header."""
    head = simple_message(
        "app@size.example",
        "r@example.net",
        body="",
        extra_headers={"X-Folded": "first part\r\n  second part\r\n\tthird part"},
    )
    line = b"x" * 76 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
    rest = size - len(head) - len(body)
    if rest:
        body += b"y" * (rest - 2) + b"\r\n" if rest >= 2 else b""
    data = head + body
    if len(data) < size:  # rest was 1: lengthen the last full line by one byte
        data = data[:-2] + b"z\r\n"
    assert len(data) == size
    return data


def reply(node: Stack, password: str, data: bytes) -> tuple[int, bytes]:
    with contextlib.closing(node.client("submission", ("sizer", password))) as smtp:
        smtp.mail("app@size.example")
        smtp.rcpt("r@example.net")
        try:
            return smtp.data(data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT])
def test_a_message_up_to_the_limit_is_accepted(node: Stack, password: str, size: int) -> None:
    code, text = reply(node, password, message(size))
    assert code == 250, text


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT + 2])
def test_one_byte_more_is_refused_with_the_accounts_sentence(
    node: Stack, password: str, size: int
) -> None:
    code, text = reply(node, password, message(size))
    assert (code, text[:6]) == (552, b"5.3.4 "), text
    assert b"too big for this account" in text
