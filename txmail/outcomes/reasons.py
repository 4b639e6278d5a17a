"""Reason classifier: status codes and MTA wording to Sisimai's reason words.

DESCRIPTION
    classify() names why one recipient failed, in the vocabulary Sisimai uses
    (userunknown, mailboxfull, blocked, ...), from what a detector found: the
    enhanced status code (RFC 3463), the SMTP reply code, the SMTP command the
    remote server was answering, the Action and the diagnostic text.

    The decision order (classify_with_source also says where the reason came from):

    0.  A 2.x.x status is "delivered". A reason the detector already read from a structured
        field (ARF, auto-reply, Amazon SES JSON, PowerMTA's bounce category) or from its own
        MTA's documented sentences (a ReasonTable) stands.
    The SMTP command comes from the detector or from the MTA's wording (command_in: "in
    reply to RCPT TO command", "after pipelined RCPT TO", ">>> DATA", "sender was rejected",
    Yahoo's end-of-DATA "delivery error: dd", ...). A notice with no SMTP reply code and no
    status at all is the reporting MTA speaking of its own directory, read as at RCPT. A
    diagnostic that is not an SMTP reply (X-Unix, X-Postfix) is read for its mailbox, program
    and system wording before its code.

    1.  Specific reasons in a fixed order, narrowest first. Each holds on its own specific
        status code (RFC 3463 subject.detail: X.1.1 userunknown, X.1.2 hostunknown, X.1.6
        hasmoved, X.2.2 mailboxfull, X.2.3 exceedlimit, X.3.4 mesgtoobig, X.7.26 authfailure,
        ...) or on its wording, so wording beats a generic code ("Mailbox full" under 5.0.0)
        and a specific code beats unrelated wording. The SMTP command the refusal answered
        is read with it: recipient-unknown wording refused at RCPT means the address does
        not exist, refused after DATA (or at an unknown stage, as Sisimai reads it) a filter
        said so; refused at MAIL it is about the sender; rate wording ("too many
        connections") wins over the stage that was refused.
    2.  A specific status code alone (STATUS).
    3.  Broader wording (STAGE3 tables), then a refusal that calls the message spam (spam
        wording under a broad X.7.x is spamdetected, unless the sending IP is listed:
        blocked), then fallbacks (GUESS) by the refused command (MAIL: rejected; HELO/EHLO
        or connection: blocked), the status class (X.6: contenterror, X.7: securityerror),
        the diagnostic type (X-UNIX: mailererror), the reply code (50x: syntaxerror) and the
        Action (delayed: expired). What is still unknown is "onhold" when the MTA said
        anything and "undefined" when it said nothing beyond the address.

    Sisimai's public reason definitions (libsisimai.org/en/reason) are the meaning each word
    carries here. The phrase tables are lowercase fragments of what MTAs and providers
    print, as their documentation and real bounces show, matched against the diagnostic
    with its whitespace collapsed; a table an MTA's detector owns can be switched off
    (tables_switched_off) so bench/bounce_parser.py --cv can measure the rest without it.

    kind_of() derives the event kind (bounce, soft_bounce, ...) from the
    reason and the codes, and status_in(), reply_code_in() and command_in()
    pull codes out of free text.

FAILURE
    Pure functions over short strings; nothing here raises on odd input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from txmail.outcomes.findings import Finding

REASONS = (
    "userunknown", "mailboxfull", "filtered", "expired", "rejected", "suspend", "blocked",
    "onhold", "hostunknown", "networkerror", "policyviolation", "feedback", "securityerror",
    "authfailure", "mesgtoobig", "mailererror", "requireptr", "notaccept", "vacation",
    "spamdetected", "toomanyconn", "systemerror", "norelaying", "hasmoved", "exceedlimit",
    "delivered", "contenterror", "undefined", "syntaxerror", "notcompliantrfc",
    "badreputation", "speeding", "virusdetected", "systemfull",
)  # fmt: skip

# ---------------------------------------------------------------------------
# Codes in free text

_STATUS_RE = re.compile(r"(?<![\w.#-])#?([245])\.(\d{1,3})\.(\d{1,3})(?![\d])(?!\.\d)")
_REPLY_RE = re.compile(r"(?:^|[\s:(\[<'\"=])([245][0-9][0-9])(?=[\s\-:,.;)\]]|$)")


def status_in(text: str) -> str | None:
    """The first enhanced status code (RFC 3463) in text, or None."""
    match = _STATUS_RE.search(text)
    if not match:
        return None
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"


def statuses_in(text: str) -> list[str]:
    """Every enhanced status code in text, in order."""
    return [f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}" for m in _STATUS_RE.finditer(text)]


def reply_code_in(text: str) -> str | None:
    """The first SMTP reply code (4xx/5xx, or 2xx) that looks like one, or None."""
    for match in _REPLY_RE.finditer(text[:600]):
        code = match.group(1)
        if code[1] in "012345":
            return code
    return None


# One alternation, one named group per command: a single scan finds the
# leftmost mention, which is the stage the MTA reports first.
_COMMAND_RE = re.compile(
    r"(?P<DATA>in reply to (?:end of )?(?:data|bdat) command|after (?:pipelined )?end of data"
    r"|while sending (?:end of )?data|while sending message body|did not like our final data"
    r"|after (?:i|we) sent the message|\(data\)|>>> data\b|after data\b"
    # Yahoo's MX takes every RCPT and refuses unknown users at the end of DATA
    r"|delivery error: dd\b|user doesn'?t have an? [\w.-]+ account)"
    r"|(?P<RCPT>in reply to rcpt to command|after (?:pipelined )?rcpt to|while sending rcpt to"
    r"|does not like recipient|>>> rcpt to"
    r"|did not like our rcpt to|rcpt to not accepted|after rcpt command|\[rcpt_to\]"
    r"|smtp:rcpt\b|\(rcpt\)|rcpt to response)"
    r"|(?P<MAIL>in reply to mail from command|after (?:pipelined )?mail from"
    r"|while sending mail from|>>> mail from|sender was rejected"
    r"|did not like our mail from|\(mail from\))"
    r"|(?P<HELO>while performing the (?:helo|ehlo) handshake|in reply to (?:helo|ehlo) command"
    r"|after (?:helo|ehlo)\b|>>> (?:helo|ehlo)\b|my name was rejected)"
    r"|(?P<CONN>refused to talk to me|after initial connection|greeting"
    r"|connected to .{0,60} but (?:greeting|connection) failed)",
    re.I,
)


# Words at least one command phrase contains: most texts have none, and a
# substring test is far cheaper than the alternation.
_COMMAND_HINTS = (
    "reply to", "after", ">>>", "not like", "(data)", "(rcpt)", "(mail from)", "rcpt",
    "sender was", "handshake", "while sending", "delivery error", "t have a",
    "name was rejected", "refused to talk", "greeting", "connected to",
)  # fmt: skip


_HINT_OFFSET = 40


def command_in(text: str) -> str | None:
    """The SMTP command the remote server answered, as the MTA says it."""
    # The stage is named near the failure; a long notice's tail adds only cost.
    lowered = text[:4000].lower()
    if not any(hint in lowered for hint in _COMMAND_HINTS):
        return None
    collapsed = " ".join(lowered.split())
    # Every phrase holds a hint within its first _HINT_OFFSET characters: the scan starts
    # that far before the first hint (the alternation has no literal to skip ahead to).
    found = [at for at in map(collapsed.find, _COMMAND_HINTS) if at >= 0]
    start = max(0, min(found, default=0) - _HINT_OFFSET)
    match = _COMMAND_RE.search(collapsed, start)
    return match.lastgroup if match else None


# ---------------------------------------------------------------------------
# Status codes (RFC 3463 subject.detail, plus widely used vendor extensions)

# Codes whose meaning is broad: wording may override them.
_WEAK = "weak"

_DETAIL_REASON: dict[str, tuple[str, str]] = {
    "1.0": ("userunknown", _WEAK),
    "1.1": ("userunknown", "strong"),
    "1.2": ("hostunknown", "strong"),
    "1.3": ("userunknown", "strong"),
    "1.4": ("userunknown", _WEAK),
    "1.6": ("hasmoved", "strong"),
    "1.7": ("rejected", "strong"),
    "1.8": ("rejected", "strong"),
    "1.10": ("userunknown", _WEAK),
    "2.0": ("filtered", _WEAK),
    "2.1": ("filtered", _WEAK),
    "2.2": ("mailboxfull", "strong"),
    "2.3": ("exceedlimit", "strong"),
    "2.4": ("filtered", _WEAK),
    "3.0": ("systemerror", _WEAK),
    "3.1": ("systemfull", "strong"),
    "3.2": ("notaccept", "strong"),
    "3.4": ("mesgtoobig", "strong"),
    "3.5": ("systemerror", "strong"),
    "4.0": ("networkerror", _WEAK),
    "4.1": ("networkerror", _WEAK),
    "4.2": ("networkerror", _WEAK),
    "4.3": ("systemerror", _WEAK),
    "4.4": ("hostunknown", _WEAK),
    "4.5": ("toomanyconn", _WEAK),
    "4.6": ("networkerror", "strong"),
    "4.7": ("expired", "strong"),
    "5.3": ("toomanyconn", "strong"),
    "6.0": ("contenterror", _WEAK),
    "6.1": ("contenterror", "strong"),
    "6.2": ("contenterror", "strong"),
    "6.3": ("contenterror", "strong"),
    "6.4": ("contenterror", "strong"),
    "6.5": ("contenterror", "strong"),
    "6.6": ("contenterror", "strong"),
    "6.9": ("contenterror", "strong"),
    "7.0": ("securityerror", _WEAK),
    "7.1": ("securityerror", _WEAK),
    "7.2": ("securityerror", _WEAK),
    "7.3": ("securityerror", "strong"),
    "7.4": ("securityerror", "strong"),
    "7.5": ("securityerror", "strong"),
    "7.6": ("securityerror", "strong"),
    "7.7": ("securityerror", "strong"),
    "7.8": ("securityerror", "strong"),
    "7.9": ("securityerror", _WEAK),
    "7.13": ("suspend", "strong"),
    "7.14": ("securityerror", "strong"),
    "7.15": ("securityerror", "strong"),
    "7.16": ("securityerror", "strong"),
    "7.17": ("securityerror", "strong"),
    "7.18": ("securityerror", "strong"),
    "7.19": ("securityerror", "strong"),
    "7.20": ("authfailure", "strong"),
    "7.21": ("authfailure", "strong"),
    "7.22": ("authfailure", "strong"),
    "7.23": ("authfailure", "strong"),
    "7.24": ("authfailure", "strong"),
    "7.25": ("requireptr", "strong"),
    "7.26": ("authfailure", "strong"),
    "7.27": ("notaccept", "strong"),
    "7.28": ("spamdetected", "strong"),
    # Microsoft 365 / Outlook.com extensions
    "7.509": ("authfailure", "strong"),
    "7.510": ("securityerror", "strong"),
    "7.650": ("badreputation", "strong"),
}


def status_reason(status: str | None) -> tuple[str | None, bool]:
    """The reason a status code names and whether the name is reliable."""
    if not status or status[0] not in "45":
        return None, False
    detail = status.split(".", 1)[1] if "." in status else ""
    entry = _DETAIL_REASON.get(detail)
    if entry is None:
        # Vendor details (Microsoft's 5.7.606, 5.1.351, ...): ranges first,
        # then what the subject digit alone says, never reliably.
        subject, _, number_text = detail.partition(".")
        number = int(number_text) if number_text.isdigit() else 0
        if subject == "7" and 600 <= number <= 649:
            return "blocked", True
        entry = _DETAIL_REASON.get(subject + ".0")
        if entry is None:
            return None, False
        return entry[0], False
    return entry[0], entry[1] != _WEAK


# ---------------------------------------------------------------------------
# Wording


class PhraseTable:
    """One reason's phrases: a regex, and the literal words that gate it.

    Every phrase contains literal runs of characters that any match must
    contain. Those runs gate the alternation (the costly part): when the
    text holds none of them, no phrase can match.
    """

    __slots__ = ("pattern", "literals")

    def __init__(self, phrases: tuple[str, ...]) -> None:
        self.pattern = re.compile("|".join(phrases))
        self.literals = _covering_words([_required_runs(p) for p in phrases])

    @classmethod
    def from_pattern(cls, pattern: str) -> PhraseTable:
        """A table from one regex whose top-level '|' separates phrases."""
        return cls(tuple(_top_level_alternatives(pattern)))

    def search(self, text: str) -> bool:
        """Whether a phrase occurs in text, which must be lowercase."""
        if self.literals is None:
            return self.pattern.search(text) is not None
        # A plain loop: this runs a hundred times per bounce, and a generator costs more
        # than the substring tests themselves.
        for word in self.literals:
            if word in text:
                return self.pattern.search(text) is not None
        return False


def _top_level_alternatives(pattern: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    start = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
        index += 1
    parts.append(pattern[start:])
    return parts


_META = set("\\()[]{}?*+.|^$")


def _required_runs(phrase: str) -> list[str]:
    """The runs of plain characters every match of phrase contains.

    Only runs outside groups and classes count, and a character made
    optional by the quantifier after it ends the run without it. Nothing is
    returned for a phrase with an alternation at its top level.
    """
    runs: list[str] = []
    run: list[str] = []
    depth = 0
    index = 0
    while index < len(phrase):
        char = phrase[index]
        following = phrase[index + 1] if index + 1 < len(phrase) else ""
        if char == "|" and depth == 0:
            return []
        if char == "\\" or char == "{":
            runs.append("".join(run))
            run = []
            # An escape names a class or one character; a counted repeat's
            # digits are no literal either.
            index = index + 2 if char == "\\" else (phrase.find("}", index) + 1 or len(phrase))
            continue
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if depth == 0 and char not in _META and following not in ("?", "*", "{"):
            run.append(char)
        else:
            runs.append("".join(run))
            run = []
        index += 1
    runs.append("".join(run))
    return [r for r in runs if len(r.strip()) >= 3]


def _covering_words(runs_per_phrase: list[list[str]]) -> tuple[str, ...] | None:
    """Substrings such that each phrase requires at least one of them.

    Each phrase gives its longest required run (the most selective); a run
    that contains another chosen run adds nothing and is dropped.
    """
    if any(not runs for runs in runs_per_phrase):
        return None
    longest = {max(runs, key=len) for runs in runs_per_phrase}
    kept = [w for w in longest if not any(o != w and o in w for o in longest)]
    return tuple(sorted(kept))


def _table(*phrases: str) -> PhraseTable:
    return PhraseTable(phrases)


PHRASES: dict[str, PhraseTable] = {
    "mailboxfull": _table(
        r"mailbox (?:is )?full",
        r"mailbox (?:is )?over ?quota",
        r"over ?quota",
        r"overquota",
        r"quota (?:exceeded|violation|full)",
        r"exceeded (?:the |their |his |her )?(?:storage|quota)",
        r"out of storage space",
        r"disk quota",
        r"mail ?folder is full",
        r"mailbox for user is full",
        r"not enough (?:disk )?space",
        r"too much mail data",
        r"storage quota",
        r"number of messages in recipient's mailbox exceeded",
        r"reached (?:disk|its|their) quota",
        r"exceeds? (?:the )?(?:mailbox|storage) (?:size|quota|limit)",
        r"mailbox size limit",
        r"user'?s? (?:mailbox|account) is full",
        r"inbox is full",
        r"account is full",
        r"insufficient (?:user )?quota",
        r"mailbox would exceed",
        r"full mailbox",
        r"has exceeded (?:its|the) (?:storage|mailbox)",
        r"user has exhausted allowed storage",
        r"mailbox has exceeded",
        r"exceeded storage allocation",
    ),
    "mesgtoobig": _table(
        r"message (?:is )?too (?:big|large)",
        r"message size exceeds",
        r"size limit exceeded",
        r"exceeded (?:the )?maximum (?:inbound |incoming )?message size",
        r"exceeds? (?:the )?maximum (?:message )?size",
        r"message (?:size|length) (?:is )?(?:larger|greater) than",
        r"email is too large",
        r"line limit exceeded",
        r"message exceeds (?:the )?(?:size|maximum)",
        r"mail size (?:limit|exceeded)",
        r"size exceeds (?:the )?(?:fixed|maximum|limit)",
        r"too big for (?:the )?system",
        r"message too long",
    ),
    "exceedlimit": _table(
        r"message length exceeds administrative limit", r"exceeds? (?:the )?administrative limit"
    ),
    "suspend": _table(
        r"account (?:has been |is )?disabled",
        r"disabled or discontinued",
        r"mailbox is frozen",
        r"account is locked",
        r"temporar(?:y|ily) locked",
        r"tried to reach is (?:disabled|inactive)",
        r"account (?:is |has been )?inactive",
        r"mailbox (?:is )?(?:inactive|disabled|suspended)",
        r"recipient account is blocked",
        r"account (?:has been |is )?suspended",
        r"disabled recipient address",
        r"user account disabled",
        r"account (?:has been )?deactivated",
        r"compte du destinataire est bloque",
        r"account is unavailable",
    ),
    "hasmoved": _table(
        r"no longer on server", r"address has moved", r"mailbox has moved", r"has moved to"
    ),
    "norelaying": _table(
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|not allowed|prohibited)",
        r"not (?:configured|permitted|allowed) to relay",
        r"unable to relay",
        r"insecure mail relay",
        r"no relaying",
        r"we do not relay",
        r"relay access denied",
        r"cannot relay",
        r"email address is not verified",
        r"relaying mail to .{1,80} is not allowed",
    ),
    "authfailure": _table(
        r"bad spf records?",
        r"per it'?s spf record",
        r"spf record with a hard fail",
        r"fails? to pass spf",
        r"spf (?:check|validation) failed",
        r"\bspf[ =:]+fail",
        r"fails? to pass authentication checks",
        r"isn't aligned with either the authenticated spf or dkim",
        r"does not have authentication information",
        r"dmarc policy",
        r"dmarc verification",
        r"does not pass dmarc",
        r"dmarc (?:check )?fail",
        r"sender is unauthenticated",
        r"authentication checks failed",
        r"dkim (?:check|validation) failed",
        r"unauthenticated email from",
        r"authenticate with (?:either )?spf or dkim",
    ),
    "userunknown": _table(
        r"user unknown",
        r"unknown user",
        r"no such user",
        r"user not found",
        r"unknown recipient",
        r"recipient unknown",
        r"recipient not found",
        r"no mailbox here by that name",
        r"no such mailbox",
        r"mailbox not found",
        r"mailbox unavailable",
        r"invalid recipient",
        r"user does not exist",
        r"user doesn'?t exist",
        r"unknown or illegal (?:user|alias)",
        r"not listed in (?:domino|the) directory",
        r"invalid final delivery userid",
        r"addressee unknown",
        r"unknown local[- ]part",
        r"address unknown",
        r"unknown address(?! error)",
        r"bad destination mailbox",
        r"no account by that name",
        r"inactive email address",
        r"account does not exist",
        r"tried to reach does not exist",
        r"is not a valid mailbox",
        r"recipient does not exist",
        r"mailbox does not exist",
        r"address does not exist",
        r"user doesn'?t have a .{1,80} account",
        r"no such recipient",
        r"unknown mailbox",
        r"invalid mailbox",
        r"mailbox not available",
        r"recipnotfound",
        r"recipientnotfound",
        r"recipient address rejected: access denied",
        r"destinataire invalide",
        r"user not exist",
        r"no such person",
        r"does not have an? .{0,20}account",
        r"unknown e-?mail address",
        r"is not a known user",
        r"mailbox is unknown",
        r"user is unknown",
        r"account unknown",
        r"could not be found",
        r"couldn'?t be found",
        r"not our customer",
        r"no mailbox by that name",
        r"invalid address",
        r"nonexistent",
        r"non-existent user",
        # Lotus Notes/Domino in Japanese: "not in the directory list"
        r"ディレクトリのリストにありません",
        r"mailbox unknown",
        r"user not known",
        r"unknown account",
        r"not a valid (?:user|recipient|mailbox)",
        r"no such (?:address|account)",
        r"\bbad address\b(?! syntax)",
        r"(?:user|address|mailbox|recipient|account) (?:does not|doesn'?t) exist",
        r"(?:destinataire|utilisateur) inconnu",
        r"(?:empf(?:ae|ä)nger|benutzer) unbekannt",
    ),
    "filtered": _table(
        r"recipient preferences",
        r"message filtered",
        r"filtered by",
        r"blocked by (?:the )?recipient",
        r"rejected by (?:the )?recipient",
        r"recipient has blocked",
        r"only accepts? mail from",
        r"refused by (?:the )?recipient",
        r"domain filter",
        r"content filter",
    ),
    "requireptr": _table(
        r"reverse dns",
        r"ptr record",
        r"\bno ptr\b",
        r"\brdns\b",
        r"reverse (?:dns )?lookup",
        r"mismatches client ip",
        r"without a valid sender domain",
        r"cannot find your hostname",
        r"unverifiable sending ip",
        r"unverifyable sending ip",
        r"ip name lookup failed",
        r"client host .{0,60} has no (?:ptr|hostname)",
        r"do not have a ptr",
    ),
    "notcompliantrfc": _table(
        r"missing a valid (?:address in from|message-id)",
        r"multiple addresses in from",
        r"not rfc ?5322 compliant",
        r"rfc ?5322 (?:compliant|section)",
        r"not compliant with rfc",
        r"message is not rfc",
    ),
    "badreputation": _table(
        r"ip reputation",
        r"poor reputation",
        r"low reputation",
        r"bad reputation",
        r"sender reputation",
        r"reputation (?:of|for) (?:the )?(?:sending|sender)",
    ),
    "contenterror": _table(
        r"improper use of 8-bit data",
        r"media error",
        r"duplicate header",
        r"content error",
        r"header (?:line )?(?:is )?(?:malformed|invalid)",
        r"invalid (?:character|header)",
    ),
    "rejected": _table(
        r"sender address rejected",
        r"sender rejected",
        r"domain of sender address",
        r"unroutable sender",
        r"address that has been blacklisted",
        r"sender verify failed",
        r"sender (?:is )?not allowed",
        r"invalid sender",
        r"sender verification",
        r"mail from address rejected",
        r"not a member of this (?:mailing )?list",
        r"permission to post",
        r"purported responsible address",
        r"sender domain (?:does not|must) exist",
        r"sender address (?:is )?invalid",
        r"from address rejected",
        r"envelope sender",
        r"send mail as",
        r"unknown sender",
        r"sender denied",
        r"sender .{0,60} rejected",
        r"your address has been blacklisted",
        r"not a registered gateway user",
    ),
    "hostunknown": _table(
        r"host unknown",
        r"unknown host",
        r"host not found",
        r"no such domain",
        r"domain does not exist",
        r"could(?:n'?t| not) find any host",
        r"unrouteable address",
        r"unroutable address",
        r"host or domain name not found",
        r"domain (?:name )?not found",
        r"unknown domain",
        r"no such host",
        r"domain is not reachable",
        r"account or domain may not exist",
        r"bad destination system address",
        r"dns lookup failure",
        r"domain .{1,60} does not exist",
        r"^(?:\d{3} )?[a-z0-9-]+(?:\.[a-z0-9-]+)+ does not exist",
    ),
    "spamdetected": _table(
        r"spam detected",
        r"detected as spam",
        r"scored as spam",
        r"classified as spam",
        r"- spam\b",
        r"likely (?:unsolicited|spam)",
        r"unsolicited (?:mail|bulk|commercial|e-?mail)",
        r"spam classification",
        r"rejected as spam",
        r"appears to be spam",
        r"looks like spam",
        r"spam message",
        r"message is spam",
        r"due to spam",
        r"spam content",
        r"as spam\b",
        r"blacklisted url",
        r"\buribl\b",
        r"\bsurbl\b",
        r"junk mail",
        r"spam score",
        r"mail rejete\. mail rejected",
        r"spam filter",
    ),
    "speeding": _table(
        r"receiving mail at a rate", r"sending (?:mail )?too fast", r"rate that prevents"
    ),
    "toomanyconn": _table(
        r"too many connections",
        r"connection rate limit",
        r"frequency limited",
        r"too many recipients",
        r"too many (?:concurrent|simultaneous)",
        r"connection limit",
        r"too many smtp sessions",
        r"maximum number of connections",
        r"too many hosts",
        r"too many errors from your ip",
        r"max(?:imum)? (?:e-?mails|messages) per hour",
        r"(?:maximum )?sending rate exceeded",
        r"daily message quota exceeded",
        r"per-domain connection limit",
        r"trop de connexions",
    ),
    "blocked": _table(
        r"blocked using",
        r"not authorized to send email directly to our servers",
        r"traffic not accepted from this ip",
        r"connections will not be accepted from",
        r"will be permanently deferred",
        r"blacklisted",
        r"blocklisted",
        r"banned sending ip",
        r"client host rejected",
        r"client host blocked",
        r"spamhaus",
        r"\bdnsbl\b",
        r"\brbl\b",
        r"\bsorbs\b",
        r"please use the smtp server of your isp",
        r"messages from .{1,60} weren'?t sent",
        r"\bblocked - see",
        r"ip address (?:is )?(?:blocked|blacklisted|listed)",
        r"not accepting connections",
        r"your ip",
        r"access denied, banned",
        r"connection (?:refused|rejected) (?:from|by)",
        r"blocked for spamming",
        r"adresse ip source bloquee",
        r"listed (?:in|by|on) .{1,40}(?:bl|list)\b",
        r"blocked (?:in|by|on) .{1,40}(?:bl|list)\b",
        r"refused to talk to me",
        r"service not available, closing transmission channel",
        r"because of (?:your|the sending) ip",
    ),
    # Second-stage wording: reasons that generic codes usually hide.
    "virusdetected": _table(r"virus", r"infected", r"malware", r"worm detected"),
    "policyviolation": _table(
        r"policy reasons",
        r"denied by policy",
        r"header error",
        r"illegal attachment",
        r"content presents a potential",
        r"is being held",
        r"host network not allowed",
        r"rejected by policy",
        r"prohibited attachment",
        r"violates? (?:our )?(?:policy|policies)",
        r"not accepted for policy",
    ),
    "systemerror": _table(
        r"internal (?:system|server) error",
        r"system error",
        r"insufficient permission",
        r"service refused, please try later",
        r"encountered an error while being processed",
        r"local error in processing",
        r"temporary local problem",
        r"system config error",
        r"configuration error",
        r"server error",
        r"routing error",
        r"error in processing",
        r"internal error",
        r"service currently unavailable",
        r"\bconfig error",
        r"loop was found in the mail exchanger list",
        r"interrupted system call",
        r"can'?t create (?:user )?output file",
        r"timeout waiting for input",
    ),
    "networkerror": _table(
        r"hop count exceeded",
        r"too many hops",
        r"routing loop",
        r"mail loop",
        r"no route to host",
        r"lost connection",
        r"host not found, try again",
        r"malformed or unexpected name server reply",
        r"network error",
        r"maximum hop count",
        r"loop detected",
        r"dns error",
        r"connection reset",
        r"(?:unable|not able|wasn'?t able) to (?:establish|open) an? (?:smtp )?connection",
        r"connection to mail exchanger failed",
        r"host is unreachable",
        r"mail forwarding loop",
        r"unable to resolve route",
        r"unrouteable mail domain",
        r"dns records for the destination computer could not be found",
    ),
    "systemfull": _table(
        r"insufficient (?:disk|system) (?:space|storage)",
        r"mail system full",
        r"out of disk",
        r"disk (?:is )?full",
        r"file system full",
    ),
    "notaccept": _table(
        r"does not accept mail",
        r"null mx",
        r"no mx record",
        r"no mx found",
        r"indicated no smtp service",
        r"not accepting network messages",
        r"couldn'?t find a mail exchanger",
        r"does(?:n'?t| not) receive (?:e-?)?mail",
        r"accepts no mail",
    ),
    "expired": _table(
        r"retry timeout exceeded",
        r"message expired",
        r"envelope expired",
        r"delivery time expired",
        r"has been delayed",
        r"will be retried",
        r"in the queue too long",
        r"giving up",
        r"could not deliver for the last",
        r"maximum-time-expired",
        r"unable to deliver in",
        r"delivery attempts will continue",
        r"for too long",
        r"timed out",
        r"time(?:d)?[ -]?out",
        r"not been collected",
        r"not reachable within",
        r"after multiple retries",
        r"delivery failed \d+ attempts",
        r"could not find a gateway",
        r"retry time not reached",
        r"has not yet been delivered",
        r"undelivered for",
        r"queue period",
        r"no answer from host",
    ),
    "securityerror": _table(
        r"authentication required",
        r"smtp authentication",
        r"unauthenticated senders",
        r"authentication is required",
        r"not authenticated",
        r"authrequired",
        r"must (?:first )?authenticate",
        r"tls required",
        r"encryption required",
    ),
    "mailererror": _table(
        r"command output",
        r"command died",
        r"mailer error",
        r"pipe to \|",
        r"procmail",
        r"exit 75",
        r"operating system error",
        r"\bmail\.local\b.*error",
        r"exited with",
        r"delivery to (?:a )?program",
        r"x-unix",
        r"child process of .{0,60}returned",
        r"unknown mailer error",
    ),
    "syntaxerror": _table(
        r"syntax error",
        r"command parameter not implemented",
        r"malformed address",
        r"command unrecognized",
        r"unrecognized command",
        r"command not implemented",
    ),
}

# A refusal that calls the message spam: read after all specific wording (a DNSBL listing
# of the sending IP says "spam" too, and is "blocked"), before the code-class fallback
# (5.7.1 alone would say securityerror).
_SPAM_WORD = _table(
    r"\bspam\b(?! ?(?:trap|source|house|list|cop))",
    r"\bspamassassin",
    r"\bspammy\b",
    r"\bunsolicited\b",
)

# Stage 1 order: specific wording first; "blocked" last because many other
# refusals mention a block too.
_STAGE1 = (
    "mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying",
    "authfailure", "mailererror", "filtered", "userunknown", "requireptr", "notcompliantrfc",
    "badreputation", "contenterror", "toomanyconn", "rejected", "hostunknown", "spamdetected",
    "speeding", "blocked",
)  # fmt: skip

_STAGE3 = (
    "mailboxfull", "authfailure", "badreputation", "speeding", "spamdetected", "virusdetected",
    "policyviolation", "norelaying", "systemerror", "notaccept", "networkerror", "suspend",
    "contenterror", "systemfull", "expired", "securityerror", "filtered", "mailererror",
    "syntaxerror",
)  # fmt: skip

# Wording read before the status code when the diagnostic is no SMTP reply.
_NOT_SMTP_WORDING = ("mailboxfull", "mailererror", "systemfull", "systemerror")

# Reasons that userunknown-by-code gives way to when the wording says so.
_OVERRIDES_USERUNKNOWN = (
    "norelaying",
    "blocked",
    "mailboxfull",
    "hasmoved",
    "rejected",
    "notaccept",
)


def matches(reason: str, text: str) -> bool:
    """Whether text (lowercase) carries wording of this reason."""
    table = PHRASES.get(reason)
    return table is not None and table.search(text)


_LOCAL_AGENT_RE = re.compile(
    r"\b(?:mail\.local|local\.mail|dovecot-lda|deliver|maildrop|procmail):\s"
)


class _Wording:
    """One diagnostic's phrase matches, each table searched at most once."""

    __slots__ = ("text", "_hits")

    def __init__(self, text: str) -> None:
        self.text = text
        self._hits: dict[str, bool] = {}

    def has(self, reason: str) -> bool:
        hit = self._hits.get(reason)
        if hit is None:
            hit = self._hits[reason] = matches(reason, self.text)
        return hit

    def calls_it_spam(self) -> bool:
        """The refusal calls the message spam, and no listing of the sender's IP explains it."""
        hit = self._hits.get("spam word")
        if hit is None:
            hit = self._hits["spam word"] = _SPAM_WORD.search(self.text) and not self.has("blocked")
        return hit


