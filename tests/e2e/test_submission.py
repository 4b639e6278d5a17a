"""Authenticated submission end to end: real Postfix, Dovecot and Redis, real SMTP clients."""

from __future__ import annotations

import shutil
import smtplib
import subprocess

import pytest

from tests.harness import Sink, Stack, queue_id_of, simple_message

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def acme(stack: Stack) -> tuple[str, str]:
    return "acme", stack.add_account("acme", "acme.example")


def test_smtplib_587_starttls_auth_plain(stack: Stack, sink: Sink, acme: tuple[str, str]) -> None:
    with stack.client("submission") as smtp:
        smtp.login(*acme)  # smtplib prefers PLAIN
        smtp.mail("app@acme.example")
        smtp.rcpt("plain587@example.net")
        code, reply = smtp.data(simple_message("app@acme.example", "plain587@example.net"))
    assert code == 250
    queue_id = queue_id_of(reply)
    [message] = sink.wait(1) and [m for m in sink.messages if "plain587@example.net" in m.recipients] or [None]
    assert message is not None
    record = stack.redis().hgetall(f"txmail:{{acme}}:message:{queue_id}")
    assert record["account"] == "acme"
    assert record["queue_id"] == queue_id
    assert "plain587@example.net" in record["recipients"]
