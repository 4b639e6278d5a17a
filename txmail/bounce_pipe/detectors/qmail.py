"""qmail and the servers that copy its failure notice (vpopmail, Yahoo, ...).

DESCRIPTION
    qmail-send writes "Hi. This is the qmail-send program at ..." and then one
    paragraph per recipient, the address in angle brackets followed by a
    colon:

        <kijitora@example.jp>:
        192.0.2.153 does not like recipient.
        Remote host said: 550 5.1.1 <kijitora@example.jp>... User Unknown
        Giving up on 192.0.2.153.

    Many hosted systems built on qmail (Yahoo's old MTA, GoDaddy,
    Outblaze, MessageLabs' old gateway) keep the layout with other
    sentences around it, so any notice made of such paragraphs is read here.
    qmail's own sentences name the SMTP stage ("does not like recipient" is
    RCPT, "failed after I sent the message" is DATA, "sender was rejected"
    is MAIL) and some reasons outright.

FAILURE
    Without '<address>:' paragraphs, or when the envelope does not look like
    a mail system's report, the detector returns None.
"""

from __future__ import annotations

from txmail.bounce_pipe.detectors.blocks import (
    is_service_address,
    looks_like_bounce,
    recipient_blocks,
)
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes import reasons
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding
from txmail.outcomes.reasons import reason_table, table_reason

_SIGNATURES = (
    "this is the qmail-send program",
    "--- below this line is a copy of the message",
    "--- enclosed is a copy of the message",
    "unable to deliver message to the following address",
    "sorry, we were unable to deliver your message to the following address",
    "wasn't able to deliver your message to the following addresses",
    "was not able to deliver your message to the following addresses",
    "was unable to deliver your message to the following addresses",
    "could not be delivered. this is a permanent error",
    "problem with the e-mail address(es) you're trying",
)

# qmail's (and vpopmail's) own sentences.
_QMAIL_REASONS = reason_table(
    "qmail",
    (r"no mailbox here by that name", "userunknown"),
    (r"couldn't find any host named", "hostunknown"),
    (r"couldn't find a mail exchanger or ip address", "notaccept"),
    (r"wasn't able to establish an smtp connection", "networkerror"),
    (r"account is locked|account is disabled", "suspend"),
    (r"mailfolder is full|disk quota exceeded|mailbox is full|over quota", "mailboxfull"),
    (r"message is looping|mail loop", "networkerror"),
)


class QmailDetector:
    """Notices made of '<recipient>:' paragraphs."""

    name = "qmail"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if ">:" not in mail.notification:
            # No "<recipient>:" line anywhere: nothing for this layout.
            return None
        lower = mail.notification_lower
        signed = any(s in lower for s in _SIGNATURES)
        if not signed and not looks_like_bounce(mail):
            return None
        blocks = recipient_blocks(mail.notice, need_colon=True)
        blocks = [
            b for b in blocks if not is_service_address(b.recipient) and b.line.lstrip()[:1] == "<"
        ]
        if not blocks:
            return None
        findings: list[Finding] = []
        for block in blocks:
            text = block.text
            reason = table_reason(_QMAIL_REASONS, text)
            if (
                reason is None
                and "queue too long" in text.lower()
                and "remote host said" not in text.lower()
                # what failed before the queue gave up (no connection, ...) says more
                and reasons.classify(Finding(recipient=block.recipient, diagnostic=text))
                in ("onhold", "undefined", "expired")
            ):
                reason = "expired"
            findings.append(Finding(recipient=block.recipient, diagnostic=text, reason=reason))
        return finish(findings, self.name) or None


DETECTOR = QmailDetector()
