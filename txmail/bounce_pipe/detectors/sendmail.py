"""Sendmail notices without a DSN part (V5/V8 "Returned mail" messages).

DESCRIPTION
    Sendmail without DSN support, and gateways that imitate it, write
    "----- The following addresses had permanent fatal errors -----" with
    the recipients, and "----- Transcript of session follows -----" with
    what the remote server said:

        ... while talking to mx.example.edu:
        >>> MAIL From:<sender@example.jp>
        <<< 550 Insecure Mail Relay
        554 <kijitora@example.edu>... Remote protocol error

    Each "NNN <recipient>... text" line is a failed recipient; the
    '>>>'/'<<<' dialogue just before it says at which SMTP stage and with
    which reply. A "(reason: ...)" line under a listed address says why. A
    failure of a whole host ("421 example.com (smtp)... Deferred: ...")
    applies to the returned message's recipients at that host.

FAILURE
    Without Sendmail's markers or any recipient: None.
"""

from __future__ import annotations

import re

from txmail.bounce_pipe.detectors.blocks import is_service_address, looks_like_bounce
from txmail.bounce_pipe.detectors.rfc3464 import SMTP_COMMANDS
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.addresses import ADDRESS_RE, clean_address
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding

_MARKERS = (
    "----- transcript of session follows -----",
    "following addresses had permanent fatal errors",
    "following addresses had transient non-fatal errors",
    "following addresses had permanent delivery errors",
)
_LISTED_RE = re.compile(
    r"-{3,}\s*the following addresses? had (?:permanent|transient)[^\n]*-{3,}\n"
    r"(.*?)(?=\n\s*-{3,}|\Z)",
    re.I | re.S,
)
_RECIPIENT_LINE_RE = re.compile(r"^\s*(?:>>>\s*)?<?(" + ADDRESS_RE.pattern + r")>?", re.M)
_REASON_RE = re.compile(r"\(reason:\s*(.*?)\)\s*$", re.I | re.M)
_TRANSCRIPT_LINE_RE = re.compile(r"^\s*([245]\d\d)\s+<([^<>\s]+@[^<>\s]+)>\.\.\.\s*(.*)$")
_HOST_LINE_RE = re.compile(
    r"^\s*([245]\d\d)\s+([A-Za-z0-9.-]+\.[A-Za-z]{2,})\s+\(\w+\)\.\.\.\s*(.*)$"
)


class SendmailDetector:
    """Sendmail's own text when no message/delivery-status came with it."""

    name = "sendmail"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.status_groups or not any(m in mail.notification_lower for m in _MARKERS):
            return None
        if not looks_like_bounce(mail):
            return None
        notice = mail.notice
        findings = self._transcript(notice, mail)
        found = {f.recipient for f in findings}
        for recipient, reason in self._listed(notice):
            if recipient not in found:
                findings.append(
                    Finding(recipient=recipient, diagnostic=reason or _transcript_text(notice))
                )
                found.add(recipient)
        return (
            finish([f for f in findings if not is_service_address(f.recipient)], self.name) or None
        )

    @staticmethod
    def _listed(notice: str) -> list[tuple[str, str]]:
        listed: list[tuple[str, str]] = []
        for section in _LISTED_RE.finditer(notice):
            body = section.group(1)
            why = _REASON_RE.findall(body)
            for index, match in enumerate(_RECIPIENT_LINE_RE.finditer(body)):
                reason = why[index] if index < len(why) else ""
                listed.append((clean_address(match.group(1)), reason))
        return listed

    @staticmethod
    def _transcript(notice: str, mail: ReturnedMail) -> list[Finding]:
        findings: list[Finding] = []
        command: str | None = None
        reply = ""
        for line in notice.split("\n"):
            stripped = line.strip()
            if stripped.startswith(">>>"):
                word = stripped[3:].strip().split(" ", 1)[0].split(":", 1)[0].upper()
                command, reply = SMTP_COMMANDS.get(word), ""
                continue
            if stripped.startswith("<<<"):
                if stripped[3:].strip()[:1] in ("4", "5") and not reply:
                    reply = stripped[3:].strip()
                continue
            if stripped.lower().startswith(("... while talking to", "while talking to")):
                command, reply = None, ""
                continue
            match = _TRANSCRIPT_LINE_RE.match(line)
            if match:
                text = " ".join(t for t in (reply, match.group(3)) if t)
                findings.append(
                    Finding(
                        recipient=clean_address(match.group(2)),
                        diagnostic=text,
                        reply_code=match.group(1),
                        command=command if reply else None,
                    )
                )
                continue
            host = _HOST_LINE_RE.match(line)
            if host and not findings:
                # A whole host failed: its recipients in the returned message.
                domain = host.group(2).lower()
                for value in mail.original_headers("To") + mail.original_headers("Cc"):
                    for address in ADDRESS_RE.findall(value):
                        if address.lower().endswith("@" + domain):
                            findings.append(
                                Finding(
                                    recipient=address,
                                    diagnostic=host.group(3),
                                    reply_code=host.group(1),
                                    temporary=host.group(1)[0] == "4",
                                )
                            )
        return findings


def _transcript_text(notice: str) -> str:
    at = notice.lower().find("transcript of session follows")
    if at < 0:
        return ""
    return notice[at:].split("\n", 1)[1] if "\n" in notice[at:] else ""


DETECTOR = SendmailDetector()
