"""Complaint feedback reports: ARF (RFC 5965) and providers' variants.

DESCRIPTION
    A feedback report says a recipient complained (marked the message as
    spam, asked to unsubscribe, or a receiver reports an authentication
    failure). It yields one complaint event per complaining recipient:

      - RFC 5965 reports: a message/feedback-report part whose
        Original-Rcpt-To (or Removal-Recipient) fields name the recipients;
        without them, the To: of the returned message does.
      - Outlook.com / Hotmail JMRP reports: the reported message comes back
        as message/rfc822 with X-HmXmrOriginalRecipient.
      - Apple Mail's one-click unsubscribe: the recipient writes to the
        List-Unsubscribe address with X-Apple-Unsubscribe: true.

    feedback_type carries Feedback-Type (abuse, opt-out, auth-failure, ...).

FAILURE
    Not a report of these kinds: None.
"""

from __future__ import annotations

from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.addresses import ADDRESS_RE, clean_address
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding

_RECIPIENT_FIELDS = ("original-rcpt-to", "removal-recipient")


class FeedbackReportDetector:
    """ARF complaint reports and the Microsoft and Apple variants."""

    name = "arf"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.feedback_fields:
            return self._arf(mail)
        if mail.header("X-Apple-Unsubscribe").strip().lower() == "true" and mail.from_address:
            return self._events(mail, [mail.from_address], "opt-out")
        recipient = self._jmrp_recipient(mail)
        if recipient:
            return self._events(mail, [recipient], "abuse")
        return None

    def _arf(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        recipients: list[str] = []
        # field_blocks keeps the first of repeated names; a report may list
        # several Original-Rcpt-To fields, so read them line by line.
        for line in mail.feedback_text.split("\n"):
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() in _RECIPIENT_FIELDS:
                address = clean_address(value)
                if address and address not in recipients:
                    recipients.append(address)
        if not recipients:
            for value in mail.original_headers("To"):
                recipients.extend(a.lower() for a in ADDRESS_RE.findall(value))
        if not recipients:
            return None
        feedback_type = mail.feedback_fields.get("feedback-type", "").strip().lower() or "abuse"
        return self._events(mail, recipients, feedback_type)

    @staticmethod
    def _jmrp_recipient(mail: ReturnedMail) -> str:
        if mail.original is None:
            return ""
        return clean_address(str(mail.original.get("X-HmXmrOriginalRecipient", "")))

    def _events(
        self, mail: ReturnedMail, recipients: list[str], feedback_type: str
    ) -> list[BounceEvent] | None:
        summary = _first_paragraph(mail.notice) or mail.subject
        findings = [
            Finding(
                recipient=r,
                diagnostic=summary,
                reason="feedback",
                feedback_type=feedback_type,
                reason_source="status",
            )
            for r in recipients
        ]
        return finish(findings, self.name) or None


def _first_paragraph(text: str) -> str:
    for paragraph in text.split("\n\n"):
        words = paragraph.strip()
        if words and not words.lower().startswith(("hello", "hi,", "dear")):
            return words
    return ""


DETECTOR = FeedbackReportDetector()
