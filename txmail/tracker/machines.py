"""Likely machine opens and link scanners: what the tracker writes into an event's details.

SYNOPSIS
    verdict = classify(kind, method, user_agent, seconds_since_sent, machine_seconds)

DESCRIPTION
    Mail security gateways (Microsoft Defender Safe Links, Mimecast, Proofpoint, Barracuda)
    follow every link of a message before the recipient sees it; Apple Mail Privacy Protection
    and some webmail proxies fetch every image. Those requests are real HTTP requests and are
    counted, but their events say details.machine = true with the reason, so reports can leave
    them out. A verdict is a hint, never a refusal: the tracker still answers every request.

    Reasons, first match wins:
      head          a HEAD request (browsers GET; scanners probe)
      no-agent      no User-Agent at all
      scanner       a User-Agent of a known scanner, crawler or HTTP library
      too-soon      within machine_seconds of the message being accepted: no human is that fast
    Image proxies that fetch on behalf of a person who opened the message (Gmail's
    GoogleImageProxy, Yahoo) are not machines; their events carry details.proxy instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCANNERS = re.compile(
    r"bot\b|crawler|spider|scanner|preview|headless|phantomjs|python-|python/|aiohttp|httpx|"
    r"curl/|wget/|go-http-client|java/|okhttp|libwww|apache-httpclient|node-fetch|axios|"
    r"barracuda|mimecast|proofpoint|safelinks|safe links|microsoft office|ms-office|"
    r"symantec|forcepoint|fortinet|trend ?micro|sophos|zscaler|cisco|ironport|"
    r"appengine-google|facebookexternalhit|slackbot|skypeuripreview|whatsapp|wrk",
    re.I,
)
PROXIES = (("googleimageproxy", "google"), ("yahoomailproxy", "yahoo"), ("ymailproxy", "yahoo"))


@dataclass(frozen=True)
class Verdict:
    machine: bool
    reason: str = ""  # head, no-agent, scanner, too-soon; "" for a person
    proxy: str = ""  # google, yahoo: an image proxy fetching for a person

    def details(self) -> dict[str, object]:
        found: dict[str, object] = {"machine": self.machine}
        if self.reason:
            found["machine_reason"] = self.reason
        if self.proxy:
            found["proxy"] = self.proxy
        return found


def classify(
    kind: str,
    method: str,
    user_agent: str,
    seconds_since_sent: float | None,
    machine_seconds: float,
) -> Verdict:
    """Whether an open or click was likely made by a machine (see the module text)."""
    agent = user_agent.strip()
    lowered = agent.lower()
    proxy = next((name for marker, name in PROXIES if marker in lowered), "")
    if method.upper() == "HEAD":
        return Verdict(True, "head", proxy)
    if not agent:
        return Verdict(True, "no-agent")
    if not proxy and SCANNERS.search(agent):
        return Verdict(True, "scanner")
    if not proxy and seconds_since_sent is not None and 0 <= seconds_since_sent <= machine_seconds:
        return Verdict(True, "too-soon")
    return Verdict(False, "", proxy)
