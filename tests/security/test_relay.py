"""Attack: using the relay as an open relay.

A spammer connects to any listener the node opens and, without logging in, tries to send to a
foreign domain: as one of the accounts' domains, as another account's domain and as a domain
nobody here owns. Every such attempt must end in a 5xx before the message is queued. Logged
in (or, on the trusted listener, from a trusted network; on the API's socket, by XCLIENT), an
account may relay only as its own domains.

The listeners are read from the rendered master.cf, so a listener added later without a row
here fails the first test instead of being forgotten. The node is a dedicated one with the
trusted listener switched on (trusted.networks is 127.0.0.2/32, so a client on 127.0.0.1 is
outside it and one bound to 127.0.0.2 inside it).
"""

from __future__ import annotations

import contextlib
import pwd
import re
import smtplib
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from txmail import config
from txmail.milter.copies import listener_path
from txmail.submit import UnixSMTP
from txmail_testing.harness import (
    Sink,
    Stack,
    free_listening_port,
    queue_id_of,
    simple_message,
    wait_for,
)

pytestmark = pytest.mark.e2e

TRUSTED_CLIENT = "127.0.0.2"
OUTSIDE_CLIENT = "127.0.0.1"
SENDERS = {
    "own": "app@relaya.example",
    "other-account": "app@relayb.example",
    "nobodys": "app@outside.example",
}
# Every smtpd service of master.cf, by the name this module calls it.
LISTENERS = (
    "smtp",
    "submission",
    "submissions",
    "reinject",
    "trusted",
    "txmail-api",
    "txmail-copy",
)


@pytest.fixture(scope="module")
def node(sink: Sink) -> Iterator[Stack]:
    made = Stack(relay_port=sink.port, name="relay").configure(
        "trusted", port=free_listening_port(), networks=[f"{TRUSTED_CLIENT}/32"], account="relaya"
    )
    try:
        yield made.start()
    finally:
        made.close()


@pytest.fixture(scope="module")
def password(node: Stack) -> str:
    """relaya's password; relayb is the other account whose domain relaya must not use."""
    node.add_account("relayb", "relayb.example")
    return node.add_account("relaya", "relaya.example")


def ports(node: Stack) -> dict[int, str]:
    settings = config.load(node.config)
    return {
        settings.listen.smtp: "smtp",
        settings.listen.submission: "submission",
        settings.listen.submissions: "submissions",
        settings.listen.reinject: "reinject",
        settings.trusted.port: "trusted",
    }


def smtpd_services(node: Stack) -> dict[str, str]:
    """master.cf's smtpd services as {name: service field}, e.g. {"smtp": "127.0.0.1:20025"}."""
    master_cf = (node.state / "postfix/etc/master.cf").read_text()
    found = {}
    for line in master_cf.splitlines():
        fields = line.split()
        if not line[:1].strip() or line.startswith("#") or len(fields) < 8:
            continue
        if fields[7] == "smtpd":
            port = fields[0].rpartition(":")[2]
            name = ports(node).get(int(port), fields[0]) if port.isdigit() else fields[0]
            found[name] = fields[0]
    return found


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def session(node: Stack, listener: str, source: str = OUTSIDE_CLIENT) -> smtplib.SMTP:
    """A connection to `listener` after EHLO, over TLS wherever the listener offers it."""
    settings = config.load(node.config)
    smtp: smtplib.SMTP
    if listener in ("txmail-api", "txmail-copy"):
        path = (
            listener_path(settings)
            if listener == "txmail-copy"
            else str(settings.state_path / "postfix/spool/private/txmail-api")
        )
        smtp = UnixSMTP(path, 30, local_hostname="client.test")
        smtp.connect(path)
    elif listener == "submissions":
        smtp = smtplib.SMTP_SSL(
            "127.0.0.1",
            settings.listen.submissions,
            timeout=30,
            local_hostname="client.test",
            context=tls_context(),
            source_address=(source, 0),
        )
    else:
        port = next(p for p, name in ports(node).items() if name == listener)
        smtp = smtplib.SMTP(
            "127.0.0.1", port, timeout=30, local_hostname="client.test", source_address=(source, 0)
        )
    smtp.ehlo()
    if smtp.has_extn("starttls"):
        smtp.starttls(context=tls_context())
        smtp.ehlo()
    return smtp


def transaction(smtp: smtplib.SMTP, sender: str, recipient: str) -> tuple[int, bytes]:
    """MAIL, RCPT and DATA; the first refusal, or the final reply."""
    code, text = smtp.mail(sender)
    if code >= 400:
        return code, text
    code, text = smtp.rcpt(recipient)
    if code >= 400:
        return code, text
    return smtp.data(simple_message(sender, recipient))


