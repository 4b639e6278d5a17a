"""Simple failure notices: the catch-all for servers without a format.

DESCRIPTION
    Many gateways, list servers and appliances (Lotus Notes, IMail,
    InterScan, MailMarshal, McAfee, m-FILTER, Zoho, OpenSMTPD, Verizon's MMS
    gateway, the list-era servers Mailman collected, ...) write a few
    sentences, the failed address, and sometimes the remote server's reply,
    in no fixed layout. This detector reads such a notice when nothing more
    specific did:

      1. the envelope must look like a mail system's notice (a MAILER-DAEMON
         or postmaster sender, a failure subject or a null Return-Path) and
         the text must speak of a failure;
      2. the notice is cut before the returned message and its headers;
      3. each address left in it, except the report's own sender and
         receiver, service mailboxes, and addresses on From:/Sender: lines
         of the quoted original, is a failed recipient;
      4. what is said about it is its line and paragraph, plus the
         paragraphs under headings such as "Reason:", "server message",
         "Transcript of session follows" or "Technical details".

    When the notice names no address but says delivery failed, the
    returned message's To: (one address) is the recipient: some MMS and
    SMS gateways print only "Message could not be delivered to mobile".

FAILURE
    A message that does not look like a failure notice: None.
"""

from __future__ import annotations

import re

from txmail.bounce_pipe.detectors.blocks import (
    BOUNCE_SENDER_RE,
    BOUNCE_SUBJECT_RE,
    is_service_address,
    looks_like_bounce,
)
from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes import reasons
from txmail.outcomes.addresses import ADDRESS_RE, clean_address
from txmail.outcomes.classify import finish
from txmail.outcomes.findings import BounceEvent, Finding
from txmail.outcomes.reasons import reason_table, table_reason

_FAILURE = reasons.PhraseTable.from_pattern(
    r"could not be delivered|couldn't be delivered|undeliverable|not be delivered|was not delivered"
    r"|delivery (?:has )?failed|failed permanently"
    r"|unable to deliver|could not deliver|cannot be delivered"
    r"|did not reach|delivery failure|delivery problem|permanent error|fatal error|returned mail"
    r"|not delivered|undelivered|non-delivery|no such user|user unknown|unknown user|rejected"
    r"|failed recipient|the following address|delivery to the following|had delivery errors"
    r"|送信できませんでした|送信に失敗|届きませんでした|配送できませんでした"
    r"|エラー|не может быть доставлено"
    r"|n'a pas pu etre delivre|nicht zugestellt|no pudo ser entregado|intended recipient"
    r"|returned because|postponed due to|was aborted|failed addresses"
)

# Where the quoted original starts when no marker says so: its header block.
_HEADER_BLOCK_RE = re.compile(
    r"^(?:received|return-path|message-id|x-[a-z-]+|mime-version|dkim-signature|delivered-to"
    r"|content-type|date|from|to|subject)[ \t]*:[^\n]*\n(?:(?:[ \t][^\n]*"
    r"|[a-z0-9-]+[ \t]*:[^\n]*)\n){2,}",
    re.I | re.M,
)

_TRANSPORT_FIELD_RE = re.compile(
    r"^(?:received|return-path|message-id|mime-version"
    r"|content-type|dkim-signature|x-[a-z-]+)[ \t]*:",
    re.I | re.M,
)

# Lines whose address is the sender or a header of the quoted message.
_NOT_RECIPIENT_LINE_RE = re.compile(
    r"^[\s>|]*(?:\*\s*)?(?:from|mail from|sender|reply-to|return-path"
    r"|original sender|errors-to|message-id|cc|by"
    r"|received|in-reply-to|references|list-\w+|x-[\w-]+)\s*[:=]"
    r"|^\s*from\s+\S+@|received at .* from"
    r"|\bfrom:?\s*<?[^\s<>]+@[^\s<>]+>?\s*$|please (?:contact|reply to)"
    r"|contact (?:the )?(?:postmaster|administrator|your)|send mail to|help(?:desk)?@",
    re.I,
)

