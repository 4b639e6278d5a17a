"""Hand a message to Postfix over one of its private UNIX-socket listeners.

SYNOPSIS
    reply = submit(socket_path, account, Envelope(...), message_bytes, timeout)   # the API
    with unix_session(socket_path, timeout) as smtp: ...          # the milter's copies

DESCRIPTION
    Two daemons hand mail to Postfix this way: the HTTP send API (as an account, below) and
    the milter, which injects per-recipient copies through the copy listener
    (txmail.milter.copies). unix_session() is the SMTP session both open; QUEUED reads the
    queue id out of Postfix's 250 reply.

    Postfix's smtpd listens for the API on the UNIX socket spool/private/txmail-api (master.cf),
    which only root and postfix can open. The API opens it, says XCLIENT LOGIN=ACCOUNT (allowed
    only on that socket), and Postfix then treats the session as that account's SASL login:
    policyd's limits, the milter's rules (sender domains, attachments, suppressions, tracking,
    the bounce address, DKIM) and the relay restriction all see the account, exactly as on the
    submission port. The API never learns or holds an SMTP password, and an account can only
    send as its own domains because the milter checks the sender like any other.

    All recipients must be accepted or nothing is sent: the first refused RCPT ends the
    transaction (RSET) and its reply is the answer.

    The whole dialogue, from connecting to Postfix's answer to the message, has one
    deadline, `total` seconds (each read or write also waits at most `timeout`), so the
    longest a send can take is known whatever the number of recipients: the API keeps an
    Idempotency-Key's pending marker longer than that (tracker/api.py pending_seconds()).

RETURNS
    Accepted(queue_id) or Refused(code, status, text) with Postfix's own reply: the API shows
    the same sentences and codes as an SMTP client would see.
FAILURE
    A socket that cannot be reached, or a dialogue that breaks off (or passes its deadline)
    before the message's final "." is sent, is Refused 451 4.3.0 (try again): nothing was
    queued, since Postfix queues a message only once its final "." has arrived. From the
    moment that "." is sent, no answer (a timeout, a closed connection) or a 250 without
    "queued as ID" is Unknown: Postfix may have queued the message, and sending it again
    could deliver it twice.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# The send API's lines ("api: account=..."): under the tracker's name, where they always were.
log = logging.getLogger("txmail.tracker")

QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")
# The send API's per-message bounce tracking (`trackbounces`), a header it puts on top of the
# message; the milter reads it only from the API's listener (milter_macro_daemon_name), where
# the session is the account's own, and strips it from every message (milter/finish.py).
API_LISTENER = "txmail-api"
TRACK_BOUNCES_HEADER = "X-CloudMTA-Track-Bounces"
STATUS = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+(.*)$", re.S)
UNAVAILABLE_TEXT = "txmail cannot take the message right now; try again in a few minutes"
DOT_STUFF = re.compile(rb"^\.", re.M)


@dataclass(frozen=True)
class Envelope:
    sender: str  # "" for MAIL FROM:<>
    recipients: list[str]
    mail_options: list[str] = field(default_factory=list)  # RET=, ENVID=, BODY=, SMTPUTF8
    rcpt_options: list[str] = field(default_factory=list)  # NOTIFY= for every recipient
    orcpt: dict[str, str] = field(default_factory=dict)  # recipient -> ORCPT address


@dataclass(frozen=True)
class Accepted:
    queue_id: str


@dataclass(frozen=True)
class Refused:
    code: int
    status: str
    text: str
    recipient: str = ""

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


@dataclass(frozen=True)
class Unknown:
    """The whole message was sent but Postfix's answer never came or named no queue id: it
    may be queued (see FAILURE)."""

    reason: str  # for the log: what happened after the final "."


def refused(code: int, reply: bytes | str, recipient: str = "") -> Refused:
    """A Refused from an SMTP reply, its enhanced status code split off the sentence."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = " ".join(text.split())
    match = STATUS.match(text)
    if match:
        return Refused(code, match.group(1), match.group(2), recipient)
    default = "4.0.0" if 400 <= code < 500 else "5.0.0"
    return Refused(code, default, text, recipient)


