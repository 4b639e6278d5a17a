"""Rule `single_recipient`: Maxemail's single-recipient mode (`recipient_mode = single`).

Stage: eom; only for accounts in single mode. The first address of the To header is the message's
recipient and must be one of the envelope recipients. Every other address leaves the headers:
further To addresses, and all Cc and Bcc headers. Of the other envelope recipients, in RCPT TO
order, the first stays on the message as a BCC copy (the same message as the To recipient's; it
is recorded as `bcc` on the message record so tracking can leave it out) and the rest are taken
off, each with a `blocked` event that says why.
Refuses: 550 5.6.0 when the To header has no address; 550 5.7.1 when the To address is not an
envelope recipient.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, HeaderEdit, Plan, Refusal
from txmail.milter.submission import Submission, addresses

NAME = "single_recipient"
DESCRIPTION = "Single-recipient mode: the To recipient, one BCC copy, nobody else"
STAGES = (EOM,)

DISCARDED = (
    "single-recipient mode sends only to the To header's recipient and a BCC copy to "
    "the first other envelope recipient"
)


@dataclass(frozen=True)
class SingleRecipient:
    to: str
    bcc: str | None
    discarded: tuple[str, ...]
    edits: tuple[HeaderEdit, ...]

    def apply(self, plan: Plan) -> None:
        plan.bcc = self.bcc
        for recipient in self.discarded:
            plan.block(recipient, "discarded", explanation=DISCARDED, to=self.to)
        plan.header_edits.extend(self.edits)


def _to_value(display: str, address: str) -> str:
    """The To header for one address. formataddr() raises on a non-ASCII address (an SMTPUTF8
    one, RFC 6531): that one is written as given, in UTF-8 as RFC 6532 allows, and bytes that
    are not UTF-8 become U+FFFD (Postfix is handed text)."""
    try:
        return email.utils.formataddr((display, address))
    except UnicodeError:
        value = f'"{email.utils.quote(display)}" <{address}>' if display else f"<{address}>"
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check(submission: Submission, settings: AccountSettings) -> Refusal | SingleRecipient | None:
    if settings.recipient_mode != "single":
        return None
    to_headers = submission.header_values("To")
    first_header = addresses(to_headers[:1])
    if not first_header:
        return Refusal(
            "550",
            "5.6.0",
            "In single-recipient mode the To header must name the "
            "recipient; add a To header with one address",
        )
    display, to_address = first_header[0]
    recipients = submission.plan.recipients
    matching = [r for r in recipients if r.lower() == to_address.lower()]
    if not matching:
        return Refusal(
            "550",
            "5.7.1",
            f"The To header address {to_address[:100]} is not an "
            "envelope recipient; in single-recipient mode give it in RCPT TO too",
        )
    edits: list[HeaderEdit] = []
    if len(first_header) > 1:
        edits.append(HeaderEdit("To", 1, _to_value(display, to_address)))
    edits += [HeaderEdit("To", i, None) for i in range(len(to_headers), 1, -1)]
    for name in ("Cc", "Bcc"):
        count = len(submission.header_values(name))
        edits += [HeaderEdit(name, i, None) for i in range(count, 0, -1)]
    others = [r for r in recipients if r.lower() != to_address.lower()]
    return SingleRecipient(
        to=matching[0],
        bcc=others[0] if others else None,
        discarded=tuple(others[1:]),
        edits=tuple(edits),
    )
