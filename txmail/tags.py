"""Message tags: what a tag may be, how many a message may carry, and the refusal when not.

SYNOPSIS
    merge(pieces) -> tuple of tags | TagRefusal

DESCRIPTION
    A client labels a message for reports and webhooks with the headers X-CloudMTA-Tags and
    X-Mxm-Tag (comma lists), or with the `tags` field of POST /v1/send, which becomes an
    X-Mxm-Tag header. Both ways are judged here, once: the milter's `tags` rule
    (txmail/milter/rules/tags.py) reads the headers of every message, SMTP or API, and the
    API checks its field before it injects the message, so a client gets the same limits and
    the same sentence whichever way it sends.

    merge() takes the candidate tags in message order, strips whitespace, drops empty ones
    and duplicates, and returns the tags; or a TagRefusal (554 5.6.0 and a sentence) for a
    tag of more than MAX_LENGTH characters or with characters that are not printable, or for
    more than MAX_TAGS different tags. It stops at the first problem, so its work is bounded
    by its input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HEADERS = ("X-CloudMTA-Tags", "X-Mxm-Tag")
MAX_TAGS = 10
MAX_LENGTH = 64
REFUSAL_CODE = 554
REFUSAL_STATUS = "5.6.0"


@dataclass(frozen=True)
class TagRefusal:
    sentence: str
    code: int = REFUSAL_CODE
    status: str = REFUSAL_STATUS


def merge(pieces: Iterable[str]) -> tuple[str, ...] | TagRefusal:
    """The tags of `pieces` (see the module text), or why they cannot be."""
    found: dict[str, None] = {}
    for piece in pieces:
        tag = piece.strip()
        if not tag:
            continue
        if len(tag) > MAX_LENGTH or not tag.isprintable():
            shown = "".join(c if c.isprintable() else "?" for c in tag[:MAX_LENGTH])
            return TagRefusal(
                f'Tag "{shown}" is not allowed: a tag is at most '
                f"{MAX_LENGTH} printable characters; shorten it"
            )
        found[tag] = None
        if len(found) > MAX_TAGS:
            return TagRefusal(
                f"Too many tags (maximum {MAX_TAGS}) in "
                f"{' and '.join(HEADERS)}; keep the {MAX_TAGS} that matter"
            )
    return tuple(found)
