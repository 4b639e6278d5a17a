"""Forwarding of returned mail to the original envelope sender (SMTPeter's bounce tracking).

DESCRIPTION
    txmail captures every bounce at its signed return-path address, records it, and then hands
    the customer what the customer asked for with the DSN parameters of RFC 3461, given at
    submission and kept on the message record:

      NOTIFY (per recipient)  FAILURE (the default), DELAY, SUCCESS, or NEVER (nothing);
                              a returned mail is forwarded when the notice it carries for
                              at least one of its recipients is one that recipient asked for:
                              a hard bounce is a FAILURE notice, a soft bounce (Action:
                              delayed) a DELAY notice, a delivery report a SUCCESS notice.
                              A returned mail nobody could read counts as a FAILURE notice.
      RET (per message)       HDRS: the returned message inside the notice is cut to its
                              headers (message/rfc822 becomes text/rfc822-headers);
                              FULL or absent: forwarded as received. The cut is
                              made by the parser worker that read the mail (no key, no
                              Redis), never by the recorder (headers_only_of()).

    Auto-replies (out of office, RFC 3834) are not DSNs: they are forwarded when the account
    sets forward_auto_replies. Complaints (ARF) are never forwarded: they are the mailbox
    provider's report to the sender's operator, recorded as events.
    Nothing is forwarded for a message sent with MAIL FROM:<> (SMTPeter: no envelope address,
    no bounce mail), nor for a bounce whose address token was forged or missing.

    Forwarded mail leaves with a null envelope sender, so a forwarded bounce that bounces
    itself is discarded by Postfix instead of looping. It is handed to Postfix over SMTP on the
    loopback-only reinjection listener (listen.reinject), which relays for 127.0.0.1 only and
    runs no milter.

FAILURE
    ForwardFailed (a TemporaryFailure) when Postfix does not take the mail: the pipe exits 75
    and Postfix retries the whole bounce; recording it again is harmless.
"""

from __future__ import annotations

import email
import smtplib
from collections.abc import Iterable
from email import policy
from email.message import Message

from txmail.errors import TemporaryFailure
from txmail.store.messages import MessageRecord

NOTICE_OF_KIND = {"bounce": "FAILURE", "soft_bounce": "DELAY", "delivery": "SUCCESS"}
DEFAULT_NOTIFY = frozenset({"FAILURE"})


class ForwardFailed(TemporaryFailure):
    """Postfix did not take a forwarded bounce."""


def _params(params: Iterable[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for param in params:
        keyword, _, value = param.partition("=")
        found[keyword.strip().upper()] = value.strip()
    return found


def notify_of(record: MessageRecord, recipient: str) -> frozenset[str]:
    """The NOTIFY values the client gave for `recipient` (default FAILURE)."""
    wanted = recipient.strip().strip("<>").lower()
    for address, params in record.recipient_params.items():
        if address.strip().strip("<>").lower() == wanted:
            notify = _params(params).get("NOTIFY")
            if notify:
                return frozenset(v.strip().upper() for v in notify.split(",") if v.strip())
    return DEFAULT_NOTIFY


def ret_of(record: MessageRecord) -> str:
    """RET=FULL or RET=HDRS as given at MAIL FROM, "" when not given."""
    return _params(record.envelope_params).get("RET", "").upper()


def decide(
    record: MessageRecord,
    kinds_by_recipient: dict[str, str],
    auto_reply: bool,
    unreadable: bool,
    forward_auto_replies: bool,
    trusted: bool,
) -> str | None:
    """Why this returned mail is forwarded (a short phrase for the log), or None."""
    sender = record.envelope_sender.strip().strip("<>")
    if not sender or not trusted:
        return None
    for recipient, kind in kinds_by_recipient.items():
        notice = NOTICE_OF_KIND.get(kind)
        if notice and notice in notify_of(record, recipient):
            return f"NOTIFY={notice} for <{recipient}>"
    if auto_reply and forward_auto_replies:
        return "auto-reply, forward_auto_replies is on"
    if unreadable:
        asked = {v for r in (record.recipients or [""]) for v in notify_of(record, r)}
        if "FAILURE" in asked:
            return "unreadable notice, NOTIFY=FAILURE"
    return None


def headers_only(raw: bytes) -> bytes:
    """The returned mail with every returned message cut to its headers (RET=HDRS).

    A mail the stdlib cannot take apart and write back (a boundary given whole and in RFC 2231
    pieces; a multipart without a boundary holding 8-bit bytes) goes as it came: it returns the
    sender's own message to the sender, which is better than no notice at all."""
    try:
        message = email.message_from_bytes(raw, policy=policy.compat32)
        changed = False
        for part in message.walk():
            if part.get_content_type() not in ("message/rfc822", "message/global"):
                continue
            inner = part.get_payload()
            if not isinstance(inner, list) or not inner or not isinstance(inner[0], Message):
                continue
            # raw_items(): 8-bit bytes stay as they came (items() would make them U+FFFD)
            head = "".join(f"{k}: {v}\n" for k, v in inner[0].raw_items())
            part.set_payload(head)
            # a part of a multipart/digest is message/rfc822 without saying so
            del part["Content-Type"]
            part["Content-Type"] = "text/rfc822-headers"
            changed = True
        return message.as_bytes() if changed else raw
    except (TypeError, UnicodeEncodeError):
        return raw


def headers_only_of(raw: bytes, cut: bytes | None) -> bytes:
    """headers_only(raw) as the parser worker computed it (`cut`, BounceReport.headers_only:
    b"" when it is the mail itself), so the recorder, which runs as root, never takes the
    returned mail apart; only a report parsed in this process (None) is cut here."""
    if cut is None:
        return headers_only(raw)
    return cut or raw


def forward(
    raw: bytes, to: str, queue_id: str, port: int, host: str = "127.0.0.1", timeout: float = 30.0
) -> None:
    """Hand one returned mail to Postfix for `to`, with MAIL FROM:<>."""
    mark = f"X-Txmail-Forwarded-Bounce: {queue_id}\r\n".encode()
    try:
        with smtplib.SMTP(host, port, local_hostname="localhost", timeout=timeout) as smtp:
            smtp.sendmail("<>", [to], mark + raw)
    except (smtplib.SMTPException, OSError) as exc:
        raise ForwardFailed(
            f"{queue_id}: forwarding the bounce to <{to}> failed: "
            f"{exc.__class__.__name__}: {str(exc)[:200]}"
        ) from exc
