"""Rule `recipients`: at most `max_recipients` envelope recipients per message.

Stage: rcpt. The RCPT TO that goes over the limit gets a 452 4.5.3 (RFC 5321 §4.5.3.1.10), so
the recipients accepted so far stay on the message and the client sends the rest in another one.
"""

from __future__ import annotations

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import RCPT, Refusal
from txmail.milter.submission import Submission

NAME = "recipients"
DESCRIPTION = "At most max_recipients envelope recipients per message (452 4.5.3)"
STAGES = (RCPT,)


def check(submission: Submission, settings: AccountSettings) -> Refusal | None:
    limit = settings.max_recipients
    if len(submission.recipients) > limit:
        return Refusal(
            "452",
            "4.5.3",
            f"Too many recipients (maximum {limit}); send the rest in another message",
        )
    return None
