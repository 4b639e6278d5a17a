"""Rule `size`: each account's own message size limit, `max_message_size`.

Stages: mail (the client's SIZE= parameter, so an oversized message is refused before it is
sent) and eom (`client_size()`: the bytes the client sent after DATA, as Postfix's smtpd
counts them against message_size_limit and as RFC 1870 defines SIZE). A message of exactly
`max_message_size` bytes is accepted; one byte more is refused.

What the milter sees is not byte for byte what the client sent, so client_size() adds back
what Postfix takes away: the CR of every folded header line (header values arrive with folds
joined by a bare LF) and the empty line between header and body. Postfix's own Received header
is not among the headers it hands the milter, and what txmail adds (signatures, routing
headers, the bounce address) comes later: neither counts. A header written without a space
after its colon ("Subject:x") is counted one byte longer than sent; nothing else is off.

Postfix's message_size_limit is the node-wide ceiling and covers every account's limit
(`txmail accounts set` refuses more); Postfix checks it against its whole queue file, so the
rendered value leaves room for what is added to the client's message (stack/render.py).
Refuses: 552 5.3.4.
"""

from __future__ import annotations

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, MAIL, Refusal
from txmail.milter.submission import Submission

NAME = "size"
DESCRIPTION = "Messages larger than max_message_size are refused (552 5.3.4)"
STAGES = (MAIL, EOM)
HEADER_BODY_SEPARATOR = 2  # the empty line (CRLF) Postfix does not pass on as body


def _megabytes(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB".replace(".0 MB", " MB")


def client_size(submission: Submission) -> int:
    """The bytes of the message as the client sent it, so far (header lines, the empty line,
    the body), from what the milter has seen."""
    folds = sum(value.count("\n") for _, value in submission.headers)
    return submission.size + folds + HEADER_BODY_SEPARATOR


def check(submission: Submission, settings: AccountSettings) -> Refusal | None:
    limit = settings.max_message_size
    if submission.stage == MAIL:
        declared = submission.params.get("SIZE") or ""
        size = int(declared) if declared.isdigit() else 0
    else:
        size = client_size(submission)
    if size > limit:
        return Refusal(
            "552",
            "5.3.4",
            f"Message too big for this account ({_megabytes(size)}, "
            f"maximum {_megabytes(limit)}); make it smaller, for example by linking "
            "to large files instead of attaching them",
        )
    return None
