"""The bounce pipe's hand-off to `txmail bounces serve`, over a UNIX socket.

Postfix starts one pipe process per returned mail, as the unprivileged settings.user. That
process parses nothing and holds no key: it sends the mail to the long-running recorder
(txmail/bounce_pipe/server.py, root), which has a parser worker without any secret read it,
checks the bounce token, records the outcome, waits for the answer, and exits with it. Postfix
sees the same exit status either way (0 done, 75 try again later). When nothing listens on
the socket, the pipe exits 75: Postfix keeps the mail and retries, and nothing is recorded
by a process that parses mail.

Request:  b"TXMAIL-BOUNCE/1 SENDER_BYTES RECIPIENT_BYTES MAIL_BYTES\\n", then the sender, the
          recipient and the mail, back to back.
Answer:   one line: b"0 done\\n", or b"75 WHY\\n" when the mail must wait.

This module imports the standard library only: every pipe process loads it.
"""

from __future__ import annotations

import socket
import sys
from io import BufferedIOBase
from typing import IO, BinaryIO

MAGIC = b"TXMAIL-BOUNCE/1"
MAX_LINE = 1024  # the request's first line, the answer line
MAX_ADDRESS = 2048  # bytes of the sender or recipient address
EX_OK = 0
EX_TEMPFAIL = 75
ANSWER_TIMEOUT = 600.0  # seconds; pipe(8)'s own command_time_limit is 1000 s


class Unavailable(Exception):
    """Nothing listens on the socket: the mail waits in Postfix's queue (75)."""


class BadRequest(Exception):
    """The bytes on the socket are not a hand-off request."""


class NoRequest(BadRequest):
    """The peer closed without sending a byte (a check that the socket answers)."""


def read_input(stream: IO[bytes], limit: int) -> bytes:
    """Up to `limit` bytes of the mail; the rest is read and dropped so Postfix sees it all
    taken (a huge bounce is an attachment nobody needs to classify it)."""
    data = stream.read(limit)
    while stream.read(1 << 20):
        pass
    return data


def pipe(
    path: str,
    sender: str,
    recipient: str,
    stdin: IO[bytes],
    limit: int,
    stderr: IO[str] | None = None,
) -> int:
    """The pipe command's whole job: read the mail, hand it to the server at `path`, and
    return its exit status (0 or 75); why it must wait goes to `stderr` (Postfix's maillog)."""
    raw = read_input(stdin, limit)
    try:
        code, why = hand_off(path, sender, recipient, raw)
    except Unavailable as exc:
        code, why = EX_TEMPFAIL, f"`txmail bounces serve` does not answer on {exc}"
    if code != EX_OK:
        print(
            f"txmail bounce-pipe: NOQUEUE: try again later (exit {code}): {why}",
            file=stderr or sys.stderr,
        )
    return code


def hand_off(
    path: str, sender: str, recipient: str, raw: bytes, timeout: float = ANSWER_TIMEOUT
) -> tuple[int, str]:
    """Hand one returned mail to the server at `path`: its exit status and why.

    Raises Unavailable when nobody takes the connection. Once the server has it, any trouble
    is (75, why): the server may have recorded part of it, and Postfix's retry is safe because
    events are recorded once per (message, recipient, kind)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:  # no socket file, nobody listening, not allowed to connect
        sock.close()
        raise Unavailable(f"{path}: {exc.strerror or exc}") from None
    with sock:
        try:
            sock.sendall(request(sender, recipient, raw))
            answer = sock.makefile("rb").readline(MAX_LINE)
        except OSError as exc:
            return EX_TEMPFAIL, f"the bounce parser did not answer: {exc}"
    return parse_answer(answer)


def request(sender: str, recipient: str, raw: bytes) -> bytes:
    parts = [part.encode("utf-8", "surrogateescape") for part in (sender, recipient)]
    head = b"%s %d %d %d\n" % (MAGIC, len(parts[0]), len(parts[1]), len(raw))
    return head + parts[0] + parts[1] + raw


def read_request(stream: BinaryIO | BufferedIOBase, limit: int) -> tuple[str, str, bytes]:
    """(sender, recipient, mail) from a request; BadRequest for anything else."""
    line = stream.readline(MAX_LINE)
    if not line:
        raise NoRequest("the peer sent nothing")
    words = line.split()
    if len(words) != 4 or words[0] != MAGIC or not all(w.isdigit() for w in words[1:]):
        raise BadRequest(f"not a hand-off request: {line[:60]!r}")
    sizes = [int(w) for w in words[1:]]
    if sizes[0] > MAX_ADDRESS or sizes[1] > MAX_ADDRESS or sizes[2] > limit:
        raise BadRequest(f"request over its limits: {sizes}")
    parts = []
    for size in sizes:
        data = stream.read(size)
        if len(data) != size:
            raise BadRequest(f"request ended after {len(data)} of {size} bytes")
        parts.append(data)
    sender, recipient = (part.decode("utf-8", "surrogateescape") for part in parts[:2])
    return sender, recipient, parts[2]


def answer(code: int, why: str) -> bytes:
    return f"{code} {' '.join(why.split())}"[: MAX_LINE - 1].encode("utf-8", "replace") + b"\n"


def parse_answer(line: bytes) -> tuple[int, str]:
    code, _, why = line.decode("utf-8", "replace").strip().partition(" ")
    if code == str(EX_OK):
        return EX_OK, why
    if code == str(EX_TEMPFAIL):
        return EX_TEMPFAIL, why
    return EX_TEMPFAIL, f"the bounce parser gave no answer ({line[:60]!r})"
