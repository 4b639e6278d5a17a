"""Forwarding of returned mail to the original envelope sender (SMTPeter's bounce tracking).

DESCRIPTION
    txmail captures every bounce at its signed return-path address and records it whatever the
    client asked, and then hands the client what the client asked for with the DSN parameters
    of RFC 3461, given at submission and kept on the message record as the client gave them.
    What leaves for the internet asks for more than that: the milter gives every recipient of
    a bounce-tracked message at least NOTIFY=FAILURE,DELAY (milter/notify.py), so remote
    servers and Postfix itself report failures and delays to txmail even under NOTIFY=NEVER.
    The client's own values decide only what is forwarded:

      NOTIFY (per recipient)  FAILURE, DELAY, SUCCESS, or NEVER (no DSN); a recipient
                              without NOTIFY gets FAILURE and DELAY notices, as Postfix
                              gives it (txmail.dsn.DEFAULT_NOTIFY);
                              a delivery notice (a DSN, or an MTA's non-standard notice
                              that txmail read) is forwarded when the notice it carries for
                              at least one of its recipients is one that recipient asked for:
                              a hard bounce is a FAILURE notice, a soft bounce (Action:
                              delayed) a DELAY notice, a delivery report a SUCCESS notice.
      RET (per message)       HDRS: the returned message inside the notice is cut to its
                              headers (message/rfc822 becomes text/rfc822-headers);
                              FULL or absent: forwarded as received. The cut is
                              made by the parser worker that read the mail (no key, no
                              Redis), never by the recorder; the mail's own header block
                              is kept byte for byte. The recorder takes a worker's cut
                              only when it starts with that header block and is not
                              longer than the mail (cut_is_plausible()); otherwise the
                              mail goes as it came (headers_only_of()). So a lying worker
                              can change what follows the header block, never the headers
                              the reinjection listener (no milter) relays.
      ENVID, ORCPT            kept on the queue file as the client gave them, so Postfix's
                              notices carry them (Original-Envelope-Id, Original-Recipient)
                              and the forwarded notice shows them unchanged.

    Returned mail that is not a delivery notice, auto-replies (out of office, RFC 3834) and
    mail txmail could not classify, goes to the envelope address whatever NOTIFY says, as the
    seed has it: with NOTIFY=NEVER the client receives auto-replies and other returned mail
    but no DSNs; with NOTIFY=FAILURE everything. The account setting forward_auto_replies
    (default true) is the override: false keeps auto-replies back and forwards unclassified
    mail only under NOTIFY=FAILURE. Complaints (ARF) are never forwarded: they are the
    mailbox provider's report to the sender's operator, recorded as events. Every holder of
    a bounce address can send it mail, so at most bounce_pipe.forwards_per_message returned
    mails are forwarded per message (report.forward_capped()); later ones are only recorded.
    Nothing is forwarded for a message sent with MAIL FROM:<> (SMTPeter: no envelope address,
    no bounce mail), nor for a bounce whose address token was forged or missing; everything
    is still recorded.

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
import re
import smtplib
from email import errors, policy
from email.message import Message

from txmail import dsn
from txmail.errors import TemporaryFailure
from txmail.store.messages import MessageRecord

NOTICE_OF_KIND = {"bounce": "FAILURE", "soft_bounce": "DELAY", "delivery": "SUCCESS"}


class ForwardFailed(TemporaryFailure):
    """Postfix did not take a forwarded bounce."""


def notify_of(record: MessageRecord, recipient: str) -> frozenset[str]:
    """The NOTIFY values the client gave for `recipient`; without one, FAILURE and DELAY
    (dsn.DEFAULT_NOTIFY: what RFC 3461 allows and Postfix does)."""
    wanted = recipient.strip().strip("<>").lower()
    for address, params in record.recipient_params.items():
        if address.strip().strip("<>").lower() == wanted:
            return dsn.wanted(params)
    return dsn.DEFAULT_NOTIFY


def ret_of(record: MessageRecord) -> str:
    """RET=FULL or RET=HDRS as given at MAIL FROM, "" when not given."""
    return (dsn.esmtp_value(record.envelope_params, "RET") or "").upper()


def decide(
    record: MessageRecord,
    kinds_by_recipient: dict[str, str],
    auto_reply: bool,
    unreadable: bool,
    forward_auto_replies: bool,
    trusted: bool,
) -> str | None:
    """Why this returned mail is forwarded (a short phrase for the log), or None.

    `kinds_by_recipient`: the delivery notices it carries for recipients the token vouches
    for; `auto_reply`: it is an auto-reply; `unreadable`: txmail found no outcome in it;
    `forward_auto_replies`: the account's override (true: as the seed, whatever NOTIFY)."""
    sender = record.envelope_sender.strip().strip("<>")
    if not sender or not trusted:
        return None
    for recipient, kind in kinds_by_recipient.items():
        notice = NOTICE_OF_KIND.get(kind)
        if notice and notice in notify_of(record, recipient):
            return f"NOTIFY={notice} for <{recipient}>"
    if not (auto_reply or unreadable):
        return None
    what = "auto-reply" if auto_reply else "returned mail that is no delivery notice"
    if forward_auto_replies:
        return f"{what}, which the envelope address receives whatever NOTIFY says"
    if unreadable and not auto_reply:
        asked = {v for r in (record.recipients or [""]) for v in notify_of(record, r)}
        if "FAILURE" in asked:
            return f"{what}, NOTIFY=FAILURE"
    return None


