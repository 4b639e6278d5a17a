"""Rule `tags`: `X-CloudMTA-Tags` and `X-Mxm-Tag` label a message for reports and webhooks.

Stage: eom. Any number of either header; each value is split at commas, whitespace is stripped,
empty pieces are dropped, and the tags of all headers are merged in message order without
duplicates. The tags are stored on the message record, copied into its events and counted per
tag (PREFIX {ACCOUNT}:tags).
Refuses: 554 5.6.0 for more than MAX_TAGS tags, or a tag longer than MAX_LENGTH characters or with
characters that are not printable. The limits and the sentences are txmail/tags.py's, which the
HTTP API's `tags` field goes through too.
"""

from __future__ import annotations

from dataclasses import dataclass

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, Plan, Refusal
from txmail.milter.submission import Submission, unfold
from txmail.tags import HEADERS, TagRefusal, merge

NAME = "tags"
DESCRIPTION = "X-CloudMTA-Tags / X-Mxm-Tag: up to 10 tags of up to 64 printable characters"
STAGES = (EOM,)


@dataclass(frozen=True)
class Tagged:
    tags: tuple[str, ...]

    def apply(self, plan: Plan) -> None:
        plan.tags = list(self.tags)


def check(submission: Submission, settings: AccountSettings) -> Refusal | Tagged | None:
    wanted = {h.lower() for h in HEADERS}
    merged = merge(
        piece
        for name, value in submission.headers
        if name.lower() in wanted
        for piece in unfold(value).split(",")
    )
    if isinstance(merged, TagRefusal):
        return Refusal(str(merged.code), merged.status, merged.sentence)
    return Tagged(merged) if merged else None
