"""Postfix maillog lines that carry a recipient's delivery status, parsed.

    ... NAME/smtp[PID]: QID: to=<rcpt>, [orig_to=<rcpt>, ]relay=HOST[ADDR]:PORT, delay=D,
        delays=a/b/c/d, dsn=X.Y.Z, status=sent|deferred|bounced|expired (TEXT)

(POSTFIX-NOTES §8). Every other line gives None. The text in parentheses is the remote
server's reply or Postfix's own explanation; it is kept whole (capped) as the diagnostic.
delay= (seconds since the message arrived) grows from one attempt to the next, so it tells a
deferral line read again from the next attempt (txmail.maillog.server).

Fails: never; a line that does not fit is simply not a delivery status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 8192
_STATUS = re.compile(
    r":\s(?P<qid>[0-9A-Za-z]{5,29}): to=<(?P<to>[^>]{0,320})>,"
    r"(?: orig_to=<(?P<orig>[^>]{0,320})>,)?"
    r" relay=(?P<relay>[^,\s]+),(?P<between>.*?)"
    r" dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status=(?P<status>sent|deferred|bounced|expired)"
    r"(?:, returned to sender)?(?: \((?P<text>.*)\))?\s*$"
)

_DELAY = re.compile(r"(?:^| )delay=(\d{1,12}(?:\.\d{1,6})?),")


@dataclass(frozen=True)
class DeliveryStatus:
    queue_id: str
    recipient: str
    original_recipient: str
    relay: str
    dsn: str
    status: str
    text: str
    delay: str = ""  # delay=, seconds since the message arrived ("" when the line has none)

    @property
    def remote_mta(self) -> str | None:
        """The host part of relay= ("none" and local transports give None)."""
        host = self.relay.split("[", 1)[0]
        return host if host and host != "none" and "[" in self.relay else None


def parse_line(line: str) -> DeliveryStatus | None:
    if "status=" not in line or " to=<" not in line:
        return None
    match = _STATUS.search(line[:MAX_LINE])
    if match is None:
        return None
    return DeliveryStatus(
        queue_id=match["qid"],
        recipient=match["to"],
        original_recipient=match["orig"] or "",
        relay=match["relay"],
        dsn=match["dsn"],
        status=match["status"],
        text=match["text"] or "",
        delay=delay[1] if (delay := _DELAY.search(match["between"])) else "",
    )
