"""txmail milter: the Milter glue between Postfix's smtpd and txmail's sending rules.

Postfix talks to this process over a UNIX socket (smtpd_milters = unix:STATE/run/milter/...;
milter_default_action = tempfail). One TxmailMilter instance lives for a whole SMTP connection,
so per-message state is reset in envfrom (POSTFIX-NOTES §5). The class only buffers and
translates: the decisions are the rules' (txmail/milter/rules/) and finish.py's.

Decides:  at MAIL FROM, whether the logged-in account may send (exists, not suspended) and the
          rules of stage "mail" (sender domain, declared SIZE); at each RCPT TO the rules of
          stage "rcpt" (recipient count); at end of message everything else, in the order of
          finish.py, then applies the result: header edits, removed recipients, the routing
          header, the rewritten envelope sender and the DKIM signature, and records
          `PREFIX {ACCOUNT}:message:QID`. Unauthenticated mail only reaches the milter on port 25
          for the return-path domains (Postfix refuses everything else) and is passed through.
          On the copy listener (milter_macro_daemon_name=txmail-copy) the milter sees only the
          per-recipient copies it injected itself and finishes them (milter/copies.py).
Negotiates: no callbacks for connect, helo, data and eoh; no replies awaited for headers and
          body chunks; the message is buffered once and parsed once, at end of message.
Logs:     one line per decision, starting with the queue id (NOQUEUE before Postfix has one).
Fails:    any Redis trouble or internal error is a 451 4.3.0, so nothing is accepted unchecked;
          a message whose structure cannot be read is a 554 5.6.0.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import Milter

from txmail import logs
from txmail.accounts.records import Account
from txmail.config import Settings
from txmail.errors import TemporaryFailure
from txmail.histograms import (
    MILTER_END_OF_MESSAGE,
    Observations,
    flushing,
    node_name,
)
from txmail.milter import copies, finish, rules
from txmail.milter.rules import Refusal
from txmail.milter.rules.size import client_size
from txmail.milter.submission import Submission, strip_brackets
from txmail.store.counters import count_message
from txmail.submit import API_LISTENER

log = logging.getLogger("txmail.milter")

TEMPFAIL = Refusal(
    "451", "4.3.0", "txmail cannot check this message right now; try again in a few minutes"
)
REPLY_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def reply_text(text: str) -> str:
    """A reply sentence libmilter will send as given: one line, '%' doubled, capped."""
    return REPLY_UNSAFE.sub("?", text)[:400].replace("%", "%%")


def internal_errors(callback: Callable[..., int]) -> Callable[..., int]:
    """Whatever goes wrong inside a callback is a 451 4.3.0, never pymilter's own text."""

    @functools.wraps(callback)
    def guarded(self: TxmailMilter, *args: Any) -> int:
        # Every line logged on the way names the message's queue id and account (logs.py).
        with logs.concerning(asked=self.concerning):
            try:
                return callback(self, *args)
            except TemporaryFailure as exc:
                return self.refuse(TEMPFAIL, f"tempfail: {exc}")
            except Exception:  # noqa: BLE001 - a bug must never accept a message unchecked
                log.exception("%s: internal error in %s", self.queue_id, callback.__name__)
                return self.refuse(TEMPFAIL, "tempfail: internal error")

    return guarded


def timed(callback: Callable[..., int]) -> Callable[..., int]:
    """The callback's time, whatever it answers, in the end-of-message histogram (/metrics)."""

    @functools.wraps(callback)
    def observed(self: TxmailMilter, *args: Any) -> int:
        started = time.monotonic()
        try:
            return callback(self, *args)
        finally:
            if self.observations is not None:
                self.observations.observe(MILTER_END_OF_MESSAGE, time.monotonic() - started)

    return observed


