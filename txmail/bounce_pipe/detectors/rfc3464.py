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

import re

from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes import reasons
from txmail.outcomes.addresses import clean_address
from txmail.outcomes.classify import finish, squeeze
from txmail.outcomes.findings import BounceEvent, Finding


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


_ANGLED_RE = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
SMTP_COMMANDS = {"RCPT": "RCPT", "MAIL": "MAIL", "DATA": "DATA", "HELO": "HELO", "EHLO": "HELO"}


def transcript_reply(context: str, recipient: str = "") -> tuple[str | None, str]:
    """From a '>>> command / <<< reply' transcript: the command and the replies.

    A reply to "RCPT To:<other>", or one that names <other>, belongs to that
    other recipient and is skipped; replies to MAIL, DATA or the greeting
    concern every recipient.
    """
    command: str | None = None
    about_other = False
    failed_command: str | None = None
    replies: list[str] = []
    wanted = recipient.lower()
    for line in context.split("\n"):
        stripped = line.strip()
        if stripped.startswith(">>>"):
            sent = stripped[3:].strip()
            command = SMTP_COMMANDS.get(sent.split(" ", 1)[0].split(":", 1)[0].upper())
            about_other = command == "RCPT" and bool(wanted) and wanted not in sent.lower()
        elif stripped.startswith("<<<"):
            reply = stripped[3:].strip()
            named = _ANGLED_RE.findall(reply.lower())
            if command != "MAIL" and wanted and named and wanted not in named:
                # Pipelined RCPT replies arrive after ">>> DATA"; one that
                # names another recipient is about that recipient.
                continue
            if reply[:1] in ("4", "5") and not about_other:
                replies.append(reply)
                if failed_command is None:
                    failed_command = command
    return failed_command, " <<< ".join(replies)


# PowerMTA classifies each bounce itself (X-PowerMTA-BounceCategory); its
# documented categories map onto reason words directly.
_POWERMTA_CATEGORIES = {
    "bad-mailbox": "userunknown",
    "inactive-mailbox": "suspend",
    "bad-domain": "hostunknown",
    "quota-issues": "mailboxfull",
    "message-expired": "expired",
    "no-answer-from-host": "expired",
    "routing-errors": "networkerror",
    "bad-connection": "networkerror",
    "relaying-issues": "norelaying",
    "invalid-sender": "rejected",
    "spam-related": "spamdetected",
    "virus-related": "virusdetected",
    "policy-related": "policyviolation",
    "content-related": "contenterror",
    "protocol-errors": "syntaxerror",
    "bad-configuration": "systemerror",
}


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
            recipient = _recipient(group, notice)
            if not recipient:
                continue
            diagnostic_type, diagnostic = split_typed(group.get("diagnostic-code", ""))
            context = recipient_context(notice, recipient) or (notice if only_one else "")
            command, replies = transcript_reply(context, recipient)
            if not diagnostic:
                diagnostic = replies.replace(" <<< ", " ") or squeeze(context)
            elif replies and replies.replace(" <<< ", " ") not in diagnostic:
                # Sendmail's transcript often says more than its Diagnostic-Code.
                diagnostic = replies.replace(" <<< ", " ") + " " + diagnostic
            status = reasons.status_in(group.get("status", ""))
            first_reply = replies.split(" <<< ")[0] if replies else ""
            status = _prefer_specific(status, first_reply or diagnostic, bool(first_reply))
            remote = split_typed(group.get("remote-mta", ""))[1] or None
            action = (group.get("action", "").split() or [""])[0].lower() or None
            category = group.get("x-powermta-bouncecategory", "").strip().lower()
            findings.append(
                Finding(
                    recipient=recipient,
                    diagnostic=diagnostic,
                    status=status,
                    # "" says the text was read and named no command.
                    command=command or reasons.command_in(context + "\n" + diagnostic) or "",
                    action=action,
                    remote_mta=remote,
                    diagnostic_type=diagnostic_type or None,
                    reason=_POWERMTA_CATEGORIES.get(category),
                    reason_source="status",  # PowerMTA's bounce-category field
                )
            )
        return finish(findings, self.name) or None


def _recipient(group: dict[str, str], notice: str) -> str:
    final = clean_address(group.get("final-recipient", ""))
    original = clean_address(group.get("original-recipient", ""))
    if (
        final
        and original
        and original != final
        and f"original address: {original}" in notice.lower()
    ):
        # Sun/Oracle Messaging Server rewrites the recipient to an internal
        # channel address and prints the one the sender used beside it.
        return original
    return final or original or clean_address(group.get("x-actual-recipient", ""))


def _specificity(status: str) -> int:
    # X.0.0 says "failed"; X.1.0 ("address error") and X.4.7 ("gave up
    # after retries") are the reporting MTA's own broad conclusions.
    if status.endswith(".0.0"):
        return 0
    if status.endswith((".1.0", ".4.7")):
        return 1
    return 2


def _prefer_specific(
    field_status: str | None, diagnostic: str, from_transcript: bool
) -> str | None:
    """The status to report: the Status field, unless the reply says more.

    A field code gives way to the first code of the same class in the remote
    server's reply that is more specific; any field code gives way to the
    reply's own when the reply comes from a '<<<' transcript, which is what
    the server said.
    """
    codes = reasons.statuses_in(diagnostic)
    if field_status is None:
        return codes[0] if codes else None
    same_class = [c for c in codes if c[0] == field_status[0] and c != field_status]
    if from_transcript and same_class and _specificity(same_class[0]) >= _specificity(field_status):
        return same_class[0]
    best = max(same_class, key=_specificity, default=field_status)
    return best if _specificity(best) > _specificity(field_status) else field_status


DETECTOR = DeliveryStatusDetector()
