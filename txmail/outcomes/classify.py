"""Turn Findings into BounceEvents: one classified outcome per recipient.

DESCRIPTION
    finish() is what every source of outcomes ends with (each bounce detector, the maillog
    follower): the diagnostic unfolded and capped, codes pulled from the text when the source
    had none, the reason word from txmail.outcomes.reasons and the kind derived from it. One
    function for both sources, so a bounce seen in the log and again in the DSN gets the same
    reason.

FAILURE
    Pure functions over short strings; nothing here raises on odd input.
"""

from __future__ import annotations

import re

from txmail.outcomes import reasons
from txmail.outcomes.addresses import clean_address
from txmail.outcomes.findings import MAX_DIAGNOSTIC_CHARS, BounceEvent, Finding

_CONTINUATION_RE = re.compile(r"(?<![\w.])([245]\d\d)-(?:([245]\.\d{1,3}\.\d{1,3}) )?")


def squeeze(text: str) -> str:
    """Whitespace collapsed to single spaces and the length capped."""
    return " ".join(text.split())[:MAX_DIAGNOSTIC_CHARS]


def unfold_reply(text: str) -> str:
    """A multi-line SMTP reply read as one sentence.

    '550-5.7.1 Messages with multiple 550 5.7.1 addresses' becomes
    '550 5.7.1 Messages with multiple addresses': the code repeated at the
    start of every reply line would otherwise split the server's words.
    """
    match = _CONTINUATION_RE.search(text)
    if not match:
        return text
    code, status = match.group(1), match.group(2)
    prefix = re.escape(code) + r"[ -]" + (re.escape(status) + " " if status else "")
    head = text[: match.start()] + code + " " + (status + " " if status else "")
    rest = re.sub(r"(?<![\w.])" + prefix, "", text[match.end() :])
    return head + rest


def finish(findings: list[Finding], detector: str) -> list[BounceEvent]:
    """Classify each finding and build one event per distinct recipient."""
    events: list[BounceEvent] = []
    seen: set[str] = set()
    for found in findings:
        recipient = clean_address(found.recipient)
        if not recipient or recipient in seen:
            continue
        seen.add(recipient)
        diagnostic = squeeze(unfold_reply(found.diagnostic))
        found.diagnostic = diagnostic
        status = found.status or reasons.status_in(diagnostic)
        found.status = status
        if found.reply_code is None:
            found.reply_code = reasons.reply_code_in(diagnostic)
        reason, source = reasons.classify_with_source(found)
        kind = reasons.kind_of(reason, status, found.reply_code, found.action, found.temporary)
        events.append(
            BounceEvent(
                kind=kind,
                recipient=recipient,
                status=status,
                reason=reason,
                diagnostic=diagnostic,
                remote_mta=found.remote_mta,
                reply_code=found.reply_code,
                feedback_type=found.feedback_type,
                action=found.action,
                detector=detector,
                reason_source=source,
            )
        )
    return events
