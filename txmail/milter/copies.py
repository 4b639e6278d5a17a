"""Per-recipient copies: one submitted message becomes several queue files when one body cannot
serve every recipient.

SYNOPSIS
    kept = kept_recipient(plan)                      # stays on the client's queue file
    others = other_recipients(plan, kept)            # each gets a copy of its own
    orders = copy_orders(submission, others, choice, track_bounces=True)
    queue_ids = copier.inject(submission, orders, message)   # {recipient: copy queue id}
    header = signer.verify(value)                    # on the copy listener; None when forged

DESCRIPTION
    One Postfix queue file has one body and one envelope sender for all its recipients. Three
    things need a queue file per recipient: tracking tokens name their recipient (issue 6);
    the BCC copy of single-recipient mode must arrive untracked while the To recipient's
    message is tracked (issue 3 rule 8); and the signed bounce address names a queue file,
    so with one file for all, every recipient could report outcomes about the others (issue
    15). So, at end of message, after every rule has passed, when the message has more than
    one recipient and bounce tracking is on (or tracking changed the body), the milter keeps
    the first recipient (in single mode the To recipient) on the client's queue file, tracked
    for that recipient, removes every other recipient (smfi_delrcpt) and injects a copy for
    each of them. Mail with one recipient, and mail of an account with bounce tracking off
    and nothing tracked, take the usual path: nothing here runs for them.

    A copy is the message as the rules left it (control headers stripped, the single-mode
    To/Cc/From edits applied) with the body as the client sent it, plus one header
    X-CloudMTA-Copy: TOKEN at the top. TOKEN is base64url(JSON) "." base64url(MAC), folded;
    the JSON carries the parent's queue id, the recipient, the account, whether and how to
    track (never for the BCC copy), the class, flags, tags and when it was made; the MAC is
    HMAC-SHA256 under a key derived from secrets.bounce_key_file with its own label, so no
    other txmail MAC can be replayed as one. A client's X-CloudMTA-Copy is an ordinary control
    header: the rule control_headers strips it and nothing ever reads it.

    Copies go in through Postfix's private listener spool/private/txmail-copy (master.cf):
    a UNIX socket in a directory only root and postfix can open (the milter runs as root,
    group postfix); no AUTH, no TLS, no policy service (the parent's recipients were counted
    by policyd and by the milter's count), and milter_macro_daemon_name=txmail-copy, which
    is how the milter tells the copy listener apart. One SMTP session per parent, one
    transaction per copy: MAIL FROM the client's original envelope sender with its RET,
    ENVID, BODY and SMTPUTF8 parameters, RCPT TO the recipient with its NOTIFY and ORCPT, so
    Postfix's DSNs and txmail's bounce forwarding treat the copy as they would the original
    (the copy's record keeps the client's NOTIFY; on the copy listener the recipient is added
    back asking for FAILURE,DELAY as the parent's are, milter/notify.py). The parent's bounce
    tracking choice (Account.tracks_bounces: message, sender, domain, account) travels in the
    header, so a copy is bounce-tracked exactly when its parent is.

    On the copy listener the milter skips the client rules (the parent passed them) and runs
    the finishing steps with the copy's own queue id (finish.finish_copy): verify the header
    (a copy without a genuine one is refused 554 5.7.1), strip it, route by class, track for
    the copy's recipient (tokens carry the parent's queue id), rewrite the envelope sender to
    the signed bounce address of the copy's queue id, sign with DKIM, and record the copy
    (PREFIX {ACCOUNT}:message:COPYQID with parent = the parent's queue id, the parent's tags,
    flags and class, the client's envelope and DSN parameters, bcc when it is the BCC copy).
    The parent's record lists its copies (recipient -> copy queue id).

IDENTITY
    The client only knows the parent's queue id (the 250 reply, the API's message_id).
    A copy's record says message_id = the parent's queue id (MessageRecord.message_id), and
    every event writer (maillog follower, bounce pipe, tracker tokens) uses it, so delivery,
    bounce, deferral, complaint, open and click events of a copy's recipient carry the id the
    client knows, and `txmail messages show PARENT` shows them.

FAILURE
    A copy that cannot be injected (listener unreachable, a refusal, the copy's own milter
    trouble such as Redis down) raises TemporaryFailure: the client gets 451 4.3.0 for the
    whole message and the parent is not queued. Copies injected before the failing one are
    already in Postfix's queue and will be delivered; when the client retries, those
    recipients get the message twice. The window is kept small: copies are injected last,
    after everything of the parent that can fail except its record write, in one session.
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass

from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.milter.plan import Plan
from txmail.milter.submission import Submission, esmtp_params
from txmail.store.secrets import SharedSecrets
from txmail.submit import QUEUED, unix_session
from txmail.tokens.copies import HEADER, CopyHeader, CopySigner
from txmail.tokens.links import Tracking

log = logging.getLogger("txmail.milter")

LISTENER = "txmail-copy"  # master.cf service name and milter_macro_daemon_name
MAIL_PARAMS = ("RET", "ENVID", "BODY", "SMTPUTF8")
RCPT_PARAMS = ("NOTIFY", "ORCPT")


@dataclass(frozen=True)
class CopyOrder:
    """One copy the parent asks for: who gets it, with which RCPT parameters."""

    header: CopyHeader
    rcpt_options: tuple[str, ...] = ()


# -- planning (the parent's end of message) ------------------------------------------------


def kept_recipient(plan: Plan) -> str:
    """The recipient that stays on the client's queue file: in single-recipient mode the To
    recipient (everybody but the BCC copy), else the first in RCPT TO order."""
    for recipient in plan.recipients:
        if recipient != plan.bcc:
            return recipient
    return plan.recipients[0]


def other_recipients(plan: Plan, kept: str) -> list[str]:
    """Everybody who gets a copy, in RCPT TO order, each address once (case-insensitively;
    Postfix keeps one of duplicate recipients too). An address equal to `kept` but for case
    stays on the parent: it reaches the same mailbox."""
    seen = {kept.lower()}
    others: list[str] = []
    for recipient in plan.recipients:
        if recipient.lower() not in seen:
            seen.add(recipient.lower())
            others.append(recipient)
    return others


def copy_orders(
    submission: Submission,
    others: list[str],
    choice: Tracking,
    now: int = 0,
    *,
    track_bounces: bool,
) -> list[CopyOrder]:
    """What each copy must say: tracked as `choice`, except the BCC copy, which never is;
    bounce-tracked as the message is (`track_bounces`, always given: a default would decide
    for a caller that forgot)."""
    plan = submission.plan
    orders = []
    for recipient in others:
        bcc = recipient == plan.bcc
        header = CopyHeader(
            parent=submission.queue_id,
            recipient=recipient,
            account=submission.account,
            tracking=Tracking(False, False) if bcc else choice,
            bcc=bcc,
            message_class=plan.message_class,
            flags=plan.flags,
            tags=tuple(plan.tags),
            made_at=now or int(time.time()),
            track_bounces=track_bounces,
        )
        params = esmtp_params(submission.recipient_params.get(recipient, []))
        orders.append(CopyOrder(header, _options(params, RCPT_PARAMS)))
    return orders


def _options(params: dict[str, str | None], wanted: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        name if params[name] is None else f"{name}={params[name]}"
        for name in wanted
        if name in params
    )


# -- injection -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    sender: str
    mail_options: tuple[str, ...]
    recipient: str
    rcpt_options: tuple[str, ...]


# (envelopes with their messages) -> the copies' queue ids, in order; raises TemporaryFailure
Transport = Callable[[list[tuple[Envelope, bytes]]], list[str]]


@dataclass(frozen=True)
class Copier:
    """Makes the copies: signs each one's header and hands them to Postfix (`transport`)."""

    signer: CopySigner
    transport: Transport

    def inject(
        self, submission: Submission, orders: list[CopyOrder], message: bytes
    ) -> dict[str, str]:
        """Queue one copy per order; {recipient: copy queue id}. `message` is the copy's text
        (the rules' header edits applied, the body as the client sent it, CRLF)."""
        mail_options = _options(submission.params, MAIL_PARAMS)
        batch = []
        for order in orders:
            value = self.signer.sign(order.header)
            batch.append(
                (
                    Envelope(
                        submission.sender, mail_options, order.header.recipient, order.rcpt_options
                    ),
                    f"{HEADER}: {value}\r\n".encode("ascii") + message,
                )
            )
        queue_ids = self.transport(batch)
        made = {
            order.header.recipient: queue_id
            for order, queue_id in zip(orders, queue_ids, strict=True)
        }
        log.info(
            "%s: copies: %s",
            submission.queue_id,
            ", ".join(f"to=<{r}> as {q}" for r, q in made.items()),
        )
        return made


