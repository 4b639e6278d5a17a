"""submit() against a scripted Postfix on a UNIX socket: what it answers when the dialogue
breaks off before or after the message's final ".", and its one deadline."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.tracker.fake_postfix import FakePostfix
from txmail.submit import Accepted, Envelope, Refused, Unknown, submit

ENVELOPE = Envelope(sender="app@acme.test", recipients=["user@example.net"])
MESSAGE = b"From: app@acme.test\r\nSubject: hi\r\n\r\n.a line with a dot\r\nbye\r\n"


@pytest.fixture
def socket_path() -> Iterator[str]:
    # A short directory: a UNIX socket's path has at most 107 bytes.
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        yield str(Path(directory) / "txmail-api")


def test_a_queued_message_is_accepted_and_dot_stuffed(socket_path: str) -> None:
    with FakePostfix(socket_path) as fake:
        outcome = submit(socket_path, "acme", ENVELOPE, MESSAGE, timeout=5)
    assert outcome == Accepted("4XyZ12AbCd")
    assert b"XCLIENT LOGIN=acme" in fake.commands
    assert fake.messages == [MESSAGE.replace(b"\r\n.a", b"\r\n..a")]


@pytest.mark.parametrize("after_dot", ["silent", "close", "no_id"])
def test_no_answer_after_the_final_dot_is_an_unknown_outcome(
    socket_path: str, after_dot: str
) -> None:
    with FakePostfix(socket_path, after_dot=after_dot) as fake:
        outcome = submit(socket_path, "acme", ENVELOPE, MESSAGE, timeout=0.5)
    assert isinstance(outcome, Unknown), outcome
    assert len(fake.messages) == 1  # the whole message arrived: Postfix may have queued it


def test_a_refusal_after_the_final_dot_is_postfixs_answer(socket_path: str) -> None:
    with FakePostfix(socket_path, after_dot="refused"):
        outcome = submit(socket_path, "acme", ENVELOPE, MESSAGE, timeout=5)
    assert outcome == Refused(554, "5.7.1", "Message refused by policy; remove the attachment")


def test_a_break_before_the_message_is_sent_is_a_temporary_refusal(socket_path: str) -> None:
    with FakePostfix(socket_path, data_reply="close") as fake:
        outcome = submit(socket_path, "acme", ENVELOPE, MESSAGE, timeout=5)
    assert isinstance(outcome, Refused) and (outcome.code, outcome.status) == (451, "4.3.0")
    assert fake.messages == []


def test_no_postfix_is_a_temporary_refusal(socket_path: str) -> None:
    outcome = submit(socket_path, "acme", ENVELOPE, MESSAGE, timeout=5)
    assert isinstance(outcome, Refused) and (outcome.code, outcome.status) == (451, "4.3.0")


def test_the_whole_dialogue_has_one_deadline_however_many_recipients(socket_path: str) -> None:
    # Each RCPT is answered well within `timeout`, but 20 of them take longer than `total`
    # (the server's own pauses, 0.1 s each): the dialogue stops before DATA, nothing is sent.
    envelope = Envelope(sender="app@acme.test", recipients=[f"u{n}@example.net" for n in range(20)])
    with FakePostfix(socket_path, rcpt_delay=0.1) as fake:
        outcome = submit(socket_path, "acme", envelope, MESSAGE, timeout=5, total=0.5)
    assert isinstance(outcome, Refused) and (outcome.code, outcome.status) == (451, "4.3.0")
    assert fake.messages == []
    assert sum(c.startswith(b"RCPT") for c in fake.commands) < 20
