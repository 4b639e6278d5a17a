"""Bounce detectors, one module per MTA family or report format.

DESCRIPTION
    DETECTORS lists every detector in the order txmail.bounce_pipe.parse tries
    them; the first that returns events answers for the message. Structured
    reports come first (ARF complaints, RFC 3464 DSNs), then the plain-text
    notices of MTAs and providers that print no DSN (and of list servers and
    SMS gateways, detectors.lists), then auto-replies, and last the
    catch-all for the simple forms of old list-era servers.

    A detector has a name and detect(mail) -> list[BounceEvent] | None, where
    mail is the ReturnedMail view of txmail.bounce_pipe.returned (the Detector protocol of
    detectors.base).
"""

from __future__ import annotations

from txmail.bounce_pipe.detectors import (
    amazonses,
    arf,
    dragonfly,
    exchange,
    exim,
    google,
    japan,
    lists,
    postfix,
    qmail,
    rfc3464,
    rfc3834,
    sendmail,
    simple,
)
from txmail.bounce_pipe.detectors.base import Detector

DETECTORS: tuple[Detector, ...] = (
    arf.DETECTOR,
    amazonses.DETECTOR,
    rfc3464.DETECTOR,
    google.DETECTOR,
    exim.DETECTOR,
    dragonfly.DETECTOR,
    exchange.DETECTOR,
    japan.DETECTOR,
    lists.DETECTOR,
    postfix.DETECTOR,
    qmail.DETECTOR,
    sendmail.DETECTOR,
    rfc3834.DETECTOR,
    simple.DETECTOR,
)

__all__ = ["DETECTORS"]