# Where a reason came from (BounceEvent.reason_source, the event's details.reason_source):
STATUS = "status"  # a specific enhanced status code, or a structured field of the report
PHRASE = "phrase"  # an MTA's or provider's own wording (a phrase table)
GUESS = "guess"  # a fallback: a broad code class, the SMTP stage alone, or nothing at all
REASON_SOURCES = (STATUS, PHRASE, GUESS)


def classify(found: Finding) -> str:
    """The reason word for one finding (see the module description)."""
    return classify_with_source(found)[0]


def classify_with_source(found: Finding) -> tuple[str, str]:
    """The reason word for one finding and where it came from (STATUS, PHRASE or GUESS)."""
    status = found.status
    if status and status.startswith("2."):
        return "delivered", STATUS
    if found.reason:
        return found.reason, found.reason_source or PHRASE
    text = found.diagnostic.lower()
    command = found.command if found.command is not None else command_in(text)
    command = command or None
    if command is None and _LOCAL_AGENT_RE.search(text):
        # A local delivery agent has no content filter to speak for: its
        # "unknown user" is the mailbox itself, as a refusal at RCPT.
        command = "RCPT"
    by_code, reliable = status_reason(status)
    diagnostic_type = (found.diagnostic_type or "").upper()

    words = _Wording(text)
    if command is None and not status and not found.reply_code:
        # No SMTP reply and no code: the reporting MTA speaks of its own directory
        # ("Unknown user: x", "The recipient name is not recognized"), which is what a
        # refusal at RCPT means; a remote filter always answers with a reply code.
        command = "RCPT"
    if text and diagnostic_type not in ("", "SMTP"):
        # Not an SMTP reply (X-Unix, X-Postfix: a local program or the MTA itself): its
        # wording about the mailbox or the program says more than the code it mapped to.
        for reason in _NOT_SMTP_WORDING:
            if words.has(reason):
                return reason, PHRASE
    if text and not diagnostic_type.startswith("X-UNIX"):
        for reason in _STAGE1:
            if _stage1_true(reason, words, by_code, reliable, command, status):
                return reason, _stage1_source(reason, words, by_code, reliable)

    if by_code and reliable:
        return by_code, STATUS
    if text:
        for reason in _STAGE3:
            if words.has(reason):
                return reason, PHRASE
        if words.calls_it_spam():
            return "spamdetected", PHRASE
        if not (status or found.reply_code or diagnostic_type) and not _says_anything(
            text, found.recipient
        ):
            return "undefined", GUESS
    return _fallback(found, text, command, by_code, status, diagnostic_type), GUESS


