"""Drive TxmailMilter through pymilter's TestCtx the way Postfix does, and apply its changes.

Postfix hands the milter the envelope with ESMTP parameters, each header as name and value (no
space after the colon, folded lines joined by a bare newline), the body in chunks with CRLF line
ends, and the queue id in macro `i`. `Conversation.send()` does the same with a .eml file's bytes
and returns what a client and the sink would see: the replies, and the message and envelope after
the milter's changes (header edits, removed recipients, new sender, added headers).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import Milter
from Milter.testctx import TestCtx

from txmail.accounts.records import Accounts
from txmail.config import Settings
from txmail.events import Recorder
from txmail.milter.finish import MilterContext
from txmail.milter.server import TxmailMilter
from txmail.milter.submission import Submission
from txmail.store import Keys
from txmail.store.messages import Messages

QUEUE_ID = "4jXCs06YbRzJJ2Y"
FOLD = re.compile(rb"\r\n(?=[ \t])")


class RecordingCtx(TestCtx):
    """A TestCtx that keeps every modification the milter asks for, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[tuple[Any, ...]] = []

    def addheader(self, field: str, value: str, idx: int) -> None:
        self.actions.append(("addheader", field, value, idx))

    def chgheader(self, field: str, idx: int, value: str) -> None:
        self.actions.append(("chgheader", field, idx, value))

    def addrcpt(self, rcpt: str, params: Any) -> None:
        self.actions.append(("addrcpt", rcpt, params))

    def delrcpt(self, rcpt: str) -> None:
        self.actions.append(("delrcpt", rcpt))

    def chgfrom(self, sender: str, params: Any = None) -> None:
        self.actions.append(("chgfrom", sender, params))


def eom_submission(raw: bytes) -> Submission:
    """A Submission of acme's, at end of message, holding the message `raw` (CRLF)."""
    headers, body = split_headers(raw)
    submission = Submission(
        account="acme",
        domains=("acme.example",),
        sender="app@acme.example",
        recipients=["user@example.net"],
    )
    for header, value in headers:
        submission.add_header(header, value.decode("utf-8", "surrogateescape"))
    submission.add_body(body)
    submission.stage = "eom"
    return submission


def split_headers(eml: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    head, _, body = eml.partition(b"\r\n\r\n")
    headers: list[tuple[str, bytes]] = []
    for line in FOLD.sub(b"\n", head).split(b"\r\n"):
        if not line:
            continue
        name, _, value = line.partition(b":")
        headers.append((name.decode("ascii", "replace"), value.lstrip(b" \t")))
    return headers, body


@dataclass
class Outcome:
    """What the client saw and what would reach the sink."""

    mail_reply: tuple[Any, ...] | None = None
    rcpt_replies: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)
    rc: int | None = None
    reply: tuple[Any, ...] | None = None
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    actions: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.rc == Milter.CONTINUE and self.reply is None

    @property
    def code(self) -> str:
        return f"{self.reply[0]} {self.reply[1]}" if self.reply else ""

    @property
    def text(self) -> str:
        return str(self.reply[2]) if self.reply else ""

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def message(self) -> bytes:
        """The message as Postfix would send it (CRLF line ends)."""
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        return (
            re.sub(rb"\r?\n", b"\r\n", head.encode("utf-8", "surrogateescape"))
            + b"\r\n"
            + self.body
        )


