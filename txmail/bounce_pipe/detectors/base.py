"""What a bounce detector is: a name and detect(), from the returned-mail view to outcomes.

DESCRIPTION
    Every detector receives the same pre-digested view of a returned mail, a
    ReturnedMail (txmail.bounce_pipe.returned), so that MIME walking, transfer
    decoding and charset repair happen once and never in a detector. A
    detector collects Findings (one per recipient, with whatever the MTA
    printed: status, reply code, SMTP command, diagnostic text) and turns them
    into BounceEvents with txmail.outcomes.classify.finish(), which asks
    txmail.outcomes.reasons for the reason word and derives the kind. It
    returns None when the mail is not its kind of report.
"""

from __future__ import annotations

from typing import Protocol

from txmail.bounce_pipe.returned import ReturnedMail
from txmail.outcomes.findings import BounceEvent


class Detector(Protocol):
    """A detector: a name and a detect() that returns events or None."""

    name: str

    def detect(self, mail: ReturnedMail) -> list[BounceEvent] | None: ...