_ADDRESS_RE = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")


def _says_anything(text: str, recipient: str) -> bool:
    """Whether the diagnostic says more than the address and "undeliverable"."""
    rest = _ADDRESS_RE.sub(" ", text.replace(recipient.lower(), " "))
    for filler in ("undeliverable", "undelivered", "to:", " to ", "recipient", "failed"):
        rest = rest.replace(filler, " ")
    return sum(c.isalpha() for c in rest) > 3


def _stage1_source(reason: str, words: _Wording, by_code: str | None, reliable: bool) -> str:
    """Where a stage-1 reason came from: its own code, wording, or neither."""
    if by_code == reason and reliable:
        return STATUS
    if words.has(reason) or (reason == "filtered" and words.has("userunknown")):
        return PHRASE
    if reason == "spamdetected" and words.calls_it_spam():
        return PHRASE
    return GUESS


def _fallback(
    found: Finding,
    text: str,
    command: str | None,
    by_code: str | None,
    status: str | None,
    diagnostic_type: str,
) -> str:
    """What neither a specific code nor known wording settled: broad classes, stage, Action."""
    if command == "MAIL":
        return "rejected"
    if by_code in ("userunknown", "filtered", "mailboxfull", "suspend", "hostunknown"):
        return by_code
    if status and status[2:4] == "6.":
        return "contenterror"
    if status and status[2:4] == "7.":
        return "securityerror"
    if diagnostic_type.startswith("X-UNIX"):
        return "mailererror"
    if (
        found.reply_code
        and found.reply_code[0] == "5"
        and found.reply_code[1:] in ("00", "01", "02", "03", "04")
    ):
        return "syntaxerror"
    action = (found.action or "").lower()
    if action.startswith(("delayed", "expired")):
        return "expired"
    if command in ("HELO", "EHLO", "CONN"):
        return "blocked"
    return "onhold" if text.strip() else "undefined"


