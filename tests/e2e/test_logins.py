"""An account's own email-address logins end to end (Maxemail: "Authentication: use the email
address and password of the relevant customer-level user"): real Postfix, Dovecot, Redis, the
passwd-file authsync writes, AUTH PLAIN after STARTTLS."""

from __future__ import annotations

import json
import smtplib
import time

import pytest

from txmail.store import Keys
from txmail_testing.harness import Sink, Stack, queue_id_of, simple_message, wait_for

pytestmark = pytest.mark.e2e

ACCOUNT = "maxlogins"


def add_login(stack: Stack, login: str) -> str:
    out = stack.txmail("accounts", "login", "add", ACCOUNT, login, "--generate-password").stdout
    password = out.split("password: ", 1)[1].strip()
    stack.wait_passwd(login.lower())
    return password


def send_as(stack: Stack, login: str, password: str, recipient: str) -> str:
    """One message over 587: STARTTLS, AUTH PLAIN with this login; the queue id."""
    with stack.client("submission") as smtp:
        smtp.user, smtp.password = login, password
        code, _ = smtp.auth("PLAIN", smtp.auth_plain)
        assert code == 235
        smtp.mail("app@maxlogins.example")
        smtp.rcpt(recipient)
        code, reply = smtp.data(simple_message("Shop <app@maxlogins.example>", recipient))
        assert code == 250, reply
    return queue_id_of(reply)


def events_of(stack: Stack, queue_id: str) -> list[dict[str, object]]:
    return [
        event
        for _, fields in stack.redis().xrange(Keys().events(ACCOUNT))
        if (event := json.loads(fields["event"]))["message_id"] == queue_id
    ]


def test_each_login_sends_as_its_account_and_a_removed_one_is_refused(
    stack: Stack, sink: Sink
) -> None:
    stack.add_account(ACCOUNT, "maxlogins.example")
    orders = add_login(stack, "Orders@Shop.Example")  # stored and compared lowercase
    billing = add_login(stack, "billing@shop.example")
    day = time.strftime("%Y%m%d", time.gmtime())
    sent = {}
    # the case the client types does not matter, as for Dovecot's own comparison
    for login, password in (("ORDERS@shop.example", orders), ("billing@shop.example", billing)):
        recipient = f"via-{login.split('@')[0].lower()}@example.net"
        sent[login] = send_as(stack, login, password, recipient)
        wait_for(lambda r=recipient: sink.find(r), 20, what=f"delivery to {recipient}")
    for queue_id in sent.values():
        record = stack.redis().hgetall(f"txmail:{{{ACCOUNT}}}:message:{queue_id}")
        assert record["account"] == ACCOUNT
        wait_for(
            lambda q=queue_id: any(e["kind"] == "delivery" for e in events_of(stack, q)),
            20,
            what=f"the delivery event of {queue_id}",
        )
        # Postfix knows the client as the account (Dovecot answered with the account's name),
        # so the milter's {auth_authen} and policyd's sasl_username are the account too
        line = next(x for x in stack.log("postfix").splitlines() if f"{queue_id}: client=" in x)
        assert line.endswith(f"sasl_username={ACCOUNT}"), line
    # counted under the account: the day's delivery events and policyd's usage
    assert int(stack.redis().hget(f"txmail:{{{ACCOUNT}}}:counts:{day}", "delivery") or 0) >= 2
    usage = stack.redis().hgetall(Keys().usage(ACCOUNT, "d", int(time.time() // 86400)))
    assert int(usage.get("m", 0)) >= 2, usage

    stack.txmail("accounts", "login", "remove", "--yes", ACCOUNT, "orders@shop.example")
    stack.wait_passwd("orders@shop.example", present=False)

    def refusal() -> smtplib.SMTPAuthenticationError | None:
        # Dovecot looks at the passwd-file again at most once a second, so the removal takes
        # effect within a second or two of the file's change, not at once
        with stack.client("submission") as smtp:
            smtp.user, smtp.password = "orders@shop.example", orders
            try:
                smtp.auth("PLAIN", smtp.auth_plain)
            except smtplib.SMTPAuthenticationError as refused:
                return refused
        return None

    refused = wait_for(refusal, 20, interval=0.5, what="the removed login to be refused")
    assert refused.smtp_code == 535
    assert refused.smtp_error.startswith(b"5.7.8 Error: authentication failed")
    send_as(stack, "billing@shop.example", billing, "still-billing@example.net")
    wait_for(lambda: sink.find("still-billing@example.net"), 20, what="delivery after removal")


def test_a_login_is_one_accounts_and_goes_with_it(stack: Stack) -> None:
    for name in ("shortlived", "neighbour"):
        stack.add_account(name, f"{name}.example")
    stack.txmail(
        "accounts", "login", "add", "shortlived", "app@shortlived.example", "--generate-password"
    )
    stack.wait_passwd("app@shortlived.example")
    taken = stack.txmail(
        "accounts",
        "login",
        "add",
        "neighbour",
        "APP@shortlived.example",
        "--generate-password",
        check=False,
    )
    assert taken.returncode == 1
    assert "belongs to account 'shortlived'" in taken.stderr, taken.stderr
    assert "password:" not in taken.stdout
    stack.txmail("accounts", "remove", "--yes", "shortlived")
    stack.wait_passwd("app@shortlived.example", present=False)
    stack.txmail(
        "accounts", "login", "add", "neighbour", "app@shortlived.example", "--generate-password"
    )
    wait_for(
        lambda: any(
            x.startswith("app@shortlived.example:") and x.endswith("user=neighbour")
            for x in (stack.state / "dovecot/users").read_text().splitlines()
        ),
        15,
        what="the login in the passwd-file, for its new account",
    )