class Conversation:
    """One SMTP connection to the milter, with a MilterContext built for the test."""

    def __init__(self, context: MilterContext, login: str | None) -> None:
        self.context = context
        self.login = login

    def send(
        self,
        eml: bytes,
        sender: str,
        recipients: list[str],
        sender_params: tuple[str, ...] = (),
        recipient_params: dict[str, tuple[str, ...]] | None = None,
        queue_id: str = QUEUE_ID,
        macros: dict[str, str] | None = None,
    ) -> Outcome:
        Milter.factory = lambda: TxmailMilter(self.context)
        ctx = RecordingCtx()
        if self.login:
            ctx._setsymval("{auth_authen}", self.login)
        ctx._setsymval("i", queue_id)
        for name, value in (macros or {}).items():  # e.g. {daemon_name} of the listener
            ctx._setsymval(name, value)
        outcome = Outcome(sender=sender)
        assert ctx._connect() == Milter.CONTINUE
        rc = ctx._envfrom(f"<{sender}>", *sender_params)
        if rc != Milter.CONTINUE:
            outcome.rc, outcome.mail_reply = rc, ctx._reply
            outcome.reply = ctx._reply
            return outcome
        accepted: list[str] = []
        for recipient in recipients:
            ctx._reply = None
            ctx._stage = Milter.M_ENVRCPT
            params = (recipient_params or {}).get(recipient, ())
            rc = ctx._priv.envrcpt(f"<{recipient}>", *params)
            ctx._stage = None
            outcome.rcpt_replies[recipient] = ctx._reply
            if rc == Milter.CONTINUE:
                accepted.append(recipient)
        ctx._reply = None
        headers, body = split_headers(eml)
        for name, value in headers:
            ctx._priv.header_bytes(name, value)
        # Not TestCtx._feed_body: it stops at the first NOREPLY, which libmilter does not.
        stream = io.BytesIO(body)
        while chunk := stream.read(65535):
            ctx._priv.body(chunk)
        outcome.rc = ctx._eom()
        outcome.reply = ctx._reply
        outcome.actions = ctx.actions
        outcome.recipients = accepted
        outcome.headers = [(n, v.decode("utf-8", "surrogateescape")) for n, v in headers]
        outcome.body = ctx._body.getvalue() if ctx._bodyreplaced else body
        if outcome.accepted:
            apply_actions(outcome)
        ctx._close()
        return outcome


def apply_actions(outcome: Outcome) -> None:
    """The message as Postfix would queue it after the milter's changes."""
    headers = list(outcome.headers)
    for action in outcome.actions:
        kind = action[0]
        if kind == "chgheader":
            _, name, index, value = action
            seen = 0
            for position, (key, _) in enumerate(headers):
                if key.lower() == name.lower():
                    seen += 1
                    if seen == index:
                        if value:
                            headers[position] = (key, value)
                        else:
                            del headers[position]
                        break
        elif kind == "addheader":
            _, name, value, index = action
            if index is None or index < 0:
                headers.append((name, value))
            else:
                headers.insert(index, (name, value))
        elif kind == "delrcpt":
            outcome.recipients.remove(action[1].strip("<>"))
        elif kind == "addrcpt":
            outcome.recipients.append(action[1].strip("<>"))
        elif kind == "chgfrom":
            outcome.sender = action[1].strip("<>")
    outcome.headers = headers


def eml(headers: list[tuple[str, str]] | dict[str, str], body: str = "Hello.\r\n") -> bytes:
    """A message with CRLF line ends from (name, value) pairs and a body."""
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    head = "".join(f"{name}: {value}\r\n" for name, value in pairs)
    return (head + "\r\n" + body).encode("utf-8", "surrogateescape")


def basic(
    sender: str = "app@acme.example",
    to: str = "user@example.net",
    extra: list[tuple[str, str]] | None = None,
    body: str = "Hello.\r\n",
) -> bytes:
    return eml(
        [
            ("From", sender),
            ("To", to),
            ("Subject", "test"),
            ("Message-ID", "<m1@acme.example>"),
            *(extra or []),
        ],
        body,
    )


def make_context(
    client: Any, prefix: str, settings: Settings | None = None, **services: Any
) -> MilterContext:
    keys = Keys(prefix)
    services.setdefault("events", Recorder(client, keys))
    return MilterContext(
        settings=settings or Settings(),
        client=client,
        keys=keys,
        accounts=Accounts(client, keys),
        messages=Messages(client, keys, 3600),
        **services,
    )