def _stage1_true(
    reason: str,
    words: _Wording,
    by_code: str | None,
    reliable: bool,
    command: str | None,
    status: str | None,
) -> bool:
    """Whether stage 1 settles on this reason (see the module description)."""
    if reason == "userunknown":
        if command == "MAIL":
            # Refused at MAIL FROM: whatever is unknown, it is the sender.
            return False
        if by_code == "userunknown":
            return not any(words.has(other) for other in _OVERRIDES_USERUNKNOWN)
        if by_code and reliable:
            return False
        return command == "RCPT" and words.has("userunknown")
    if reason == "filtered":
        # Recipient-unknown wording after DATA (or with no command known) is
        # a filter speaking; refused at RCPT it is the address itself.
        if words.has("filtered"):
            # "rejected by the content filter as spam" says what the filter found
            return not words.calls_it_spam()
        if command == "RCPT" or by_code == "userunknown" or (by_code and reliable):
            return False
        if by_code == "filtered":
            return words.has("userunknown")
        return command != "MAIL" and words.has("userunknown")
    if reason == "mesgtoobig":
        return by_code != "exceedlimit" and (by_code == "mesgtoobig" or words.has(reason))
    if reason == "exceedlimit":
        return by_code == "exceedlimit" or words.has(reason)
    if reason == "hostunknown":
        if status and status[0] == "4":
            # A name that did not resolve this time is a network matter.
            return False
        if words.has("networkerror") and not (by_code == "hostunknown" and reliable):
            return False
        return by_code == "hostunknown" and reliable or words.has(reason)
    if reason == "blocked":
        return words.has(reason) or by_code == "blocked" and reliable
    if reason == "mailererror":
        # A local program's failure ("could mean user unknown" is its exit code talking);
        # a specific code of another reason still names that reason.
        return words.has(reason) and not (by_code and reliable)
    if reason == "spamdetected":
        if by_code == reason and reliable or words.has(reason):
            return True
        # Spam wording under a broad code (5.7.1, 5.0.0, none); a specific code of another
        # reason, tried earlier or later, keeps its meaning.
        return not (by_code and reliable) and words.calls_it_spam()
    if by_code == reason and reliable:
        return True
    return words.has(reason)


