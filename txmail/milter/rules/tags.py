"""Rule `tags`: `X-CloudMTA-Tags` and `X-Mxm-Tag` label a message for reports and webhooks.

Stage: eom. Any number of either header; each value is split at commas, whitespace is stripped,
empty pieces are dropped, and the tags of all headers are merged in message order without
duplicates. The tags are stored on the message record, copied into its events and counted per
tag (PREFIX {ACCOUNT}:tags).
Refuses: 554 5.6.0 for more than MAX_TAGS tags, or a tag longer than MAX_LENGTH characters or with
characters that are not printable.
"""

from __future__ import annotations

from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, Plan, Refusal
from txmail.milter.submission import Submission, unfold

NAME = "tags"
DESCRIPTION = "X-CloudMTA-Tags / X-Mxm-Tag: up to 10 tags of up to 64 printable characters"
STAGES = (EOM,)

HEADERS = ("X-CloudMTA-Tags", "X-Mxm-Tag")
MAX_TAGS = 10
MAX_LENGTH = 64


@dataclass(frozen=True)
class Tagged:
    tags: tuple[str, ...]

    def apply(self, plan: Plan) -> None:
        plan.tags = list(self.tags)


def check(submission: Submission, settings: AccountSettings) -> Refusal | Tagged | None:
    wanted = {h.lower() for h in HEADERS}
    found: dict[str, None] = {}
    for name, value in submission.headers:
        if name.lower() not in wanted:
            continue
        for piece in unfold(value).split(","):
            tag = piece.strip()
            if not tag:
                continue
            if len(tag) > MAX_LENGTH or not tag.isprintable():
                shown = "".join(c if c.isprintable() else "?" for c in tag[:MAX_LENGTH])
                return Refusal(
                    "554",
                    "5.6.0",
                    f'Tag "{shown}" is not allowed: a tag is at most '
                    f"{MAX_LENGTH} printable characters; shorten it",
                )
            found[tag] = None
            if len(found) > MAX_TAGS:
                return Refusal(
                    "554",
                    "5.6.0",
                    f"Too many tags (maximum {MAX_TAGS}) in "
                    f"{' and '.join(HEADERS)}; keep the {MAX_TAGS} that matter",
                )
    return Tagged(tuple(found)) if found else None
