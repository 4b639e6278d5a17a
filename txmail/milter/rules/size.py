"""Rule `size`: each account's own message size limit, `max_message_size`.

Stages: mail (the client's SIZE= parameter, so an oversized message is refused before it is
sent) and eom (the bytes the milter saw: header lines plus body). Postfix's message_size_limit
is the node-wide ceiling and covers every account's limit (`txmail accounts set` refuses more).
Refuses: 552 5.3.4.
"""

from __future__ import annotations

from typing import Any

from txmail.milter.rules import EOM, MAIL, Refusal
from txmail.milter.submission import Submission

NAME = "size"
DESCRIPTION = "Messages larger than max_message_size are refused (552 5.3.4)"
STAGES = (MAIL, EOM)


def _megabytes(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB".replace(".0 MB", " MB")


def check(submission: Submission, settings: dict[str, Any]) -> Refusal | None:
    limit = int(settings["max_message_size"])
    if submission.stage == MAIL:
        declared = submission.params.get("SIZE") or ""
        size = int(declared) if declared.isdigit() else 0
    else:
        size = submission.size
    if size > limit:
        return Refusal("552", "5.3.4", f"Message too big for this account ({_megabytes(size)}, "
                       f"maximum {_megabytes(limit)}); make it smaller, for example by linking "
                       "to large files instead of attaching them")
    return None
