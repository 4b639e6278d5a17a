"""Attack: guessing one account's password from many addresses at once.

Dovecot's own penalty slows one client address; a guesser with many addresses is not slowed
at all. txmail authpolicy counts the failed logins of each login name across every address:
past authpolicy.free_failures the attempts of unknown clients are delayed, from
authpolicy.reject_failures on they are refused unchecked with a sentence saying so. The real
client, whose address has logged in with its password before, still gets 235 at once, while
the right password from an address that never logged in is refused like any guess (so the
refusal tells a guesser nothing). Assertions are on Dovecot's answers and on the counter in
Redis, never on timing.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from txmail.store import Keys
from txmail_testing.harness import Stack

pytestmark = pytest.mark.e2e

FREE, REJECT = 2, 6  # lower than the defaults (5, 30), so that the test needs few guesses
REFUSAL = b"Too many failed logins for this account"


@pytest.fixture
def node(make_stack: Any) -> Stack:
    made: Stack = make_stack(name="guessing")
    text = made.config.read_text()
    for key, value in (("free_failures", FREE), ("reject_failures", REJECT)):
        default = {"free_failures": 5, "reject_failures": 30}[key]
        assert f"\n{key} = {default}\n" in text
        text = text.replace(f"\n{key} = {default}\n", f"\n{key} = {value}\n")
    made.config.write_text(text)
    return made.start()


def login_from(node: Stack, address: str, login: str, password: str) -> tuple[int, bytes]:
    """AUTH on 587 after STARTTLS from the loopback address `address` (all of 127/8 is this
    host, so each one is another client address for Postfix and Dovecot)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.closing(
        smtplib.SMTP("127.0.0.1", node.submission, timeout=60, source_address=(address, 0))
    ) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=context)
        smtp.ehlo("client.test")
        smtp.user, smtp.password = login, password
        try:  # one AUTH PLAIN (smtplib's login() would try LOGIN after a failed PLAIN)
            code, text = smtp.auth("PLAIN", smtp.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            code, text = exc.smtp_code, exc.smtp_error
        with contextlib.suppress(smtplib.SMTPException):
            smtp.quit()
    return code, text


def failures(node: Stack, login: str) -> float:
    score = node.redis().hget(Keys().auth_failures(login), "score")
    return float(score) if score is not None else 0.0


def test_guessing_from_many_addresses_is_refused_but_the_real_client_logs_in(node: Stack) -> None:
    password = node.add_account("guessed", "guessed.example")
    # The real client has sent mail from its address before the attack.
    assert login_from(node, "127.0.0.1", "guessed", password)[0] == 235

    guessers = [f"127.0.{n // 200 + 10}.{n % 200 + 10}" for n in range(3 * REJECT)]
    with ThreadPoolExecutor(len(guessers)) as pool:
        answers = list(
            pool.map(
                lambda a: login_from(node, a[1], "guessed", f"guess-{a[0]}"), enumerate(guessers)
            )
        )
    assert all(code == 535 for code, _ in answers), answers
    refused = [text for _, text in answers if REFUSAL in text]
    # Every guess past the limit is refused unchecked, whatever the order they came in.
    assert len(refused) == len(guessers) - REJECT, answers
    assert refused[0].startswith(b"5.7.8 Error: authentication failed: " + REFUSAL)
    assert b"try again in" in refused[0]
    assert failures(node, "guessed") >= REJECT - 0.5  # a little forgiven while they ran

    # Later guesses, from yet other addresses, are refused at once.
    assert REFUSAL in login_from(node, "127.0.1.250", "guessed", "guess-late")[1]
    # The real client's own address and password still log in, right after the attack.
    assert login_from(node, "127.0.0.1", "guessed", password)[0] == 235
    # The right password from an address that never logged in is refused like a guess:
    # otherwise the refusals would tell a guesser which of its guesses is right.
    assert REFUSAL in login_from(node, "127.0.1.251", "guessed", password)[1]
    # A wrong password from the real client's own address is a guess too.
    assert REFUSAL in login_from(node, "127.0.0.1", "guessed", "guess-nearby")[1]

    log = node.log("authpolicy")
    assert "guessed: reject:" in log and "guessed: delay" in log
    assert password not in log and "guess-" not in log
