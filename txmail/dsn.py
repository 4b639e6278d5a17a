"""The DSN parameters of RFC 3461 as txmail reads them: one parser for the milter, the bounce
pipe and the send API.

SYNOPSIS
    notify_words("failure, delay")          # ("FAILURE", "DELAY"); None: not a valid NOTIFY
    notify_of(["NOTIFY=FAILURE", "ORCPT=rfc822;a@b"])   # frozenset({"FAILURE"}); None: no NOTIFY
    wanted(params)                          # what the recipient is reported: DEFAULT_NOTIFY
                                            # when it gave no NOTIFY
    esmtp_value(params, "RET")              # "HDRS", "" when absent

DESCRIPTION
    NOTIFY is NEVER alone or a comma list of SUCCESS, FAILURE and DELAY (RFC 3461 §4.1). A
    recipient that gave no NOTIFY is reported failures and delays: RFC 3461 §4.1 lets the MTA
    choose ("as if NOTIFY=FAILURE or NOTIFY=FAILURE,DELAY"), and Postfix reports every delay
    and failure of such a recipient (bounce_notify_util: "In the absence of DSN NOTIFY
    information all records are reported"), so DEFAULT_NOTIFY is FAILURE and DELAY.

    notify_words() is strict (what a client sends to the API); notify_of() reads parameters
    Postfix has taken already, so it keeps whatever keywords they hold.
"""

from __future__ import annotations

from collections.abc import Iterable

NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")
DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})


def esmtp_value(params: Iterable[str], keyword: str) -> str | None:
    """The value of ESMTP parameter `keyword` (case-insensitive) among `params` ("KEY=value"),
    stripped; None when it is not there."""
    wanted = keyword.upper()
    for param in params:
        key, equals, value = param.partition("=")
        if equals and key.strip().upper() == wanted:
            return value.strip()
    return None


def notify_words(value: str) -> tuple[str, ...] | None:
    """The keywords of a NOTIFY value, upper-cased, each once, in order; None when the value is
    not NEVER alone or a list of SUCCESS, FAILURE and DELAY (an empty item included)."""
    words = tuple(dict.fromkeys(w.strip().upper() for w in value.split(",")))
    if words == ("NEVER",) or (words and all(w in NOTIFY_KEYWORDS for w in words)):
        return words
    return None


def notify_of(params: Iterable[str]) -> frozenset[str] | None:
    """The NOTIFY keywords among RCPT parameters, upper-cased; None when there is no NOTIFY
    (or an empty one)."""
    value = esmtp_value(params, "NOTIFY")
    if not value:
        return None
    found = frozenset(w.strip().upper() for w in value.split(",") if w.strip())
    return found or None


def wanted(params: Iterable[str]) -> frozenset[str]:
    """The notices a recipient with these RCPT parameters is sent: its NOTIFY, else
    DEFAULT_NOTIFY (FAILURE and DELAY, as Postfix does)."""
    return notify_of(params) or DEFAULT_NOTIFY
