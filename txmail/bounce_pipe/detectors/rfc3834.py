"""Auto-replies (RFC 3834): vacation and out-of-office answers.

DESCRIPTION
    An auto-reply is not a failure, but the sender should know the person is
    away (and stop retrying a human address that answers every message).
    One auto_reply event is emitted for the replying address (the From:).

    A message is an auto-reply when it says so in its headers
    (Auto-Submitted: auto-replied, X-Autoreply, X-Autorespond,
    Precedence: auto_reply) or its Subject starts the way vacation programs
    write it ("Auto reply:", "Automatic reply:", "Out of Office", ...), and it
    is not a mail system's failure report (those carry Auto-Submitted too).

FAILURE
    Anything else: None.
"""

from __future__ import annotations

import re

from txmail.bounce_pipe.detectors.blocks import is_service_address
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding

# Subjects vacation programs write; an ordinary "Vacation photos" is not one,
# so bare words like "vacation" or "absence" do not count.
_SUBJECT_RE = re.compile(
    r"^\s*(?:auto(?:matic|matische)?[ -]?(?:reply|response|respons|antwort|réponse|risposta"
    r"|respuesta)\b|autoreply|autoresponse|out of (?:the )?office\b|away from (?:the )?office"
    r"|abwesenheitsnotiz|respuesta automática|réponse automatique|risposta automatica"
    r"|自動応答|自動返信)",
    re.I,
)
_NOT_REPLY_SUBJECT_RE = re.compile(
    r"undeliver|delivery (?:status|fail|notif)|returned mail"
    r"|failure notice|mail delivery|non[- ]?delivery|"
    r"not delivered|rejected|bounce",
    re.I,
)


class AutoReplyDetector:
    """Vacation and out-of-office replies."""

    name = "rfc3834"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.has_dsn_part or mail.feedback_fields or not mail.from_address:
            return None
        if is_service_address(mail.from_address) or _NOT_REPLY_SUBJECT_RE.search(mail.subject):
            return None
        if not self._is_auto_reply(mail):
            return None
        text = mail.notice.strip() or mail.subject
        finding = Finding(
            recipient=mail.from_address, diagnostic=text, reason="vacation", reason_source="status"
        )
        return finish([finding], self.name) or None

    @staticmethod
    def _is_auto_reply(mail: ReturnedMail) -> bool:
        submitted = mail.header("Auto-Submitted").lower()
        if submitted.startswith("auto-replied"):
            return True
        if (
            mail.header("X-Autoreply")
            or mail.header("X-Autorespond")
            or mail.header("X-Autoresponder")
        ):
            return True
        if mail.header("Precedence").strip().lower() == "auto_reply":
            return True
        return bool(_SUBJECT_RE.search(mail.subject))


DETECTOR = AutoReplyDetector()