_BLANK_LINE = re.compile(rb"(?:^|\n)\r?\n")  # the end of a mail's top-level header block


def header_block(raw: bytes) -> bytes | None:
    """The mail's top-level header block: its bytes up to and including the first blank line
    (None: there is none). Found without parsing: the recorder, as root, uses it too."""
    found = _BLANK_LINE.search(raw)
    return raw[: found.end()] if found else None


def cut_is_plausible(raw: bytes, cut: bytes) -> bool:
    """Whether `cut` may be the RET=HDRS form of `raw`: not longer than the mail, and starting
    with the mail's header block byte for byte (headers_only() never changes it)."""
    head = header_block(raw)
    return head is not None and len(cut) <= len(raw) and cut.startswith(head)


def headers_only(raw: bytes) -> bytes:
    """The returned mail with every returned message cut to its headers (RET=HDRS). The mail's
    own header block stays as it came, byte for byte; only what follows it is written anew.

    A mail the stdlib cannot take apart and write back (a boundary given whole and in RFC 2231
    pieces; a multipart without a boundary holding 8-bit bytes), or whose header block the
    stdlib ends elsewhere than at the first blank line (a bare CR, a line that is no header),
    goes as it came: it returns the sender's own message to the sender, which is better than
    no notice at all."""
    head = header_block(raw)
    if head is None or b"\r" in head.replace(b"\r\n", b""):
        return raw
    try:
        message = email.message_from_bytes(raw, policy=policy.compat32)
        if any(isinstance(d, errors.MissingHeaderBodySeparatorDefect) for d in message.defects):
            return raw
        changed = False
        for part in message.walk():
            if part.get_content_type() not in ("message/rfc822", "message/global"):
                continue
            inner = part.get_payload()
            if not isinstance(inner, list) or not inner or not isinstance(inner[0], Message):
                continue
            # raw_items(): 8-bit bytes stay as they came (items() would make them U+FFFD)
            head_of_inner = "".join(f"{k}: {v}\n" for k, v in inner[0].raw_items())
            part.set_payload(head_of_inner)
            # a part of a multipart/digest is message/rfc822 without saying so
            del part["Content-Type"]
            part["Content-Type"] = "text/rfc822-headers"
            changed = True
        if not changed:
            return raw
        linesep = "\r\n" if head.endswith(b"\r\n") else "\n"
        written = message.as_bytes(policy=policy.compat32.clone(linesep=linesep))
        _, blank, body = written.partition(linesep.encode() * 2)
    except (TypeError, UnicodeEncodeError, errors.MessageError):
        return raw
    cut = head + body
    return cut if blank and cut_is_plausible(raw, cut) else raw


def headers_only_of(raw: bytes, cut: bytes | None) -> bytes:
    """headers_only(raw) as the parser worker computed it (`cut`, BounceReport.headers_only:
    b"" when it is the mail itself), so the recorder, which runs as root, never takes the
    returned mail apart; only a report parsed in this process (None) is cut here. A cut that
    cannot be the mail's (cut_is_plausible()) is not believed: the mail goes as it came."""
    if cut is None:
        return headers_only(raw)
    return cut if cut and cut_is_plausible(raw, cut) else raw


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
