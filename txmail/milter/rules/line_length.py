"""Rule `line_length`: no body line longer than RFC 5322's 998 characters.

Postfix folds longer lines on the way out (smtp_line_length_limit), which changes the body
after the milter has DKIM-signed it: the signature would fail at the receiver. So such mail is
refused with a sentence that says how to send it instead.
Stages: eom. Refuses: 554 5.6.0.
"""

from __future__ import annotations

import re
from typing import Any

from txmail.milter.rules import EOM, Refusal
from txmail.milter.submission import Submission

NAME = "line_length"
DESCRIPTION = "Body lines longer than 998 characters are refused (554 5.6.0)"
STAGES = (EOM,)
MAX_LINE = 998
_TOO_LONG = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE + 1))


def check(submission: Submission, settings: dict[str, Any]) -> Refusal | None:
    body = submission.body()
    found = _TOO_LONG.search(body)
    if found is None:
        return None
    line = body.count(b"\n", 0, found.start()) + 1
    return Refusal("554", "5.6.0", f"Line {line} of the message body is longer than "
                   f"{MAX_LINE} characters, which mail cannot carry unchanged (RFC 5322); "
                   "encode the body as quoted-printable or base64")
