"""DragonFly Mail Agent (dma) failure notices.

DESCRIPTION
    dma writes "This is the DragonFly Mail Agent ... at HOST." and then
    "There was an error delivering your mail to <recipient>." followed by
    one paragraph: the remote server's reply ("host [ip] did not like our
    RCPT TO: 550 ...") or dma's own words ("Could not deliver for the last N
    seconds. Giving up.", "DNS lookup failure: host ... not found").

FAILURE
    Anything else: None.
"""

from __future__ import annotations

import re

from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.addresses import clean_address
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding
from txmail.outcomes.reasons import reason_table, table_reason

_ERROR_RE = re.compile(
    r"there was an error delivering your mail to <([^>\s]+)>\.?\s*\n+(.*?)(?:\n\s*\n|\Z)",
    re.I | re.S,
)

_DMA_REASONS = reason_table(
    "dragonfly",
    (r"could not deliver for the last \d+ seconds", "expired"),
    (r"dns lookup failure", "hostunknown"),
)


class DragonFlyDetector:
    """dma: one recipient per notice."""

    name = "dragonfly"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if "dragonfly mail agent" not in mail.notification_lower:
            return None
        findings: list[Finding] = []
        for match in _ERROR_RE.finditer(mail.notice):
            text = match.group(2).strip()
            reason = table_reason(_DMA_REASONS, text)
            findings.append(
                Finding(recipient=clean_address(match.group(1)), diagnostic=text, reason=reason)
            )
        return finish(findings, self.name) or None


DETECTOR = DragonFlyDetector()
