"""Postfix notices that came without a DSN part.

DESCRIPTION
    Postfix writes "This is the mail system at host HOST." (older releases:
    "This is the Postfix program at host HOST.") and one paragraph per
    recipient, folded and indented:

        <kijitora@example.jp>: host mx.example.jp[192.0.2.22] said: 550
            5.1.1 <kijitora@example.jp>: User unknown (in reply to RCPT TO
            command)

    Normally a message/delivery-status part follows and the RFC 3464
    detector reads both; this one reads the text when that part is missing
    (old Postfix, or a relay that stripped it). Postfix names the SMTP stage
    "(in reply to ... command)" and its own failures in words ("connect to
    ...: Connection timed out", "Host not found, try again").

FAILURE
    Without Postfix's greeting line or any recipient paragraph: None.
"""

from __future__ import annotations

from txmail.bounce_pipe.detectors.blocks import is_service_address, recipient_blocks
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding

_SIGNATURES = ("this is the mail system at host", "this is the postfix program at host")


class PostfixDetector:
    """Postfix's recipient paragraphs without a DSN."""

    name = "postfix"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.status_groups or not any(s in mail.notification_lower for s in _SIGNATURES):
            return None
        lower = mail.notification_lower
        # "delivery temporarily suspended" and delay notices are not final.
        temporary = "temporarily suspended" in lower or "delayed mail" in mail.subject.lower()
        findings = [
            Finding(recipient=block.recipient, diagnostic=block.text, temporary=temporary or None)
            for block in recipient_blocks(mail.notice, need_colon=True)
            if not is_service_address(block.recipient)
        ]
        return finish(findings, self.name) or None


DETECTOR = PostfixDetector()
