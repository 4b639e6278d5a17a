"""Error reports of Java and list servers, and of SMS gateways: Apache James, fml, phone numbers.

DESCRIPTION
    Apache James (its AbstractNotify/Bounce mailets) answers a failure with a plain-text mail,
    subject "[BOUNCE]", whose body has the remote reply under "Error message below:" and the
    envelope under "Message details:" ("  MAIL FROM: ...", "  RCPT TO: addr[, addr]"). The
    recipients are the RCPT TO line's, the diagnostic is the error paragraph (an SMTP reply,
    read by the shared classifier: its code and wording say why). James lists a recipient as
    failed from the exception for the address the remote server refused, so the refusal is
    read as one at RCPT unless the reply names another stage.

    fml (the Japanese mailing-list manager; X-MLServer: fml, or List-Software: fml) refuses a
    post with a mail to the poster naming the list in angle brackets ("You are not a member of
    this mailing list <list@example.org>."). The failed recipient is the list, and the reason
    follows from what fml's documented notices mean: a post from a non-member, or one the list
    does not allow, is "rejected"; a post over the list's size limit is "mesgtoobig".

    An SMS/MMS gateway (email-to-SMS) names the failed recipient by its phone number, not an
    address. When the notice says it could not deliver to a number and the returned message
    was addressed to an address whose local part is that number (5551234567@gateway.example),
    that address is the recipient.

FAILURE
    Anything else: None (the next detector tries).
"""

from __future__ import annotations

import re

from txmail.bounce_pipe.detectors.blocks import looks_like_bounce
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes import reasons
from txmail.outcomes.addresses import clean_address
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding

# -- Apache James

_JAMES_ERROR_RE = re.compile(
    r"error message below:\s*\n(.*?)(?:\n\s*\n|\n\s*message details:|\Z)", re.I | re.S
)
_JAMES_RCPT_RE = re.compile(r"^\s*rcpt to:\s*(.+)$", re.I | re.M)
_JAMES_MAIL_FROM_RE = re.compile(r"^\s*mail from:", re.I | re.M)


def _james(mail: ReturnedMail) -> list[Finding]:
    lowered = mail.notification_lower
    if "message details:" not in lowered or "error message below:" not in lowered:
        return []
    notice = mail.notice or mail.notification
    if not (
        mail.subject.strip().upper() == "[BOUNCE]"
        or "james" in mail.notification_lower
        or "javamail" in mail.header("Message-ID").lower()
        or _JAMES_MAIL_FROM_RE.search(notice)
    ):
        return []
    error = _JAMES_ERROR_RE.search(notice)
    rcpt = _JAMES_RCPT_RE.search(notice)
    if not error or not rcpt:
        return []
    diagnostic = " ".join(error.group(1).split())
    recipients = [clean_address(part) for part in re.split(r"[,\s]+", rcpt.group(1))]
    # James's remote delivery reports a recipient as failed from the SMTP exception of the
    # address the server refused (at RCPT), unless the reply names the message stage.
    command = reasons.command_in(diagnostic) or "RCPT"
    return [Finding(recipient=r, diagnostic=diagnostic, command=command) for r in recipients if r]


# -- fml

_FML_LIST_RE = re.compile(r"<([^<>\s@]+@[^<>\s@]+)>")
# What fml's notices mean (its documented error messages), read as a reason.
_FML_REJECTED_RE = re.compile(
    r"not (?:a )?member|members? only|only members|not allowed to post|deny|denied|"
    r"is closed|not permitted",
    re.I,
)
_FML_TOO_BIG_RE = re.compile(r"too (?:big|large)|exceeds? .{0,30}(?:size|limit)", re.I)


def _fml(mail: ReturnedMail) -> list[Finding]:
    software = (mail.header("X-MLServer") or mail.header("List-Software")).lower()
    if not software.startswith("fml"):
        return []
    notice = mail.notice or mail.notification
    if _FML_TOO_BIG_RE.search(notice):
        reason = "mesgtoobig"
    elif _FML_REJECTED_RE.search(notice) or _FML_REJECTED_RE.search(mail.subject):
        reason = "rejected"
    else:
        return []  # an ordinary list mail (a welcome, a digest): not a refusal
    listed = _FML_LIST_RE.search(notice)
    recipient = clean_address(listed.group(1)) if listed else ""
    if not recipient:
        return []
    diagnostic = " ".join(notice.split())
    return [
        Finding(recipient=recipient, diagnostic=diagnostic, reason=reason, reason_source="phrase")
    ]


# -- SMS/MMS gateways: the recipient named by its number

_NUMBER_RE = re.compile(r"(?<![\w.@+-])\+?(\d[\d\- ]{6,18}\d)(?![\w@])")
_SMS_FAILURE_RE = re.compile(
    r"(?:could not|couldn'?t|unable to|cannot|can'?t|failed to|not) (?:be )?(?:deliver|sen[dt])"
    r"|undeliverable|invalid (?:number|recipient|destination)|not a valid (?:mobile|phone)",
    re.I,
)


def _sms(mail: ReturnedMail) -> list[Finding]:
    if mail.original is None and not mail.quoted:
        return []
    addressed: dict[str, str] = {}
    for value in mail.original_headers("To"):
        for part in value.split(","):
            address = clean_address(part)
            local = address.partition("@")[0].lstrip("+")
            if address and local.isdigit() and 7 <= len(local) <= 15:
                addressed[local] = address
    if not addressed:
        return []
    notice = mail.notice or mail.notification
    if not looks_like_bounce(mail) or not _SMS_FAILURE_RE.search(notice):
        return []
    findings: list[Finding] = []
    for match in _NUMBER_RE.finditer(notice[:4000]):
        digits = re.sub(r"\D", "", match.group(1))
        for local, address in addressed.items():
            # A number printed with or without its country code.
            if digits == local or (len(digits) >= 7 and local.endswith(digits)):
                if all(f.recipient != address for f in findings):
                    around = notice[max(0, match.start() - 200) : match.end() + 200]
                    findings.append(Finding(recipient=address, diagnostic=" ".join(around.split())))
    return findings


class ListsAndGatewaysDetector:
    """Apache James reports, fml refusals, SMS gateway notices naming a number."""

    name = "lists"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.status_groups or mail.feedback_fields:
            return None
        for reader, name in ((_james, "james"), (_fml, "fml"), (_sms, "sms")):
            findings = reader(mail)
            if findings:
                return finish(findings, name) or None
        return None


DETECTOR = ListsAndGatewaysDetector()
