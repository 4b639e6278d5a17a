"""Spam check end to end: a node configured with spam.rspamd_url asks a real rspamd (Debian's,
in its own temp folder on a loopback port) and refuses mail above the account's threshold."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest

from txmail.errors import TemporaryFailure
from txmail.milter.spam import SpamChecker
from txmail_testing.harness import Sink, Stack, simple_message, wait_for
from txmail_testing.rspamd import SPAM_SUBJECT, Rspamd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rspamd() -> Iterator[Rspamd]:
    server = Rspamd().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def node(sink: Sink, rspamd: Rspamd) -> Iterator[Stack]:
    stack = Stack(relay_port=sink.port, name="spam")
    try:
        text = stack.config.read_text()
        assert text.count('rspamd_url = ""') == 1
        stack.config.write_text(text.replace('rspamd_url = ""', f'rspamd_url = "{rspamd.url}"'))
        stack.start()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def login(node: Stack) -> tuple[str, str]:
    return "spamcheck", node.add_account("spamcheck", "spamcheck.example")


def submit(node: Stack, login: tuple[str, str], recipient: str, subject: str) -> tuple[int, str]:
    with node.client("submission", login) as smtp:
        smtp.mail("app@spamcheck.example")
        smtp.rcpt(recipient)
        try:
            code, reply = smtp.data(
                simple_message("app@spamcheck.example", recipient, subject=subject)
            )
        except smtplib.SMTPDataError as exc:
            code, reply = exc.smtp_code, exc.smtp_error
    return code, reply.decode(errors="replace")


def test_checker_scores_with_real_rspamd(rspamd: Rspamd) -> None:
    checker = SpamChecker(rspamd_url=rspamd.url)
    message = simple_message("a@spamcheck.example", "b@example.net", subject=SPAM_SUBJECT)
    assert checker.score(message, "a@spamcheck.example", ["b@example.net"], "QID") == 20.0
    ham = simple_message("a@spamcheck.example", "b@example.net", subject="invoice")
    assert checker.score(ham, "a@spamcheck.example", ["b@example.net"], "QID") == 0.0


def test_ham_is_delivered(node: Stack, sink: Sink, login: tuple[str, str]) -> None:
    code, _ = submit(node, login, "spam-ham@example.net", "Your invoice")
    assert code == 250
    wait_for(lambda: sink.find("spam-ham@example.net"), 20, what="delivery of the ham")


def test_spam_above_the_threshold_is_refused(
    node: Stack, sink: Sink, login: tuple[str, str]
) -> None:
    code, reply = submit(node, login, "spam-spam@example.net", f"Buy now {SPAM_SUBJECT}")
    assert code == 550, reply
    assert "5.7.1" in reply and "score 20.0" in reply and "15.0" in reply
    assert not sink.find("spam-spam@example.net")


def test_the_threshold_is_per_account(node: Stack, sink: Sink) -> None:
    password = node.add_account("lenient", "lenient.example", settings=["spam_threshold=25"])
    with node.client("submission", ("lenient", password)) as smtp:
        smtp.mail("app@lenient.example")
        smtp.rcpt("spam-lenient@example.net")
        code, _ = smtp.data(
            simple_message("app@lenient.example", "spam-lenient@example.net", subject=SPAM_SUBJECT)
        )
    assert code == 250


def test_rspamd_down_is_a_temporary_failure(
    node: Stack, rspamd: Rspamd, login: tuple[str, str]
) -> None:
    rspamd.stop()  # last test of the module: the node keeps asking a dead rspamd
    with pytest.raises(TemporaryFailure):
        SpamChecker(rspamd_url=rspamd.url, timeout=2).score(b"x", "a@b.example", [], "Q")
    code, reply = submit(node, login, "spam-down@example.net", "Your invoice")
    assert 400 <= code < 500 and "4." in reply, (code, reply)
