"""Rule `rewrite_from`: the From header becomes the MAIL FROM address, keeping its display name.

Stage: eom. On when the account's `rewrite_from` is `on`, or `auto` in single recipient_mode
(Maxemail: "Oxford Stones <newsletters@…>" sent as MAIL FROM outgoing@… arrives as
"Oxford Stones <outgoing@…>"). With `MAIL FROM:<>` there is no address to use and the From header
stays. Extra From headers are removed, so exactly one author remains.

The display name is written so that it cannot become header syntax: kept as written only when
it is nothing but RFC 2047 encoded-words whose text holds no special character (RFC 2047 §5(3):
letters, digits and !*+-/=_ in a phrase), otherwise decoded and written by formataddr, which
quotes it (or encodes it when it is not ASCII); a name that cannot be decoded is dropped. So the
header that leaves has exactly one address, the MAIL FROM address, which rule `sender` checked.
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import re
from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, HeaderEdit, Plan
from txmail.milter.submission import Submission, addresses

NAME = "rewrite_from"
DESCRIPTION = "From header rewritten to the MAIL FROM address (display name kept)"
STAGES = (EOM,)


@dataclass(frozen=True)
class RewriteFrom:
    edits: tuple[HeaderEdit, ...]

    def apply(self, plan: Plan) -> None:
        plan.header_edits.extend(self.edits)


def enabled(settings: AccountSettings) -> bool:
    mode = settings.rewrite_from
    return mode == "on" or (mode == "auto" and settings.recipient_mode == "single")


# One or more encoded-words (RFC 2047: =?charset?B|Q?text?=), with only the characters RFC 2047
# §5(3) allows in a phrase: none of them is header syntax (no quote, comma, <, > or @).
_WORD = r"=\?[A-Za-z0-9!#$%&'*+^_`{|}~-]+\?[BbQq]\?[A-Za-z0-9!*+/=_-]*\?="
ENCODED_WORDS = re.compile(rf"{_WORD}(?:[ \t]+{_WORD})*")


def _decoded(display: str) -> str:
    """An RFC 2047 display name as text ("" when it cannot be decoded)."""
    try:
        return str(email.header.make_header(email.header.decode_header(display)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return ""


def author(display: str, address: str) -> str:
    """The From header value for `address` with the display name `display`: one address only,
    whatever the name holds."""
    if ENCODED_WORDS.fullmatch(display):  # kept as it was written: nothing in it is syntax
        return f"{display} <{address}>"
    if "=?" in display:
        display = _decoded(display)
    if not display:
        return address
    # formataddr quotes (or encodes) the name; it takes only an ASCII address, so an SMTPUTF8
    # one is put after the name it wrote for a stand-in
    name = email.utils.formataddr((display, "a@b")).removesuffix(" <a@b>")
    return f"{name} <{address}>"


def replaces(submission: Submission, settings: AccountSettings) -> bool:
    """Whether the From header will be replaced: the rewrite is on, there is a MAIL FROM
    address to put there and a From header to replace."""
    return enabled(settings) and bool(submission.sender) and bool(submission.header_values("From"))


def check(submission: Submission, settings: AccountSettings) -> RewriteFrom | None:
    if not replaces(submission, settings):
        return None
    from_headers = submission.header_values("From")
    found = addresses(from_headers[:1])
    display = found[0][0] if found else ""
    edits = [HeaderEdit("From", 1, author(display, submission.sender))]
    edits += [HeaderEdit("From", i, None) for i in range(len(from_headers), 1, -1)]
    return RewriteFrom(tuple(edits))
