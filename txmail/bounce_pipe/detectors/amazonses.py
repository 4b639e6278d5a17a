"""Amazon SES notifications forwarded by e-mail (SNS "AWS Notification").

DESCRIPTION
    SES reports bounces, complaints and deliveries as JSON, sent through SNS
    to an e-mail subscription: the body is the notification itself or an SNS
    envelope whose "Message" field holds it as a string. One event per
    bouncedRecipients / complainedRecipients / delivery recipient.

    Long JSON lines come folded by the mail system ("!" and a line break),
    which is undone before decoding.

FAILURE
    A body that is not such JSON: None.
"""

from __future__ import annotations

import json
import re
from typing import Any

from txmail.bounce_pipe.detectors.rfc3464 import split_typed
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding

_FOLD_RE = re.compile(r"!\n ?")


class AmazonSesDetector:
    """SES JSON notifications in an e-mail body."""

    name = "amazonses"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        text = mail.notification
        if '"notificationType"' not in text and '\\"notificationType\\"' not in text:
            return None
        notification = _decode(text)
        if notification is None:
            return None
        kind = str(notification.get("notificationType") or notification.get("eventType") or "")
        findings: list[Finding] = []
        if kind == "Bounce":
            bounce = notification.get("bounce") or {}
            temporary = bounce.get("bounceType") == "Transient"
            for entry in bounce.get("bouncedRecipients") or []:
                if isinstance(entry, dict):
                    findings.append(_bounced(entry, temporary))
        elif kind == "Complaint":
            complaint = notification.get("complaint") or {}
            feedback_type = str(complaint.get("complaintFeedbackType") or "abuse")
            for entry in complaint.get("complainedRecipients") or []:
                if isinstance(entry, dict):
                    findings.append(
                        Finding(
                            recipient=str(entry.get("emailAddress", "")),
                            diagnostic=feedback_type,
                            reason="feedback",
                            reason_source="status",
                            feedback_type=feedback_type,
                        )
                    )
        elif kind == "Delivery":
            delivery = notification.get("delivery") or {}
            response = str(delivery.get("smtpResponse") or "")
            for recipient in delivery.get("recipients") or []:
                findings.append(
                    Finding(
                        recipient=str(recipient),
                        diagnostic=response,
                        reason="delivered",
                        reason_source="status",
                        action="delivered",
                    )
                )
        return finish(findings, self.name) or None


def _bounced(entry: dict[str, Any], temporary: bool) -> Finding:
    _, diagnostic = split_typed(str(entry.get("diagnosticCode") or ""))
    return Finding(
        recipient=str(entry.get("emailAddress", "")),
        diagnostic=diagnostic,
        status=str(entry.get("status") or "") or None,
        action=str(entry.get("action") or "") or None,
        temporary=temporary,
    )


def _decode(text: str) -> dict[str, Any] | None:
    body = _FOLD_RE.sub("", text)
    start = body.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("Message"), str):
        try:
            value = json.loads(value["Message"])
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


DETECTOR = AmazonSesDetector()
