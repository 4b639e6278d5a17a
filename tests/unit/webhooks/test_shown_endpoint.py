"""A webhook URL in a log line shows where it points, never a secret it may hold."""

from __future__ import annotations

import pytest

from txmail.webhooks.dispatcher import shown_endpoint


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/T000/B000/sEcReTtOkEn", "https://hooks.example.com/..."),
        ("https://user:pa55word@app.example:8443/in?token=abc", "https://app.example:8443/..."),
        ("http://[::1]:9000/x", "http://::1:9000/..."),
        ("https://app.example:99999/", "the endpoint"),
    ],
)
def test_only_scheme_host_and_port_are_shown(url: str, shown: str) -> None:
    assert shown_endpoint(url) == shown
