"""Rule `flags`: `X-Mxm-Flags` sets per-message options as a bitwise integer (Maxemail).

Stage: eom. Only the first header counts (later ones are ignored, as Maxemail documents).
Bits: 1 open tracking, 2 click tracking, 4 check the unsubscribe list, 8 ignore the bounce list.
No header: the account's defaults apply (bounce list checked, unsubscribe list not).
Refuses: 554 5.6.0 when the value is not a whole number from 0 to 15.
"""

from __future__ import annotations

from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, Plan, Refusal
from txmail.milter.submission import Submission

NAME = "flags"
DESCRIPTION = "X-Mxm-Flags: 1 opens, 2 clicks, 4 unsubscribe list, 8 ignore bounce list"
STAGES = (EOM,)

HEADER = "X-Mxm-Flags"
OPEN_TRACKING, CLICK_TRACKING, CHECK_UNSUBSCRIBES, IGNORE_BOUNCES = 1, 2, 4, 8
MAXIMUM = 15


@dataclass(frozen=True)
class Flagged:
    flags: int

    def apply(self, plan: Plan) -> None:
        plan.flags = self.flags


def check(submission: Submission, settings: AccountSettings) -> Refusal | Flagged | None:
    values = submission.header_values(HEADER)
    if not values:
        return None
    text = values[0].strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAXIMUM:
        shown = "".join(c if c.isprintable() else "?" for c in text[:20])
        return Refusal(
            "554",
            "5.6.0",
            f'{HEADER} "{shown}" is not a whole number from 0 to '
            f"{MAXIMUM}; add the bits you want: 1 open tracking, 2 click tracking, "
            "4 check the unsubscribe list, 8 ignore the bounce list",
        )
    return Flagged(int(text))
