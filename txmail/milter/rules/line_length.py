"""Rule `line_length`: no body line longer than RFC 5322's 998 characters.

Postfix folds longer lines on the way out (smtp_line_length_limit), which changes the body
after the milter has DKIM-signed it: the signature would fail at the receiver. So such mail is
refused with a sentence that says how to send it instead.
Stages: eom. Refuses: 554 5.6.0.
"""

from __future__ import annotations

from txmail.accounts.settings import AccountSettings
from txmail.milter.rules import EOM, Refusal
from txmail.milter.submission import Submission

NAME = "line_length"
DESCRIPTION = "Body lines longer than 998 characters are refused (554 5.6.0)"
STAGES = (EOM,)
MAX_LINE = 998


def too_long(body: bytes) -> int:
    """The number of the first body line over MAX_LINE characters (its CR not counted), or 0.

    One split and one pass over the lengths: linear in the body. (A regular expression such as
    [^\r\n]{999} is tried at every position and cost 0.9 ms on a 5 KB message.)"""
    lines = body.split(b"\n")
    if max(map(len, lines)) <= MAX_LINE:  # every line fits, even counting its CR
        return 0
    for number, line in enumerate(lines, 1):
        if len(line) - line.endswith(b"\r") > MAX_LINE:
            return number
    return 0


def check(submission: Submission, settings: AccountSettings) -> Refusal | None:
    line = too_long(submission.body())
    if not line:
        return None
    return Refusal(
        "554",
        "5.6.0",
        f"Line {line} of the message body is longer than "
        f"{MAX_LINE} characters, which mail cannot carry unchanged (RFC 5322); "
        "encode the body as quoted-printable or base64",
    )
