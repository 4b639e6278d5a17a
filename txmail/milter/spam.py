"""The spam check: ask rspamd (HTTP POST /checkv2) for a message's score.

The milter calls SpamChecker.score() at end of message when spam.rspamd_url is set and refuses
the message with 550 5.7.1 when the score is above the account's spam_threshold. The request
carries the envelope (rspamd's From, Rcpt, Queue-Id headers, plus User for the SASL login, which
tells rspamd the mail is outbound) and the message as the body.

Reads:  spam.rspamd_url (else the rspamd of spam.enabled), spam.timeout, spam.on_failure.
Fails:  rspamd unreachable, slow (spam.timeout) or answering nonsense: TemporaryFailure (the
        client gets a 4xx and retries) when spam.on_failure = "tempfail", the default; with
        "skip", a warning is logged and score() returns None, so the message goes on unchecked.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from txmail.errors import TemporaryFailure

if TYPE_CHECKING:
    from txmail.config import Settings

log = logging.getLogger("txmail.milter.spam")

MAX_HEADER_VALUE = 512
_UNSAFE = re.compile(r"[\r\n\x00]")


def _header_value(text: str) -> str:
    """Envelope values go into HTTP headers: no line breaks, bounded length."""
    return _UNSAFE.sub("", text)[:MAX_HEADER_VALUE]


@dataclass(frozen=True)
class SpamChecker:
    """Asks one rspamd. `rspamd_url` empty means no spam check (score() returns None)."""

    rspamd_url: str = ""
    timeout: float = 10.0
    on_failure: str = "tempfail"  # or "skip"

    @classmethod
    def from_settings(cls, settings: Settings) -> SpamChecker:
        spam = settings.spam
        return cls(rspamd_url=spam.url, timeout=spam.timeout, on_failure=spam.on_failure)

    @property
    def enabled(self) -> bool:
        return bool(self.rspamd_url)

    def score(
        self,
        message: bytes,
        envelope_sender: str,
        recipients: list[str],
        queue_id: str,
        login: str | None = None,
    ) -> float | None:
        """rspamd's score for the message, or None when no check is configured (or rspamd
        failed and spam.on_failure = "skip")."""
        if not self.rspamd_url:
            return None
        try:
            return self._ask(message, envelope_sender, recipients, queue_id, login)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = f"rspamd at {self.rspamd_url} cannot be asked: {exc or type(exc).__name__}"
            if self.on_failure == "skip":
                log.warning("%s: spam check skipped: %s", queue_id or "NOQUEUE", reason)
                return None
            raise TemporaryFailure(reason) from None

    def _ask(
        self,
        message: bytes,
        envelope_sender: str,
        recipients: list[str],
        queue_id: str,
        login: str | None,
    ) -> float:
        url = urlsplit(self.rspamd_url)
        if url.hostname is None:
            raise ValueError("spam.rspamd_url has no host")
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        connection = kind(url.hostname, url.port, timeout=self.timeout)
        try:
            connection.putrequest("POST", url.path.rstrip("/") + "/checkv2")
            connection.putheader("From", _header_value(envelope_sender))
            for recipient in recipients:
                connection.putheader("Rcpt", _header_value(recipient))
            if queue_id:
                connection.putheader("Queue-Id", _header_value(queue_id))
            if login:
                connection.putheader("User", _header_value(login))
            connection.putheader("Content-Type", "message/rfc822")
            connection.putheader("Content-Length", str(len(message)))
            connection.endheaders(message)
            response = connection.getresponse()
            body = response.read(1_000_000)
        finally:
            connection.close()
        if response.status != 200:
            raise ValueError(f"HTTP {response.status} {response.reason}")
        answer = json.loads(body)
        if not isinstance(answer, dict) or "score" not in answer:
            raise ValueError("answer without a score")
        return float(answer["score"])