_REASON_HEADING_RE = re.compile(
    r"^\W*(?:reason|error(?: type)?|failure reasons?"
    r"|non-delivered information|server message|technical details"
    r"|transcript of session follows"
    r"|the error that the other server returned was|diagnostic|remote server"
    r"|details|status|response|error message|for the following reason"
    r"|delivery failed for the following reason)"
    r"\b[^\n]*$",
    re.I | re.M,
)
_COMMAND_HEADING_RE = re.compile(r"smtp command\W*\n\s*([A-Za-z]{4})\b", re.I)
_SENT_COMMAND_RE = re.compile(r"\bsent\s*<<<\s*(rcpt to|mail from|data)\b", re.I)

# Gateways' own sentences that name the reason without a reply code.
_SIMPLE_REASONS = reason_table(
    "simple",
    (
        r"invalid final delivery userid|^unknown user:|not listed in (?:domino|public name)",
        "userunknown",
    ),
    (r"no valid recipients for this mm", "userunknown"),
    # Lotus Notes in Japanese: "not in the directory list".
    (r"ディレクトリのリストにありません", "userunknown"),
    (
        r"as their mailbox is full|mailbox is full|the number of messages in recipient's mailbox",
        "mailboxfull",
    ),
    (r"delivery failed \d+ attempts|envelope expired|host not reachable", "expired"),
    (r"could not find a gateway for", "expired"),
    (r"maximum hop count exceeded|routing loop", "networkerror"),
    (r"network error on destination mxs", "networkerror"),
    (r"no mx found for domain", "notaccept"),
)


class SimpleNoticeDetector:
    """The catch-all for failure notices with no fixed layout."""

    name = "simple"

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None:
        if mail.status_groups or mail.feedback_fields:
            return None
        if not looks_like_bounce(mail):
            return None
        notice = _trim(mail.notice)
        if not _FAILURE.search(notice.lower()) and not _FAILURE.search(mail.subject.lower()):
            if not (
                BOUNCE_SENDER_RE.search(mail.header_from) and BOUNCE_SUBJECT_RE.search(mail.subject)
            ):
                return None
        ignore = _own_addresses(mail)
        recipients = _candidates(notice, ignore)
        if not recipients:
            recipients = _recipients_by_header(mail, ignore)
        if not recipients:
            return None
        reason_text = _reason_sections(notice)
        paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", notice) if p.strip()]
        findings: list[Finding] = []
        for recipient in recipients:
            about, context = _about(paragraphs, recipient, recipients)
            diagnostic = " ".join(t for t in (about, reason_text) if t and t not in about) or about
            if not _says_why(about) or about.rstrip().endswith(":"):
                diagnostic = " ".join(t for t in (context, reason_text) if t)
            if not diagnostic.strip():
                diagnostic = notice
            findings.append(
                Finding(
                    recipient=recipient,
                    diagnostic=diagnostic,
                    command=_command(notice) or reasons.command_in(context),
                    reason=table_reason(_SIMPLE_REASONS, diagnostic),
                )
            )
        return finish(findings, self.name) or None


def _trim(notice: str) -> str:
    for match in _HEADER_BLOCK_RE.finditer(notice):
        # A summary like "To: ... / Subject: ..." is part of the notice; a
        # header block with transport fields is the returned message.
        if match.start() > 0 and _TRANSPORT_FIELD_RE.search(match.group(0)):
            return notice[: match.start()]
    return notice


def _own_addresses(mail: ReturnedMail) -> set[str]:
    own = {mail.from_address}
    for name in ("To", "Cc", "Reply-To", "Sender", "Return-Path", "Delivered-To", "X-Original-To"):
        for value in mail.headers_all(name):
            own.update(a.lower() for a in ADDRESS_RE.findall(value))
    for value in mail.original_headers("From") + mail.original_headers("Sender"):
        own.update(a.lower() for a in ADDRESS_RE.findall(value))
    return own