def listener_transport(socket_path: str, timeout: float = 60.0) -> Transport:
    """The Transport that speaks SMTP to Postfix's private/txmail-copy listener."""

    def send(batch: list[tuple[Envelope, bytes]]) -> list[str]:
        queued: list[str] = []
        try:
            with unix_session(socket_path, timeout, "txmail-milter") as client:
                code, reply = client.connect(socket_path)
                if code != 220:
                    raise smtplib.SMTPConnectError(code, reply)
                client.ehlo()
                for envelope, message in batch:
                    queued.append(_one(client, envelope, message))
        except (OSError, smtplib.SMTPException) as exc:
            done = (
                f"; {len(queued)} copies were queued before ({', '.join(queued)})" if queued else ""
            )
            raise TemporaryFailure(
                f"a copy could not be injected on {socket_path}: {_why(exc)}{done}"
            ) from exc
        return queued

    return send


def _one(client: smtplib.SMTP, envelope: Envelope, message: bytes) -> str:
    code, reply = client.mail(envelope.sender, list(envelope.mail_options))
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, envelope.sender)
    code, reply = client.rcpt(envelope.recipient, list(envelope.rcpt_options))
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({envelope.recipient: (code, reply)})
    code, reply = client.data(message)
    queued = QUEUED.search(reply.decode("ascii", "replace"))
    if code != 250 or queued is None:
        raise smtplib.SMTPDataError(code, reply)
    return queued.group(1)


def _why(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        return f"RCPT refused: {code} {reply.decode('utf-8', 'replace')[:200]}"
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error  # bytes as smtplib raises it; its annotation also allows str
        if isinstance(error, bytes):
            error = error.decode("utf-8", "replace")
        return f"{exc.smtp_code} {error[:200]}"
    return exc.__class__.__name__


def listener_path(settings: Settings) -> str:
    """Postfix's private/txmail-copy socket (master.cf) in this node's queue directory."""
    return str(settings.postfix_queue_path / "private" / LISTENER)


def build(settings: Settings, shared: SharedSecrets | None = None) -> Copier:
    return Copier(
        CopySigner(
            (lambda: shared.accepted("bounce_key_file"))
            if shared is not None
            else settings.read_secret("bounce_key_file")
        ),
        listener_transport(listener_path(settings)),
    )
