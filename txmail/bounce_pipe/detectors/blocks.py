"""Reading the recipient paragraphs of plain-text bounces.

DESCRIPTION
    Most MTAs that send no DSN print each failed recipient at the start of a
    line and what went wrong on the same line or the lines under it:

        <kijitora@example.jp>:                        qmail, Postfix, Yahoo
        Sorry, no mailbox here by that name.

          kijitora@example.jp                         Exim and its clones
            SMTP error from remote mail server after RCPT TO: ...

        kijitora@example.org [User unknown]           small gateways

    recipient_blocks() finds those lines in a section of text and returns
    (recipient, text about it) pairs; section() cuts the part of a notice
    between a heading ("The following address(es) failed:") and the next one.
    The detectors for each MTA family use these with their own markers.

FAILURE
    Pure functions over decoded text; no match gives an empty list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.addresses import ADDRESS_RE, clean_address

# A recipient line: optional bullet or quote marks, the address (maybe in
# angle brackets or after a label), then optional text on the same line.
_LEAD_RE = re.compile(
    r"^[ \t]*(?:[*\-•>]+[ \t]*|(?:final[- ])?recipient(?: address)?:[ \t]*|failed recipient:[ \t]*"
    r"|to:[ \t]*|rcpt:[ \t]*|address:[ \t]*)?"
    r"(?:\"[^\"\n]*\"[ \t]*)?<?(?:mailto:|smtp:)?(" + ADDRESS_RE.pattern + r")>?"
    r"(?:<mailto:[^>\n]*>)?",
    re.I,
)

_SKIP_LOCALPARTS = ("postmaster", "mailer-daemon", "mail-daemon", "mailerdaemon", "root", "abuse")


@dataclass
class RecipientBlock:
    """One recipient line of a text bounce and the lines that explain it."""

    recipient: str
    text: str
    line: str


def recipient_blocks(section: str, *, need_colon: bool = False) -> list[RecipientBlock]:
    """The recipient blocks of a section (see the module description).

    need_colon keeps only lines where the address is followed by ':' (qmail
    style).
    """
    blocks: list[RecipientBlock] = []
    current: RecipientBlock | None = None
    head_indent = 0
    for line in section.split("\n"):
        if not line.strip():
            current = None
            continue
        indent = len(line) - len(line.lstrip())
        match = _LEAD_RE.match(line)
        if match and current is not None and indent > head_indent:
            # Wrapped reply text quoting the address again (Postfix indents
            # its continuation lines): still the same recipient.
            match = None
        if match:
            rest = line[match.end() :]
            if need_colon and not rest.lstrip().startswith(":"):
                match = None
            elif rest[:1].isalnum() and not rest.startswith((" ", "\t")):
                match = None
        if match:
            address = clean_address(match.group(1))
            if address:
                current = RecipientBlock(address, _tidy_rest(rest), line)
                head_indent = indent
                blocks.append(current)
                continue
        if current is not None:
            current.text = (current.text + "\n" + line.strip()).strip()
    return blocks


def _tidy_rest(rest: str) -> str:
    text = rest.strip()
    for lead in (":", "...", "--", "-", ","):
        if text.startswith(lead):
            text = text[len(lead) :].strip()
    return text


def section(text: str, start: re.Pattern[str] | None, end: re.Pattern[str] | None = None) -> str:
    """The text after the first start match and before the first end match."""
    begin = 0
    if start is not None:
        match = start.search(text)
        if not match:
            return ""
        begin = match.end()
    if end is not None:
        stop = end.search(text, begin)
        if stop:
            return text[begin : stop.start()]
    return text[begin:]


def is_service_address(address: str) -> bool:
    """postmaster@, MAILER-DAEMON@ and the like: never a failed recipient."""
    local = address.partition("@")[0].lower()
    return local in _SKIP_LOCALPARTS


BOUNCE_SENDER_RE = re.compile(
    r"mailer-daemon|mail-daemon|mailerdaemon|mailer_daemon|post_?master|mail delivery"
    r"|delivery subsystem|mail administrator|system administrator|mail system|ndr administrator"
    r"|mail router",
    re.I,
)
# Words a mail system's notice puts in its Subject; generic words such as
# "error" or "failed" alone are not enough (an application's "Build failed").
BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|returned mail|return(?:ed|ing) (?:message|to sender)"
    r"|delivery (?:status|fail|problem|notif|report)|failure notice|failure delivery"
    r"|failed delivery"
    r"|mail delivery|not delivered|non[- ]?delivery|could not be delivered|mail failure"
    r"|mail system error|warning: message|message delayed|delivery delayed|bounced? mail"
    r"|unzustellbar|non remis|no entregado|non recapitabile|not member",
    re.I,
)


def looks_like_bounce(mail: ReturnedMail) -> bool:
    """Whether the envelope of the report looks like a mail system's notice.

    Plain-text detectors require it before reading free text, so that an
    ordinary message quoting a failure is not taken for one: the sender is
    a mail system's mailbox, the Subject is a notice's, the message came
    with a null (or MAILER-DAEMON) Return-Path, as RFC 5321 wants for every
    notice, or it says it is a delivery status report.
    """
    if BOUNCE_SENDER_RE.search(mail.header_from):
        return True
    if BOUNCE_SUBJECT_RE.search(mail.subject):
        return True
    return_path = mail.header("Return-Path")
    if return_path.strip() == "<>" or BOUNCE_SENDER_RE.search(return_path):
        return True
    # A report announced as one (multipart/report; report-type=delivery-status).
    return "delivery-status" in mail.header("Content-Type").lower()
