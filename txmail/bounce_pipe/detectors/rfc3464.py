"""RFC 3464 delivery status notifications (Postfix, Sendmail, Exchange, ...).

DESCRIPTION
    Reads the per-recipient groups of a message/delivery-status part (or of
    DSN fields an MTA printed inline): Final-Recipient, Action, Status,
    Remote-MTA, Diagnostic-Code. The human-readable part is read too, for
    what the fields leave out: the SMTP command the remote server answered
    ("in reply to RCPT TO command", a Sendmail ">>> DATA" transcript) and,
    when Diagnostic-Code is missing, the text printed about the recipient.

FAILURE
    Groups without a usable recipient address are skipped; a DSN with none
    left is not this detector's (None).
"""

from __future__ import annotations

from txmail.bounce_pipe import reasons
from txmail.bounce_pipe.detectors.base import (
    BounceEvent,
    Finding,
    ReturnedMail,
    clean_address,
    finish,
    squeeze,
)


def split_typed(value: str) -> tuple[str, str]:
    """'smtp; 550 5.1.1 ...' as ('SMTP', '550 5.1.1 ...')."""
    kind, sep, rest = value.partition(";")
    if sep and kind.strip() and " " not in kind.strip() and len(kind.strip()) < 40:
        return kind.strip().upper(), rest.strip()
    return "", value.strip()


def recipient_context(notice: str, recipient: str) -> str:
    """The paragraphs of the notice that speak about one recipient.

    A paragraph naming the recipient and the one after it (where Sendmail
    prints its '... while talking to' transcript) are returned.
    """
    if not recipient:
        return ""
    paragraphs = [p for p in notice.split("\n\n") if p.strip()]
    wanted = recipient.lower()
    picked: list[str] = []
    for index, paragraph in enumerate(paragraphs):
        if wanted in paragraph.lower():
            picked.append(paragraph)
            if index + 1 < len(paragraphs) and paragraphs[index + 1] not in picked:
                following = paragraphs[index + 1]
                if ">>>" in following or "<<<" in following or following.lstrip().startswith("..."):
                    picked.append(following)
    return "\n".join(picked)


def transcript_reply(context: str) -> tuple[str | None, str]:
    """From a '>>> command / <<< reply' transcript: the command and the replies."""
    command: str | None = None
    failed_command: str | None = None
    replies: list[str] = []
    for line in context.split("\n"):
        stripped = line.strip()
        if stripped.startswith(">>>"):
            word = stripped[3:].strip().split(" ", 1)[0].split(":", 1)[0].upper()
            command = {
                "RCPT": "RCPT",
                "MAIL": "MAIL",
                "DATA": "DATA",
                "HELO": "HELO",
                "EHLO": "HELO",
            }.get(word)
        elif stripped.startswith("<<<"):
            reply = stripped[3:].strip()
            if reply[:1] in ("4", "5"):
                replies.append(reply)
                if failed_command is None:
                    failed_command = command
    return failed_command, " ".join(replies)


class DeliveryStatusDetector:
    """Standard DSNs: one finding per Final-Recipient group."""

    name = "rfc3464"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if not mail.status_groups:
            return None
        notice = mail.notice
        findings: list[Finding] = []
        only_one = len(mail.status_groups) == 1
        for group in mail.status_groups:
            recipient = (
                clean_address(group.get("final-recipient", ""))
                or clean_address(group.get("original-recipient", ""))
                or clean_address(group.get("x-actual-recipient", ""))
            )
            if not recipient:
                continue
            diagnostic_type, diagnostic = split_typed(group.get("diagnostic-code", ""))
            context = recipient_context(notice, recipient) or (notice if only_one else "")
            command, replies = transcript_reply(context)
            if not diagnostic:
                diagnostic = replies or _context_text(context, recipient)
            elif replies and replies not in diagnostic:
                # Sendmail's transcript often says more than its Diagnostic-Code.
                diagnostic = replies + " " + diagnostic
            status = reasons.status_in(group.get("status", ""))
            status = _prefer_specific(status, reasons.status_in(diagnostic))
            remote = split_typed(group.get("remote-mta", ""))[1] or None
            action = (group.get("action", "").split() or [""])[0].lower() or None
            findings.append(
                Finding(
                    recipient=recipient,
                    diagnostic=diagnostic,
                    status=status,
                    command=command
                    or reasons.command_in(context)
                    or reasons.command_in(diagnostic),
                    action=action,
                    remote_mta=remote,
                    diagnostic_type=diagnostic_type or None,
                )
            )
        return finish(findings, self.name) or None


def _prefer_specific(field_status: str | None, text_status: str | None) -> str | None:
    # A generic X.0.0 in the Status field says less than the code the remote
    # server gave in its reply, when both are of the same class.
    if (
        field_status
        and text_status
        and field_status.endswith(".0.0")
        and text_status[0] == field_status[0]
    ):
        return text_status
    return field_status or text_status


def _context_text(context: str, recipient: str) -> str:
    if not context:
        return ""
    return squeeze(context)


DETECTOR = DeliveryStatusDetector()