class TxmailMilter(Milter.Base):
    def __init__(
        self, context: finish.MilterContext, observations: Observations | None = None
    ) -> None:
        self.context = context
        self.observations = observations  # latency histograms (txmail/histograms.py)
        self.submission: Submission | None = None
        self.account: Account | None = None
        self.keep_body = True
        self.copy = False  # on the copy listener: a copy the milter made (milter/copies.py)
        self.from_api = False  # on the send API's listener (finish.message_track_bounces)

    @property
    def queue_id(self) -> str:
        return (self.submission.queue_id if self.submission else "") or "NOQUEUE"

    def concerning(self) -> tuple[str | None, str | None]:
        """The queue id and account of this session's message so far, for its log lines."""
        submission = self.submission
        if submission is None:
            return None, self.account.name if self.account else None
        return submission.queue_id, self.account.name if self.account else submission.account

    def refuse(self, refusal: Refusal, why: str) -> int:
        log.info("%s: %s: %s", self.queue_id, why, refusal)
        self.setreply(refusal.code, refusal.status, reply_text(refusal.text))
        count_message(
            self.context.client, self.context.keys, "refused", refusal.code, refusal.status
        )  # /metrics (store/counters.py)
        return Milter.TEMPFAIL if refusal.temporary else Milter.REJECT

    # -- callbacks ------------------------------------------------------------------------

    @internal_errors
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.submission, self.account, self.keep_body, self.copy = None, None, True, False
        self.from_api = self.getsymval("{daemon_name}") == API_LISTENER
        login = self.getsymval("{auth_authen}") or None
        trusted = self.context.settings.trusted
        if login is None and trusted.port and self.getsymval("{daemon_name}") == "trusted":
            # Postfix lets only trusted.networks relay on this listener (permit_mynetworks).
            login = trusted.account
        if login is None:
            if self.getsymval("{daemon_name}") == copies.LISTENER:
                self.copy = True
                self.submission = Submission(
                    account="",
                    domains=(),
                    sender=strip_brackets(mailfrom),
                    sender_params=list(params),
                )
            return Milter.CONTINUE
        account = self.context.accounts.find(login)
        if account is None:
            return self.refuse(
                Refusal(
                    "550",
                    "5.7.1",
                    f"Account {login} no longer exists; ask the relay's operator to restore it",
                ),
                "reject",
            )
        if account.suspended:
            return self.refuse(
                Refusal(
                    "554",
                    "5.7.1",
                    f"Account {login} is suspended "
                    f"({account.suspended_reason}); sending is refused "
                    "until the operator resumes it",
                ),
                "reject",
            )
        self.account = account
        self.submission = Submission(
            account=account.name,
            domains=tuple(account.domains),
            sender=strip_brackets(mailfrom),
            sender_params=list(params),
        )
        refusal = rules.run(rules.MAIL, self.submission, account.settings)
        if refusal is not None:
            self.submission = None
            return self.refuse(
                refusal, f"reject: account={account.name} from=<{strip_brackets(mailfrom)}>"
            )
        return Milter.CONTINUE

    @internal_errors
    def envrcpt(self, to: str, *params: str) -> int:
        submission, account = self.submission, self.account
        if submission is not None and self.copy:
            submission.recipients.append(strip_brackets(to))
            if params:
                submission.recipient_params[strip_brackets(to)] = list(params)
            return Milter.CONTINUE
        if submission is None or account is None:
            return Milter.CONTINUE
        recipient = strip_brackets(to)
        submission.queue_id = submission.queue_id or (self.getsymval("i") or "")
        submission.recipients.append(recipient)
        refusal = rules.run(rules.RCPT, submission, account.settings)
        if refusal is not None:
            submission.recipients.pop()
            return self.refuse(refusal, f"reject: account={account.name} to=<{recipient}>")
        if params:
            submission.recipient_params[recipient] = list(params)
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        if self.submission is not None:
            self.submission.add_header(name, value)
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        submission, account = self.submission, self.account
        if submission is not None and account is not None:
            # Past the account's limit the message is refused at eom; stop holding it.
            if (
                self.keep_body
                and client_size(submission) + len(chunk) > account.settings.max_message_size
            ):
                self.keep_body = False
                submission.drop_body()
            submission.add_body(chunk, keep=self.keep_body)
        elif submission is not None and self.copy:
            submission.add_body(chunk)
        return Milter.CONTINUE

    @timed
    @internal_errors
    def eom(self) -> int:
        submission, account = self.submission, self.account
        if submission is not None and self.copy:
            return self.finish_copy(submission)
        if submission is None or account is None:
            return Milter.CONTINUE
        submission.queue_id = self.getsymval("i") or submission.queue_id
        if self.from_api:
            submission.track_bounces = finish.message_track_bounces(submission)
        outcome = finish.finish(submission, account, self.context)
        if isinstance(outcome, Refusal):
            return self.refuse(
                outcome, f"reject: account={account.name} from=<{submission.sender}>"
            )
        self.apply(outcome)
        plan = outcome.plan
        log.info(
            "%s: accept: account=%s from=<%s> nrcpt=%d class=%s size=%d blocked=%d%s%s%s",
            submission.queue_id,
            account.name,
            submission.sender,
            len(plan.recipients),
            plan.message_class,
            submission.size,
            len(plan.blocked),
            " signed" if outcome.signatures else "",
            f" copies={len(outcome.record.copies)}" if outcome.record.copies else "",
            f" notify_widened={len(outcome.added_recipients)}" if outcome.added_recipients else "",
        )
        return Milter.CONTINUE

    def finish_copy(self, submission: Submission) -> int:
        submission.queue_id = self.getsymval("i") or ""
        outcome = finish.finish_copy(submission, self.context)
        if isinstance(outcome, Refusal):
            return self.refuse(outcome, f"reject: copy from=<{submission.sender}>")
        self.apply(outcome)
        log.info(
            "%s: accept: copy of %s account=%s to=<%s>%s%s",
            submission.queue_id,
            outcome.record.parent,
            submission.account,
            outcome.plan.recipients[0],
            " bcc" if outcome.plan.bcc else "",
            " tracked" if outcome.body else "",
        )
        return Milter.CONTINUE

    def apply(self, outcome: finish.Accepted) -> None:
        """Hand the decided changes to Postfix, in the order it must apply them."""
        for edit in outcome.header_edits:
            self.chgheader(edit.name, edit.index, edit.value if edit.value is not None else "")
        for recipient in outcome.removed_recipients:
            self.delrcpt(f"<{recipient}>")
        for recipient, params in outcome.added_recipients:  # milter/notify.py
            self.addrcpt(f"<{recipient}>", params)
        for name, value in outcome.route_headers:
            self.addheader(name, value)
        if outcome.return_path:
            self.chgfrom(f"<{outcome.return_path}>")
        if outcome.body is not None:  # tracking rewrote the HTML (milter/tracking.py)
            self.replacebody(outcome.body)
        for name, value in reversed(outcome.signatures):
            self.addheader(name, value, 0)

    def close(self) -> int:
        self.submission, self.account = None, None
        return Milter.CONTINUE


def serve(settings: Settings) -> None:
    """Run the milter on its UNIX socket until SIGTERM."""
    context = finish.build_context(settings)
    socket_path = Path(
        settings.milter.socket
        if os.path.isabs(settings.milter.socket)
        else settings.path(settings.milter.socket)
    )
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    observations = Observations("milter")
    histogram_key = context.keys.node_histograms(node_name(settings))
    Milter.factory = lambda: TxmailMilter(context, observations)
    Milter.set_flags(
        Milter.ADDHDRS
        | Milter.CHGHDRS
        | Milter.CHGFROM
        | Milter.ADDRCPT
        | Milter.ADDRCPT_PAR
        | Milter.DELRCPT
        | Milter.CHGBODY
    )
    log.info(
        "listening on unix:%s (rules: %s)", socket_path, ", ".join(r.NAME for r in rules.RULES)
    )
    with contextlib.ExitStack() as metrics:
        if context.client is not None:  # flushed once a second and once more at the stop
            metrics.enter_context(flushing(observations, context.client, histogram_key))
        Milter.runmilter("txmail", f"unix:{socket_path}", timeout=300)
    log.info("stopped")
