"""Rule `message_class`: `X-CloudMTA-Class: standard|priority|digest` picks the delivery queue.

Stage: eom. The value is case-insensitive; no header means standard. The milter adds the routing
header ROUTE_HEADER for priority and digest after this check; Postfix's milter_header_checks turn
it into a FILTER to the `priority` or `digest` transport (POSTFIX-NOTES §6), each with its own
queue scheduling, so a digest backlog never delays priority mail. The header itself is removed
again before the message leaves (rule control_headers and the milter's edits).
Refuses: 554 5.6.0 listing the allowed values, for an unknown value or headers that disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, Plan, Refusal
from txmail.milter.submission import Submission

NAME = "message_class"
DESCRIPTION = "X-CloudMTA-Class routes to the standard, priority or digest queue"
STAGES = (EOM,)

HEADER = "X-CloudMTA-Class"
ROUTE_HEADER = "X-CloudMTA-Route"
CLASSES = ("standard", "priority", "digest")


@dataclass(frozen=True)
class Route:
    message_class: str

    def apply(self, plan: Plan) -> None:
        plan.message_class = self.message_class


def check(submission: Submission, settings: AccountSettings) -> Refusal | Route | None:
    values = {v.strip().lower() for v in submission.header_values(HEADER)}
    if not values:
        return None
    unknown = sorted(values - set(CLASSES))
    if unknown or len(values) > 1:
        given = ", ".join(repr(v[:40]) for v in (unknown or sorted(values)))
        return Refusal(
            "554",
            "5.6.0",
            f"{HEADER} {given} is not one class; give one "
            f"{HEADER} header with one of: {', '.join(CLASSES)}",
        )
    return Route(values.pop())
