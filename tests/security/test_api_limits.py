"""Attack: make the HTTP API read (and parse) a body far larger than any message it may send.

The API once read a whole request body, 60 MB, before it refused it. A request body is now
never read past what a send of the account's largest message can need (tracker/api.py,
send_body_limit): a Content-Length above that is answered 413 at once, and a chunked body is
cut off with a 413 as soon as it passes it. The tests send the headers and a few bytes only,
so a server that waited for the rest would never answer: each asserts on the reply, with a
socket timeout far longer than an answer takes, never on timing.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator

import pytest
import requests

from txmail.tracker.api import send_body_limit
from txmail_testing.harness import Stack

pytestmark = pytest.mark.e2e

SIXTY_MB = 60 * 1000 * 1000
SMALL = 1000  # max_message_size of the account with a small limit


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    """API keys of an account with the default limit (10 MiB) and one with 1,000 bytes."""
    found = {}
    for name, settings in (
        ("bodydefault", []),
        ("bodysmall", [f"max_message_size={SMALL}"]),
        ("bodyother", []),
    ):
        stack.add_account(name, f"{name}.test", settings=settings)
        found[name] = stack.txmail("accounts", "apikey", name).stdout.strip().splitlines()[-1]
    return found


@contextlib.contextmanager
def request(stack: Stack, head: str) -> Iterator[socket.socket]:
    connection = socket.create_connection(("127.0.0.1", 8080 + stack.offset), timeout=30)
    try:
        connection.sendall(head.encode())
        yield connection
    finally:
        connection.close()


def answer(connection: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers and JSON body of the reply; a TimeoutError if none comes in 30 s."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = connection.recv(65536)
        if not chunk:
            break
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    while len(body) < int(headers.get("content-length", 0)):
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body or b"{}")


def send_head(stack: Stack, key: str, extra: str) -> str:
    return (
        f"POST /v1/send HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    )


def test_a_60_mb_content_length_is_refused_before_the_body_is_read(
    stack: Stack, keys: dict[str, str]
) -> None:
    head = send_head(stack, keys["bodydefault"], f"Content-Length: {SIXTY_MB}\r\n")
    with request(stack, head + '{"mime": "Subject: x') as connection:
        status, headers, body = answer(connection)
    assert status == 413, body
    error = body["error"]
    assert (error["smtp_code"], error["status"]) == (552, "5.3.4")  # type: ignore[index]
    assert "make the message smaller" in error["message"]  # type: ignore[index]
    assert str(send_body_limit(10 * 1024 * 1024)) in error["message"]  # type: ignore[index]
    assert headers.get("connection") == "close"


def test_the_limit_follows_the_accounts_max_message_size(
    stack: Stack, keys: dict[str, str]
) -> None:
    limit = send_body_limit(SMALL)
    head = send_head(stack, keys["bodysmall"], f"Content-Length: {limit + 1}\r\n")
    with request(stack, head + "{") as connection:
        status, _, body = answer(connection)
    assert status == 413, body
    assert f"largest message ({SMALL} bytes)" in body["error"]["message"]  # type: ignore[index]
    # Within the limit the body is read, and the message itself is held to the account's size.
    mime = "Subject: big\r\n\r\n" + "x" * SMALL
    sent = requests.post(
        f"http://127.0.0.1:{8080 + stack.offset}/v1/send",
        timeout=30,
        headers={"Authorization": f"Bearer {keys['bodysmall']}"},
        json={"envelope": "app@bodysmall.test", "recipient": "r@example.net", "mime": mime},
    )
    assert sent.status_code == 413
    assert f"at most {SMALL} bytes" in sent.json()["error"]["message"]


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(
    stack: Stack, keys: dict[str, str]
) -> None:
    limit = send_body_limit(SMALL)
    head = send_head(stack, keys["bodysmall"], "Transfer-Encoding: chunked\r\n")
    piece = b"x" * 65536
    with request(stack, head) as connection:
        sent = 0
        while sent <= limit:  # past the limit, and never the last (empty) chunk
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        status, headers, body = answer(connection)
    assert status == 413, body
    assert f"more than {limit} bytes" in body["error"]["message"]  # type: ignore[index]
    assert headers.get("connection") == "close"


def test_before_the_key_is_checked_the_ceiling_is_postfixs(stack: Stack) -> None:
    """No key (or a wrong one): a body above any send request's is refused unread, with 413;
    below it the key is checked first (401) and the body is never read either."""
    with request(
        stack, send_head(stack, "txm_nope_nope", "Content-Length: 100000000000\r\n") + "{"
    ) as connection:
        status, headers, body = answer(connection)
    assert status == 413, body
    assert "this relay takes requests of at most" in body["error"]["message"]  # type: ignore[index]
    assert headers.get("connection") == "close"
    with request(
        stack, send_head(stack, "txm_nope_nope", f"Content-Length: {SIXTY_MB}\r\n") + "{"
    ) as connection:
        status, _, body = answer(connection)
    assert status == 401, body


def test_large_bodies_are_read_a_few_at_a_time_per_account(
    stack: Stack, keys: dict[str, str]
) -> None:
    """One account's stalled large uploads hold its own slots (tracker.api_large_sends, 2),
    never another account's: a third large send of the same account waits unread until one
    of them goes, while another account's large sends are answered at once. Each of the other
    account's answers also shows that the server has come round to everything sent before it
    (the stalled uploads reaching their slots, the third send reaching the wait)."""
    two_mb = 2 * 1024 * 1024
    body = b"[" + b" " * (two_mb - 2) + b"]"  # read whole, then refused: not a JSON object

    def other_account_answered() -> None:
        with request(
            stack, send_head(stack, keys["bodyother"], f"Content-Length: {two_mb}\r\n")
        ) as other:
            other.sendall(body)
            status, _, answered = answer(other)
        assert status == 400, answered  # the other account was not held up

    with contextlib.ExitStack() as held:
        stalled = [
            held.enter_context(
                request(
                    stack,
                    send_head(stack, keys["bodydefault"], f"Content-Length: {two_mb}\r\n") + "[",
                )
            )
            for _ in range(2)
        ]
        other_account_answered()
        waiting = held.enter_context(
            request(stack, send_head(stack, keys["bodydefault"], f"Content-Length: {two_mb}\r\n"))
        )
        waiting.sendall(body)
        other_account_answered()
        waiting.setblocking(False)
        with pytest.raises(BlockingIOError):
            waiting.recv(1)  # still waiting for a slot of its own account
        waiting.setblocking(True)
        stalled[0].close()  # its body will never come: the slot is given back
        status, _, answered = answer(waiting)
    assert status == 400, answered
