"""Likely machine opens and link scanners, as a table."""

from __future__ import annotations

import pytest

from txmail.tracker.machines import classify

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("method", "agent", "since", "machine", "reason", "proxy"),
    [
        ("GET", BROWSER, 3600, False, "", ""),
        ("HEAD", BROWSER, 3600, True, "head", ""),
        ("GET", "", 3600, True, "no-agent", ""),
        ("GET", "python-requests/2.31", 3600, True, "scanner", ""),
        ("GET", "Mozilla/5.0 (compatible; Barracuda Sentinel)", 3600, True, "scanner", ""),
        (
            "GET",
            "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0)",
            3600,
            True,
            "scanner",
            "",
        ),
        ("GET", "curl/8.5.0", 3600, True, "scanner", ""),
        ("GET", BROWSER, 1.5, True, "too-soon", ""),
        ("GET", BROWSER, None, False, "", ""),
        (
            "GET",
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
            "GoogleImageProxy)",
            1.0,
            False,
            "",
            "google",
        ),
    ],
)
def test_classify(
    method: str, agent: str, since: float | None, machine: bool, reason: str, proxy: str
) -> None:
    verdict = classify("open", method, agent, since, machine_seconds=5.0)
    assert (verdict.machine, verdict.reason, verdict.proxy) == (machine, reason, proxy)
    assert verdict.details()["machine"] is machine
