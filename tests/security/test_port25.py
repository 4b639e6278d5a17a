"""Attack: use port 25 without logging in for more than returning mail.

Port 25 takes bounces and feedback reports for the return-path domains from anybody. It must
not tell a stranger which addresses exist (VRFY), start queue runs on request (ETRN), or take
a thousand bounce addresses in one transaction (each one a run of the bounce pipe); and one
client address may name only so many recipients a minute (postfix.smtp_recipient_rate), except
from loopback, which the other tests use to send their many bounces.

The rendered configuration is compared against the expected lines, and Postfix itself reads it.
"""

from __future__ import annotations

import contextlib
import smtplib
from collections.abc import Iterator

import pytest

from txmail import config
from txmail.stack import install, render
from txmail_testing.harness import Sink, Stack

pytestmark = pytest.mark.e2e

RATE = 5  # postfix.smtp_recipient_rate of the rate-limited node
OUTSIDE = "127.0.0.2"  # a loopback address outside mynetworks (127.0.0.1/32)


def bounce_address(stack: Stack, n: int) -> str:
    return f"bounces+probe{n}@{config.load(stack.config).bounce_domain}"


@contextlib.contextmanager
def port25(stack: Stack, source: str = "127.0.0.1") -> Iterator[smtplib.SMTP]:
    with smtplib.SMTP(
        "127.0.0.1",
        stack.smtp,
        timeout=30,
        local_hostname="mx.remote.test",
        source_address=(source, 0),
    ) as smtp:
        smtp.ehlo()
        yield smtp


def test_vrfy_and_etrn_are_refused_and_not_offered(stack: Stack) -> None:
    with port25(stack) as smtp:
        features = smtp.esmtp_features
        code, text = smtp.docmd("VRFY", "postmaster")
        assert (code, text[:6]) == (502, b"5.5.1 "), text
        code, text = smtp.docmd("ETRN", config.load(stack.config).bounce_domain)
        assert (code, text[:6]) == (502, b"5.5.1 "), text
        assert b"ETRN is not offered here" in text
    assert "vrfy" not in features and "etrn" not in features


def test_logged_in_etrn_is_refused_too(stack: Stack) -> None:
    password = stack.add_account("etrnuser", "etrn.example")
    with contextlib.closing(stack.client("submission", ("etrnuser", password))) as smtp:
        code, _ = smtp.docmd("ETRN", "example.net")
        assert code == 502
        code, _ = smtp.docmd("VRFY", "etrnuser")
        assert code == 502


def test_one_transaction_takes_at_most_100_recipients(stack: Stack) -> None:
    with port25(stack) as smtp:
        smtp.mail("<>")
        replies = [smtp.rcpt(bounce_address(stack, n))[0] for n in range(101)]
        smtp.rset()
    assert replies[:100] == [250] * 100
    assert replies[100] == 452


@pytest.fixture(scope="module")
def limited(sink: Sink) -> Iterator[Stack]:
    node = Stack(relay_port=sink.port, name="port25").configure("postfix", smtp_recipient_rate=RATE)
    try:
        yield node.start()
    finally:
        node.close()


def test_one_client_names_only_so_many_recipients_a_minute(limited: Stack) -> None:
    with port25(limited, OUTSIDE) as smtp:
        smtp.mail("<>")
        replies = [smtp.rcpt(bounce_address(limited, n)) for n in range(RATE + 1)]
    assert [code for code, _ in replies[:RATE]] == [250] * RATE, replies
    code, text = replies[RATE]
    assert (code, text[:6]) == (450, b"4.7.1 "), text
    # loopback (mynetworks) is exempt: the bounces of tests and of local tools keep flowing
    with port25(limited) as smtp:
        smtp.mail("<>")
        assert all(smtp.rcpt(bounce_address(limited, n))[0] == 250 for n in range(2 * RATE))


def test_rendered_configuration(limited: Stack) -> None:
    etc = limited.state / "postfix/etc"
    main_cf = (etc / "main.cf").read_text().splitlines()
    for line in (
        "disable_vrfy_command = yes",
        "smtpd_etrn_restrictions = check_etrn_access static:{502 5.5.1 ETRN is not "
        "offered here: this relay delivers its queue on its own schedule}",
        "smtpd_discard_ehlo_keywords = etrn",
    ):
        assert line in main_cf
    master_cf = (etc / "master.cf").read_text()
    settings = config.load(limited.config)
    assert (
        f"{settings.listen.address}:{settings.listen.smtp} inet n - n - - smtpd\n"
        f"  -o syslog_name={settings.postfix.syslog_name}/smtp\n"
        "  -o smtpd_recipient_limit=100\n"
        f"  -o smtpd_client_recipient_rate_limit={RATE}\n"
    ) in master_cf
    render.check_postfix(etc)  # Postfix reads it without a warning


def test_postfix_install_refuses_vrfy_and_etrn_on_the_operators_port_25(limited: Stack) -> None:
    """`txmail postfix install` leaves the operator's port 25 service alone, but that port now
    takes txmail's bounces: VRFY and ETRN are turned off globally (ETRN unless the operator
    restricts it already), and the plan notes the recipient limits to add there."""
    etc = limited.state / "operator-etc"
    etc.mkdir()
    (etc / "main.cf").write_text("compatibility_level = 3.6\n")
    (etc / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    plan = install.plan(config.load(limited.config), limited.config, etc)
    assert plan.main["disable_vrfy_command"] == "yes"
    assert plan.main["smtpd_etrn_restrictions"].startswith("check_etrn_access static:{502")
    assert any(f"smtpd_client_recipient_rate_limit={RATE}" in note for note in plan.notes)
    (etc / "main.cf").write_text(
        "compatibility_level = 3.6\nsmtpd_etrn_restrictions = permit_mynetworks, reject\n"
    )
    plan = install.plan(config.load(limited.config), limited.config, etc)
    assert "smtpd_etrn_restrictions" not in plan.main  # the operator's own is kept
    assert any("smtpd_etrn_restrictions is the operator's" in note for note in plan.notes)
