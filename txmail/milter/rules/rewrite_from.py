"""Rule `rewrite_from`: the From header becomes the MAIL FROM address, keeping its display name.

Stage: eom. On when the account's `rewrite_from` is `on`, or `auto` in single recipient_mode
(Maxemail: "Oxford Stones <newsletters@…>" sent as MAIL FROM outgoing@… arrives as
"Oxford Stones <outgoing@…>"). With `MAIL FROM:<>` there is no address to use and the From header
stays. Extra From headers are removed, so exactly one author remains.
"""

from __future__ import annotations

import email.utils
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


def author(display: str, address: str) -> str:
    if "=?" in display:  # an RFC 2047 encoded display name is kept as it was written
        return f"{display} <{address}>"
    return email.utils.formataddr((display, address))


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
