"""txmail milter: the Milter glue between Postfix's smtpd and txmail's decisions.

Postfix talks to this process over a UNIX socket (smtpd_milters = unix:STATE/run/milter/...;
milter_default_action = tempfail). One TxmailMilter instance lives for a whole SMTP connection,
so per-message state is reset in envfrom (POSTFIX-NOTES §5).

Decides:  at MAIL FROM, whether the logged-in account may send (exists, not suspended);
          at end of message, records `PREFIX {ACCOUNT}:message:QID` with the account, envelope
          and recipients. Unauthenticated mail only reaches the milter on port 25 for the
          return-path domains (Postfix refuses everything else) and is passed through.
Fails:    any Redis trouble or internal error is a 451 4.3.0, so nothing is accepted unchecked.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import Milter

from txmail import store
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.store.accounts import Accounts
from txmail.store.messages import MessageRecord, Messages

log = logging.getLogger("txmail.milter")

TEMPFAIL_TEXT = "txmail cannot check this message right now; try again in a few minutes"


@dataclass
class MilterContext:
    """What every connection shares: settings and the store."""

    settings: Settings
    accounts: Accounts
    messages: Messages


@dataclass
class Envelope:
    """What one message brought so far; reset at every MAIL FROM."""

    sender: str
    sender_params: list[str]
    account: str | None
    recipients: list[str] = field(default_factory=list)
    recipient_params: dict[str, list[str]] = field(default_factory=dict)
    size: int = 0


def strip_brackets(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    return address


class TxmailMilter(Milter.Base):
    def __init__(self, context: MilterContext) -> None:
        self.context = context
        self.envelope: Envelope | None = None

    # -- helpers --------------------------------------------------------------------------

    def _reply(self, code: str, status: str, text: str) -> int:
        self.setreply(code, status, text)
        return Milter.TEMPFAIL if code.startswith("4") else Milter.REJECT

    def _tempfail(self, queue_id: str, exc: BaseException) -> int:
        log.warning("%s: tempfail: %s", queue_id or "NOQUEUE", exc)
        return self._reply("451", "4.3.0", TEMPFAIL_TEXT)

    # -- callbacks ------------------------------------------------------------------------

    def envfrom(self, mailfrom: str, *params: str) -> int:
        login = self.getsymval("{auth_authen}") or None
        trusted = self.context.settings.trusted
        if login is None and trusted.port and self.getsymval("{daemon_name}") == "trusted":
            # Postfix lets only trusted.networks relay on this listener (permit_mynetworks).
            login = trusted.account
        self.envelope = Envelope(sender=strip_brackets(mailfrom), sender_params=list(params),
                                 account=login)
        if login is None:
            return Milter.CONTINUE
        try:
            account = self.context.accounts.find(login)
        except TemporaryFailure as exc:
            return self._tempfail("NOQUEUE", exc)
        if account is None:
            log.info("NOQUEUE: reject: account %s does not exist", login)
            return self._reply("550", "5.7.1", f"Account {login} no longer exists; ask the "
                               "relay's operator to restore it")
        if account.suspended:
            log.info("NOQUEUE: reject: account %s is suspended", login)
            return self._reply("554", "5.7.1", f"Account {login} is suspended "
                               f"({account.suspended_reason}); sending is refused until the "
                               "operator resumes it")
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        if self.envelope is not None:
            recipient = strip_brackets(to)
            self.envelope.recipients.append(recipient)
            if params:
                self.envelope.recipient_params[recipient] = list(params)
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        if self.envelope is not None:
            self.envelope.size += len(name) + len(value) + 4
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        if self.envelope is not None:
            self.envelope.size += len(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        envelope = self.envelope
        queue_id = self.getsymval("i") or ""
        if envelope is None or envelope.account is None:
            return Milter.CONTINUE
        try:
            self.context.messages.record(MessageRecord(
                queue_id=queue_id, account=envelope.account, envelope_sender=envelope.sender,
                recipients=envelope.recipients, size=envelope.size,
                envelope_params=envelope.sender_params,
                recipient_params=envelope.recipient_params, accepted_at=time.time()))
        except TemporaryFailure as exc:
            return self._tempfail(queue_id, exc)
        log.info("%s: accept: account=%s from=<%s> nrcpt=%d size=%d", queue_id,
                 envelope.account, envelope.sender, len(envelope.recipients), envelope.size)
        return Milter.CONTINUE

    def close(self) -> int:
        self.envelope = None
        return Milter.CONTINUE


def build_context(settings: Settings) -> MilterContext:
    client = store.connect(settings)
    keys = store.Keys(settings.redis.prefix)
    ttl = settings.milter.message_ttl_days * 86400
    return MilterContext(settings=settings, accounts=Accounts(client, keys),
                         messages=Messages(client, keys, ttl))


def serve(settings: Settings) -> None:
    """Run the milter on its UNIX socket until SIGTERM."""
    context = build_context(settings)
    socket_path = Path(settings.milter.socket if os.path.isabs(settings.milter.socket)
                       else settings.path(settings.milter.socket))
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    Milter.factory = lambda: TxmailMilter(context)
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGFROM | Milter.ADDRCPT
                     | Milter.DELRCPT | Milter.CHGBODY)
    log.info("listening on unix:%s", socket_path)
    Milter.runmilter("txmail", f"unix:{socket_path}", timeout=300)
    log.info("stopped")