def xtext(value: str) -> str:
    """RFC 3461 xtext: what ENVID and ORCPT values must be written in."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


class UnixSMTP(smtplib.SMTP):
    """smtplib over a UNIX socket (smtplib itself only speaks TCP); the milter's copies use
    it too (txmail/milter/copies.py)."""

    def __init__(self, path: str, timeout: float, local_hostname: str = "txmail-api") -> None:
        self._path = path
        super().__init__(local_hostname=local_hostname, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        return sock


@contextlib.contextmanager
def unix_session(
    path: str, timeout: float, local_hostname: str = "txmail-api"
) -> Iterator[UnixSMTP]:
    """A UnixSMTP client that says QUIT (or just closes) however the dialogue ends."""
    client = UnixSMTP(path, timeout, local_hostname)
    try:
        yield client
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


class Deadline:
    """The end of a dialogue: before each step the socket waits at most what is left of it
    (and never more than `timeout`); TimeoutError once it has passed."""

    def __init__(self, client: UnixSMTP, timeout: float, total: float) -> None:
        self.client = client
        self.timeout = timeout
        self.end = time.monotonic() + total

    def step(self) -> None:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the SMTP dialogue passed its deadline")
        if self.client.sock is not None:
            self.client.sock.settimeout(min(self.timeout, left))


class _AfterDot(Exception):
    """The dialogue broke off after the message's final "." was sent."""


def submit(
    socket_path: str,
    account: str,
    envelope: Envelope,
    message: bytes,
    timeout: float = 60.0,
    total: float | None = None,
) -> Accepted | Refused | Unknown:
    """Send `message` as `account` (see the module text); `total` seconds for the whole
    dialogue (None: 3 x `timeout`)."""
    client = UnixSMTP(socket_path, timeout)
    deadline = Deadline(client, timeout, 3 * timeout if total is None else total)
    try:
        return _dialogue(client, deadline, account, envelope, message)
    except _AfterDot as exc:
        reason = f"no answer after the message was sent ({exc.__cause__.__class__.__name__})"
        log.warning("api: account=%s: %s; Postfix may have queued it", account, reason)
        return Unknown(reason)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning(
            "api: account=%s: Postfix cannot be reached on %s (%s)",
            account,
            socket_path,
            exc.__class__.__name__,
        )
        return Refused(451, "4.3.0", UNAVAILABLE_TEXT)
    finally:
        _close(client, deadline)


def _close(client: UnixSMTP, deadline: Deadline) -> None:
    """QUIT while the deadline allows, else just close."""
    try:
        if client.sock is not None:
            deadline.step()
            client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()


def _dialogue(
    client: UnixSMTP, deadline: Deadline, account: str, envelope: Envelope, message: bytes
) -> Accepted | Refused | Unknown:
    code, reply = client.connect(client._path)
    if code != 220:
        return refused(code, reply)
    deadline.step()
    client.ehlo()
    deadline.step()
    code, reply = client.docmd("XCLIENT", f"LOGIN={xtext(account)}")
    if code != 220:
        log.error("api: account=%s: Postfix refused XCLIENT: %s %r", account, code, reply)
        return Refused(451, "4.3.0", UNAVAILABLE_TEXT)
    client.ehlo_resp = None
    deadline.step()
    client.ehlo()
    deadline.step()
    code, reply = client.mail(envelope.sender, envelope.mail_options)
    if code != 250:
        deadline.step()
        client.rset()
        return refused(code, reply)
    for recipient in envelope.recipients:
        options = list(envelope.rcpt_options)
        if recipient in envelope.orcpt:
            options.append(f"ORCPT=rfc822;{xtext(envelope.orcpt[recipient])}")
        deadline.step()
        code, reply = client.rcpt(recipient, options)
        if code not in (250, 251):
            deadline.step()
            client.rset()
            return refused(code, reply, recipient)
    deadline.step()
    code, reply = client.docmd("DATA")
    if code != 354:  # DATA itself refused (e.g. policyd at RCPT time)
        deadline.step()
        client.rset()
        return refused(code, reply)
    # The message dot-stuffed, then the final "." on its own: until that is sent, Postfix
    # throws away what it got; once it is, the message may be queued whatever happens next.
    text = DOT_STUFF.sub(b"..", re.sub(rb"\r?\n", b"\r\n", message))
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    deadline.step()
    client.send(text)
    try:
        deadline.step()
        client.send(b".\r\n")
        deadline.step()
        code, reply = client.getreply()
    except (OSError, smtplib.SMTPException) as exc:
        raise _AfterDot() from exc
    if code != 250:
        return refused(code, reply)
    found = QUEUED.search(reply.decode("ascii", "replace"))
    if not found:
        log.warning("api: account=%s: Postfix accepted the message without a queue id", account)
        return Unknown("accepted without a queue id")
    return Accepted(found.group(1))
