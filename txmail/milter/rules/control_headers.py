"""Rule `control_headers`: txmail's control headers never leave the relay.

Stage: eom, last. Every X-CloudMTA-* and X-Mxm-* header the client sent (class, tags, flags, and
a routing header a client might forge) is deleted; the milter's own routing header is removed
by the milter after Postfix has routed on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, HeaderEdit, Plan
from txmail.milter.submission import Submission

NAME = "control_headers"
DESCRIPTION = "X-CloudMTA-* and X-Mxm-* headers are removed before the message leaves"
STAGES = (EOM,)

PREFIXES = ("x-cloudmta-", "x-mxm-")


def is_control(name: str) -> bool:
    return name.lower().startswith(PREFIXES)


@dataclass(frozen=True)
class Strip:
    edits: tuple[HeaderEdit, ...]

    def apply(self, plan: Plan) -> None:
        plan.header_edits.extend(self.edits)


def check(submission: Submission, settings: AccountSettings) -> Strip | None:
    counts: dict[str, int] = {}
    found: list[tuple[str, int]] = []
    for name, _ in submission.headers:
        key = name.lower()
        counts[key] = counts.get(key, 0) + 1
        if key.startswith(PREFIXES):
            found.append((name, counts[key]))
    if not found:
        return None
    # Highest index first, so every deletion leaves the lower indices where they were.
    found.sort(key=lambda item: (item[0].lower(), -item[1]))
    return Strip(tuple(HeaderEdit(name, index, None) for name, index in found))