def test_every_smtpd_listener_of_master_cf_is_in_the_matrix(node: Stack) -> None:
    services = smtpd_services(node)
    assert sorted(services) == sorted(LISTENERS), services
    # the listeners without a login of their own are never reachable from another host
    assert services["reinject"].startswith("127.0.0.1:")


@pytest.mark.parametrize("sender", sorted(SENDERS))
@pytest.mark.parametrize("listener", LISTENERS)
def test_without_login_nothing_is_relayed(
    node: Stack, password: str, listener: str, sender: str
) -> None:
    recipient = f"victim-{listener}-{sender}@example.net"
    with contextlib.closing(session(node, listener)) as smtp:
        code, text = transaction(smtp, SENDERS[sender], recipient)
    assert code >= 500, (code, text)
    assert re.match(rb"5\.\d+\.\d+ ", text), text
    assert len(text.split()) > 5, text  # a sentence that says what to do, not just a code
    if listener == "reinject":  # no milter, no policy check there: only forwarded bounces
        assert b"takes only the bounces txmail forwards (MAIL FROM:<>)" in text


@contextlib.contextmanager
def logged_in(node: Stack, password: str, listener: str) -> Iterator[smtplib.SMTP]:
    """A session of account relaya: SASL where there is AUTH, the trusted network on the trusted
    listener, XCLIENT on the API's socket (what txmail's HTTP API does)."""
    if listener == "trusted":
        smtp = session(node, listener, source=TRUSTED_CLIENT)
    else:
        smtp = session(node, listener)
        if listener == "txmail-api":
            code, text = smtp.docmd("XCLIENT", "LOGIN=relaya")
            assert code == 220, text
            smtp.ehlo_resp = None
            smtp.ehlo()
        else:
            smtp.login("relaya", password)
    with contextlib.closing(smtp):
        yield smtp


@pytest.mark.parametrize("listener", ["smtp", "submission", "submissions", "trusted", "txmail-api"])
def test_an_account_relays_only_as_its_own_domains(
    node: Stack, password: str, sink: Sink, listener: str
) -> None:
    for sender in ("other-account", "nobodys"):
        with logged_in(node, password, listener) as smtp:
            code, text = transaction(smtp, SENDERS[sender], f"victim-{listener}@example.net")
        assert (code, text[:6]) == (553, b"5.7.1 "), (sender, text)
    recipient = f"ok-{listener}@example.net"
    with logged_in(node, password, listener) as smtp:
        code, text = transaction(smtp, SENDERS["own"], recipient)
    assert code == 250, text
    delivered = wait_for(lambda: sink.find(recipient), 30, what=f"delivery to {recipient}")
    assert delivered[0].sender.startswith("bounces+")  # went through the account's rules
    record = node.redis().hgetall(f"txmail:{{relaya}}:message:{queue_id_of(text)}")
    assert record["account"] == "relaya"


@pytest.mark.parametrize("listener", ["reinject", "txmail-copy"])
def test_internal_listeners_offer_no_login(node: Stack, listener: str) -> None:
    with contextlib.closing(session(node, listener)) as smtp:
        assert not smtp.has_extn("auth")
        code, _ = smtp.docmd("AUTH", "PLAIN AHJlbGF5YQB4")
    assert code >= 500


# Debian's own Python: a venv under a private home folder may not be executable by others.
CONNECT = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"


def test_the_private_sockets_are_closed_to_other_local_users(node: Stack) -> None:
    """XCLIENT on the API's socket makes a session any account's: only root and postfix may
    connect to it (and to the copy listener), not the txmail user nor anybody else."""
    settings = config.load(node.config)
    for path in (
        str(settings.state_path / "postfix/spool/private/txmail-api"),
        listener_path(settings),
    ):
        for user in ("nobody", settings.user):
            entry = pwd.getpwnam(user)
            probe = subprocess.run(
                [
                    "setpriv",
                    f"--reuid={entry.pw_uid}",
                    f"--regid={entry.pw_gid}",
                    "--clear-groups",
                    "/usr/bin/python3",
                    "-c",
                    CONNECT,
                    path,
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                cwd="/",
            )
            assert probe.returncode != 0 and "PermissionError" in probe.stderr, (user, path)


def test_the_return_path_domains_take_mail_without_login_on_port_25_only(node: Stack) -> None:
    """Bounces from the internet reach the bounce address; that is no way to relay."""
    rcpt = "bounces+x@bounces.example.test"
    for listener in LISTENERS:
        if listener in ("txmail-api", "txmail-copy", "reinject"):
            continue
        with contextlib.closing(session(node, listener)) as smtp:
            smtp.mail("")
            code, _ = smtp.rcpt(rcpt)
        assert (code == 250) == (listener == "smtp"), listener
