"""Japanese carriers' notices (au/EZweb and KDDI's DION).

DESCRIPTION
    au (formerly EZweb) returns "Mail System Error - Returned Mail" from
    Postmaster@ezweb.ne.jp, in Japanese and English, listing each refused
    address (as "<addr>" or "Recipient: <addr>") under "Each of the
    following recipients was rejected by a remote mail server." and,
    when the refusal came from an SMTP server, the dialogue after it
    (">>> RCPT TO:<addr>" / "<<< 550 ...").

    KDDI's mail servers (DION) write "Could not be delivered to: <addr>"
    with the reason on the next line ("As their mailbox is full.").

    The carrier's own sentences name the reason: "The user(s) account is
    disabled." is a suspended account; a refusal with no SMTP dialogue is
    the subscriber's own reception filter (au lets users refuse mail by
    sender or domain), hence "filtered".

FAILURE
    Anything else: None.
"""

from __future__ import annotations

import re

from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes import reasons
from txmail.outcomes.addresses import clean_address
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding
from txmail.outcomes.reasons import reason_table, table_reason

_CARRIER_RE = re.compile(r"@(?:[\w-]+\.)*(?:ezweb\.ne\.jp|au\.com|dion\.ne\.jp)\b", re.I)
_RECIPIENT_RE = re.compile(
    r"^[ \t]*(?:recipient:|could not be delivered to:)?[ \t]*<([^<>\s]+@[^<>\s]+)>[ \t]*$",
    re.I | re.M,
)

_CARRIER_REASONS = reason_table(
    "japan",
    (r"account is disabled|user\(s\) account is disabled", "suspend"),
    (r"mailbox is full|as their mailbox is full", "mailboxfull"),
)


class JapaneseCarrierDetector:
    """au/EZweb refusals and KDDI (DION) notices."""

    name = "japan"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.status_groups or not _CARRIER_RE.search(mail.header_from):
            return None
        notice = mail.notice
        findings: list[Finding] = []
        for match in _RECIPIENT_RE.finditer(notice):
            recipient = clean_address(match.group(1))
            after = notice[match.end() :].split("\n\n", 1)[0]
            replies = " ".join(
                line.strip()[3:].strip()
                for line in after.split("\n")
                if line.strip().startswith("<<<")
            )
            reason = table_reason(_CARRIER_REASONS, notice)
            if reason is None and not replies:
                # A carrier's refusal with no SMTP reply and no wording the shared classifier
                # knows is the recipient's own filter (au/EZweb's documented behaviour).
                known = reasons.classify(Finding(recipient=recipient, diagnostic=notice))
                reason = None if known not in ("onhold", "undefined") else "filtered"
            findings.append(
                Finding(
                    recipient=recipient,
                    diagnostic=replies or " ".join(notice.split()),
                    command=reasons.command_in(after) or "",
                    reason=reason,
                )
            )
        return finish(findings, self.name) or None


DETECTOR = JapaneseCarrierDetector()
