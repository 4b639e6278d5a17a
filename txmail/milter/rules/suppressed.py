"""Rule `suppressed`: recipients on the account's suppression lists are taken off the message.

Stage: eom, after every rule that refuses or drops recipients. The milter looks the remaining
recipients up (txmail/store/suppressions.py) on the lists `lists(plan)` names and puts what it
found on submission.suppressed: the bounce list unless flag 8 (ignore the bounce list), and the
unsubscribe list with flag 4. Each suppressed recipient gets one `blocked` event naming the list
and the reason it was suppressed for.
Refuses: 550 5.7.1 naming the recipients when none is left.
"""

from __future__ import annotations

from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, Plan, Refusal
from txmail.milter.rules.flags import CHECK_UNSUBSCRIBES, IGNORE_BOUNCES
from txmail.milter.submission import Submission
from txmail.store.suppressions import SuppressionEntry

NAME = "suppressed"
DESCRIPTION = "Recipients on the bounce list (unless flag 8) or unsubscribe list (flag 4) dropped"
STAGES = (EOM,)


def lists(plan: Plan) -> tuple[str, ...]:
    wanted = [] if plan.flag(IGNORE_BOUNCES) else ["bounce"]
    if plan.flag(CHECK_UNSUBSCRIBES):
        wanted.append("unsubscribe")
    return tuple(wanted)


@dataclass(frozen=True)
class Suppressed:
    entries: tuple[tuple[str, SuppressionEntry], ...]

    def apply(self, plan: Plan) -> None:
        for recipient, entry in self.entries:
            plan.block(
                recipient,
                "suppressed",
                list=entry.list,
                suppression_reason=entry.reason,
                suppressed_at=entry.created_at,
            )
        if plan.bcc is not None and plan.bcc not in plan.recipients:
            plan.bcc = None


def check(submission: Submission, settings: AccountSettings) -> Refusal | Suppressed | None:
    wanted = lists(submission.plan)
    hits = [
        (r, submission.suppressed[r])
        for r in submission.plan.recipients
        if r in submission.suppressed and submission.suppressed[r].list in wanted
    ]
    if not hits:
        return None
    if len(hits) == len(submission.plan.recipients):
        named = "; ".join(f"{r} ({e.list} list: {e.reason})" for r, e in hits[:5])
        more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
        return Refusal(
            "550",
            "5.7.1",
            f"Every recipient is suppressed: {named}{more}; "
            "remove them from your mailing, or from the suppression list if they "
            "should get mail again",
        )
    return Suppressed(tuple(hits))