def _candidates(notice: str, ignore: set[str]) -> list[str]:
    found: list[str] = []
    for line in notice.split("\n"):
        if "@" not in line or _NOT_RECIPIENT_LINE_RE.search(line):
            continue
        for match in ADDRESS_RE.finditer(line):
            before = line[max(0, match.start() - 12) : match.start()].lower()
            if (
                "http" in before
                or "mailto:" in before
                and "<mailto:" not in before
                or "/" in before[-1:]
            ):
                continue
            address = clean_address(match.group(0))
            if (
                not address
                or address in ignore
                or is_service_address(address)
                or "." not in address.rpartition("@")[2]
                or address in found
            ):
                continue
            found.append(address)
    return found


def _recipients_by_header(mail: ReturnedMail, ignore: set[str]) -> list[str]:
    if mail.original is not None and mail.original.get_content_type() == "multipart/report":
        # The attachment is a report itself; its recipients are inside it.
        return []
    addresses: list[str] = []
    for value in mail.original_headers("To"):
        addresses.extend(a.lower() for a in ADDRESS_RE.findall(value))
    addresses = [a for a in dict.fromkeys(addresses) if a not in ignore]
    return addresses if len(addresses) == 1 else []


def _about(paragraphs: list[str], recipient: str, recipients: list[str]) -> tuple[str, str]:
    """What the notice says about one recipient: its own words and context.

    The first value is the recipient's line when the line explains it
    ("addr: what went wrong"), else its paragraph. The second adds the
    paragraphs around it that name no other recipient: list servers put the
    reason above the list of addresses ("because:", "for the following
    reason") or below it.
    """
    others = [r for r in recipients if r != recipient]
    for index, paragraph in enumerate(paragraphs):
        if recipient not in paragraph.lower():
            continue
        own = " ".join(line.strip() for line in paragraph.split("\n"))
        for line in paragraph.split("\n"):
            at = line.lower().find(recipient)
            if at >= 0 and len(line[at + len(recipient) :].strip(" :>.\t")) > 10:
                # "addr: what went wrong" on one line speaks for this address
                # alone, even when its neighbours list other recipients.
                own = line.strip()
                break
        around = [
            p
            for p in paragraphs[max(0, index - 1) : index + 3]
            if p is paragraph or not any(o in p.lower() for o in others)
        ]
        return own, " ".join(" ".join(p.split()) for p in around)
    return "", ""


_REPLY_CODE_RE = re.compile(r"(?<![\w.])[45]\d\d(?![\w.])")
_WHY_RE = re.compile(r"[a-z]{3,}[^@\s]*\s+[a-z]{3,}", re.I)


def _says_why(text: str) -> bool:
    """Whether text says more than a label and an address (a reason, not a list)."""
    rest = ADDRESS_RE.sub(" ", text)
    if _REPLY_CODE_RE.search(rest):
        return True
    return len(rest.strip(" <>:-*\t")) >= 40 and bool(_WHY_RE.search(rest))


def _reason_sections(notice: str) -> str:
    parts: list[str] = []
    for match in _REASON_HEADING_RE.finditer(notice):
        heading = match.group(0)
        rest = notice[match.end() :].lstrip("\n")
        paragraph = rest.split("\n\n", 1)[0]
        inline = heading.split(":", 1)[1].strip() if ":" in heading else ""
        chunk = " ".join(x for x in (inline, paragraph.strip()) if x)
        if chunk and chunk not in parts:
            parts.append(chunk)
    return " ".join(parts)


def _command(notice: str) -> str | None:
    match = _COMMAND_HEADING_RE.search(notice) or _SENT_COMMAND_RE.search(notice)
    if not match:
        return None
    word = match.group(1).upper()
    return {
        "RCPT": "RCPT",
        "MAIL": "MAIL",
        "DATA": "DATA",
        "RCPT TO": "RCPT",
        "MAIL FROM": "MAIL",
    }.get(word)


DETECTOR = SimpleNoticeDetector()