def kind_of(
    reason: str,
    status: str | None,
    reply_code: str | None,
    action: str | None,
    temporary: bool | None,
) -> str:
    """The event kind, as the corpus README derives it from Sisimai's result."""
    if reason == "delivered" or (status and status.startswith("2.")):
        return "delivery"
    if reason == "feedback":
        return "complaint"
    if reason == "vacation":
        return "auto_reply"
    if status and status[0] in "45":
        return "bounce" if status[0] == "5" else "soft_bounce"
    if reply_code and reply_code[0] in "45":
        return "bounce" if reply_code[0] == "5" else "soft_bounce"
    if temporary:
        return "soft_bounce"
    return "bounce"


# ---------------------------------------------------------------------------
# A detector's table of its MTA's own sentences that name a reason outright


class ReasonTable:
    """One MTA's own sentences that name a reason, owned by the detector that reads that MTA.

    The owner lets the bench switch the table off (tables_switched_off) to see what the
    structural rules and the other tables make of that MTA's reports without it.
    """

    __slots__ = ("owner", "rows")

    def __init__(self, owner: str, rows: tuple[tuple[PhraseTable, str], ...]) -> None:
        self.owner = owner
        self.rows = rows


# Owners whose tables are switched off (the bench's leave-one-family-out); empty in service.
_SWITCHED_OFF: set[str] = set()


def reason_table(owner: str, *rows: tuple[str, str]) -> ReasonTable:
    """Compile (lowercase regex, reason) rows; the first row that matches wins."""
    return ReasonTable(
        owner, tuple((PhraseTable.from_pattern(pattern), reason) for pattern, reason in rows)
    )


def table_reason(table: ReasonTable, text: str) -> str | None:
    """The reason of the first row whose phrases occur in text (any case)."""
    if _SWITCHED_OFF and table.owner in _SWITCHED_OFF:
        return None
    lowered = text.lower()
    for phrases, reason in table.rows:
        if phrases.search(lowered):
            return reason
    return None


@contextmanager
def tables_switched_off(owners: Iterable[str]) -> Iterator[None]:
    """Within the block, the reason tables of these owners (detector names) say nothing."""
    added = set(owners) - _SWITCHED_OFF
    _SWITCHED_OFF.update(added)
    try:
        yield
    finally:
        _SWITCHED_OFF.difference_update(added)
