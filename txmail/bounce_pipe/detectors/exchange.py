"""Microsoft Exchange (2000/2003 and later) and Office 365 plain notices.

DESCRIPTION
    Exchange 2000/2003 writes "Your message ... did not reach the following
    recipient(s):" and one line per recipient ("addr on DATE", sometimes an
    X.400 form with "SMTP=addr"), with the reason and an MSEXCH diagnostic
    indented under it; "The recipient name is not recognized" and the code
    000C05A6 mean the address does not exist.

    Later Exchange and Office 365 notices that lost their DSN part say
    "Delivery has failed to these recipients or groups:" and quote the
    remote server in "Remote Server returned '550 5.1.1 ...'". Other Windows
    servers (hMailServer, MailEnable) print "The following recipient(s)
    could not be reached:" in the same spirit.

FAILURE
    Anything else: None.
"""

from __future__ import annotations

import re

from txmail.bounce_pipe.detectors.blocks import is_service_address, looks_like_bounce, section
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.addresses import ADDRESS_RE, clean_address
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding
from txmail.outcomes.reasons import reason_table, table_reason

_HEADING = re.compile(
    r"(?:did not reach the following recipient\(s\):"
    r"|the following recipient\(s\) could not be reached:"
    r"|delivery has failed to these recipients or (?:groups|distribution lists):"
    r"|could not be delivered to the following (?:user|recipients?):)",
    re.I,
)
_END = re.compile(
    r"^\s*(?:-{3,}|_{3,}|diagnostic information for administrators|original message headers|"
    r"the original message was|message headers follow)",
    re.I | re.M,
)
_REMOTE = re.compile(r"remote server (?:returned|replied):?\s*'?([^'\n]*)", re.I)

_EXCHANGE_REASONS = reason_table(
    "exchange",
    (r"recipient name is not recognized|\(000c05a6\)|unknown recipient", "userunknown"),
    (r"is being held until the list moderator", "policyviolation"),
)


class ExchangeDetector:
    """Exchange and Windows mail servers' plain-text notices."""

    name = "exchange"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.has_dsn_part or not _HEADING.search(mail.notice):
            return None
        if not looks_like_bounce(mail):
            return None
        part = section(mail.notice, _HEADING, _END)
        admin = section(
            mail.notification, re.compile(r"diagnostic information for administrators:?", re.I)
        )
        findings: list[Finding] = []
        current: Finding | None = None
        for line in part.split("\n"):
            stripped = line.strip()
            if not stripped:
                continue
            address = _recipient_in(stripped)
            if address and (
                current is None
                or not line.startswith((" ", "\t"))
                or stripped.split()[0] == address
            ):
                current = Finding(recipient=address, diagnostic=_after_address(stripped))
                findings.append(current)
            elif current is not None:
                current.diagnostic = (current.diagnostic + " " + stripped).strip()
        for found in findings:
            remote = _REMOTE.search(admin or found.diagnostic)
            text = found.diagnostic + " " + admin
            found.reason = table_reason(_EXCHANGE_REASONS, text)
            if remote:
                found.diagnostic = remote.group(1).strip()
            elif admin and not found.diagnostic:
                found.diagnostic = admin.strip()
            if "hmailserver sent: rcpt" in text.lower() or re.search(r"sent: rcpt to", text, re.I):
                found.command = "RCPT"
        findings = [f for f in findings if not is_service_address(f.recipient)]
        return finish(findings, self.name) or None


def _recipient_in(line: str) -> str:
    smtp = re.search(r"smtp=([^;\s]+@[^;\s]+)", line, re.I)
    if smtp:
        return clean_address(smtp.group(1))
    match = ADDRESS_RE.match(line.strip('"<* '))
    if match:
        return clean_address(match.group(0))
    quoted = re.match(r'"[^"]*"\s*<([^>]+)>', line)
    if quoted:
        return clean_address(quoted.group(1))
    return ""


def _after_address(line: str) -> str:
    rest = re.sub(r"^\S+@\S+(?:<mailto:[^>]*>)?", "", line).strip()
    return "" if re.match(r"^on \w", rest) else rest


DETECTOR = ExchangeDetector()
