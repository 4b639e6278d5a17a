"""Gmail and Google Groups notices that carry no DSN part.

DESCRIPTION
    Gmail's older notices list the recipient under "Delivery to the
    following recipient failed permanently:" (or "... has been delayed:")
    and explain under "Technical details of permanent (temporary) failure:",
    quoting the remote server after "The error that the other server
    returned was:" with a trailing "(state N)".

    Google Groups and Google Workspace refusals ("the group you tried to
    contact may not exist, or you may not have permission to post", "Send
    mail as" misconfigured) come in many languages; they name the refused
    address in X-Failed-Recipients and mean the sender was refused.

FAILURE
    Anything else: None.
"""

from __future__ import annotations

import re

from txmail.bounce_pipe.detectors.blocks import recipient_blocks, section
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.addresses import clean_address
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding
from txmail.outcomes.reasons import reason_table, table_reason

_HEADING = re.compile(
    r"delivery to the following recipients? (?:failed permanently|has been delayed|failed):?", re.I
)
_DETAILS = re.compile(r"technical details of (?:permanent|temporary) failure:?", re.I)
_RETURNED = re.compile(r"the error that the other server returned was:?", re.I)
_STATE = re.compile(r"\s*\(state \d+\)\.?")

# Gmail's own sentences, which come without a remote reply.
_GMAIL_REASONS = reason_table(
    "gmail",
    (r"did not accept our requests to connect", "expired"),
    (r"does not support tls", "systemerror"),
    (r"storage quota exceeded|over (?:their|its) storage", "mailboxfull"),
    (r"dns error|domain name not found", "hostunknown"),
)


class GmailDetector:
    """Gmail's plain notices and Google Groups refusals."""

    name = "gmail"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.status_groups:
            return None
        lower = mail.notification_lower
        if _HEADING.search(mail.notice):
            return self._gmail(mail)
        google = "google" in mail.header_from.lower() or "google" in lower
        failed = mail.header("X-Failed-Recipients")
        if (
            google
            and failed
            and ("groups" in lower or "send mail as" in lower or "group" in mail.notice.lower())
        ):
            recipients = [clean_address(a) for a in failed.split(",")]
            text = mail.notice.strip()
            findings = [
                Finding(recipient=r, diagnostic=text, reason="rejected") for r in recipients if r
            ]
            return finish(findings, self.name) or None
        return None

    def _gmail(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        notice = mail.notice
        listed = section(notice, _HEADING, _DETAILS)
        details = section(notice, _DETAILS)
        temporary = "temporary failure" in notice.lower()
        delayed = "has been delayed" in notice.lower()
        returned = section(details, _RETURNED) if _RETURNED.search(details) else ""
        diagnostic = _STATE.sub(" ", returned or details).strip()
        findings: list[Finding] = []
        for block in recipient_blocks(listed):
            reason = table_reason(_GMAIL_REASONS, diagnostic)
            if not diagnostic and delayed:
                reason = "expired"
            findings.append(
                Finding(
                    recipient=block.recipient,
                    diagnostic=diagnostic or section(notice, _HEADING).strip(),
                    reason=reason,
                    action="delayed" if delayed else "failed",
                    temporary=temporary,
                )
            )
        return finish(findings, self.name) or None


DETECTOR = GmailDetector()
