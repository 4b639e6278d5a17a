"""What a source of outcomes learned about one recipient, and the event it becomes.

    Finding       what a bounce detector or the maillog follower saw about one recipient,
                  before classification: status, reply code, SMTP command, diagnostic text
    BounceEvent   one recipient's classified outcome (kind, reason, status, diagnostic)

txmail.outcomes.classify turns the first into the second. Plain data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DIAGNOSTIC_CHARS = 1000

KINDS = ("delivery", "bounce", "soft_bounce", "complaint", "auto_reply")


@dataclass(frozen=True, slots=True)
class BounceEvent:
    """One recipient's outcome as reported by one returned mail."""

    kind: str
    recipient: str
    status: str | None
    reason: str
    diagnostic: str
    remote_mta: str | None = None
    reply_code: str | None = None
    feedback_type: str | None = None
    action: str | None = None
    detector: str | None = None
    # where the reason came from: "status" (a specific code or a structured field), "phrase"
    # (an MTA's own wording) or "guess" (txmail.outcomes.reasons.REASON_SOURCES)
    reason_source: str = "guess"

    def summary(self) -> dict[str, str | None]:
        """The fields a bounce report line carries (CLI and scoring)."""
        return {
            "kind": self.kind,
            "recipient": self.recipient,
            "status": self.status,
            "reason": self.reason,
            "diagnostic": self.diagnostic,
        }


@dataclass(slots=True)
class Finding:
    """What a detector learned about one recipient, before classification.

    command is the SMTP command the remote server answered (RCPT, MAIL, DATA,
    HELO, EHLO, CONN for the greeting); reason is set only when the MTA's own
    wording names the reason unambiguously (a detector's phrase table).
    """

    recipient: str
    diagnostic: str = ""
    status: str | None = None
    reply_code: str | None = None
    command: str | None = None
    action: str | None = None
    remote_mta: str | None = None
    reason: str | None = None
    # with reason: "status" when a structured field named it, else it is the MTA's "phrase"
    reason_source: str | None = None
    diagnostic_type: str | None = None
    feedback_type: str | None = None
    temporary: bool | None = None
