"""SpamChecker against a loopback HTTP server that answers like rspamd's /checkv2."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from txmail.errors import TemporaryFailure
from txmail.milter.spam import SpamChecker
from txmail_testing.harness import free_port

MESSAGE = b"From: app@acme.example\r\nTo: user@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


class FakeRspamd(BaseHTTPRequestHandler):
    answers: list[tuple[int, bytes]] = []
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append({"path": self.path, "headers": self.headers, "body": body})
        status, answer = (
            self.answers.pop(0)
            if self.answers
            else (200, b'{"score": 3.5, "required_score": 15.0, "action": "no action"}')
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def rspamd() -> Iterator[str]:
    FakeRspamd.answers, FakeRspamd.requests = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRspamd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_not_configured_gives_none() -> None:
    assert SpamChecker().score(MESSAGE, "a@b.example", ["c@d.example"], "QID1") is None


def test_score_and_envelope_are_sent(rspamd: str) -> None:
    checker = SpamChecker(rspamd_url=rspamd + "/")
    score = checker.score(
        MESSAGE,
        "app@acme.example",
        ["u1@example.net", "u2@example.net"],
        "4jXCs06YbRzJJ2Y",
        login="acme",
    )
    assert score == 3.5
    request = FakeRspamd.requests[0]
    assert request["path"] == "/checkv2"
    assert request["body"] == MESSAGE
    headers = request["headers"]
    assert headers["From"] == "app@acme.example"
    assert headers.get_all("Rcpt") == ["u1@example.net", "u2@example.net"]
    assert headers["Queue-Id"] == "4jXCs06YbRzJJ2Y"
    assert headers["User"] == "acme"


def test_header_injection_is_stripped(rspamd: str) -> None:
    SpamChecker(rspamd_url=rspamd).score(MESSAGE, "a@b.example\r\nX-Evil: 1", [], "Q")
    headers = FakeRspamd.requests[0]["headers"]
    assert headers["From"] == "a@b.exampleX-Evil: 1" and headers["X-Evil"] is None


@pytest.mark.parametrize("answer", [(500, b"oops"), (200, b"not json"), (200, b'{"x": 1}')])
def test_bad_answers_tempfail(rspamd: str, answer: tuple[int, bytes]) -> None:
    FakeRspamd.answers = [answer]
    with pytest.raises(TemporaryFailure, match="rspamd"):
        SpamChecker(rspamd_url=rspamd).score(MESSAGE, "a@b.example", [], "Q")


def test_unreachable_tempfails_by_default_and_skips_when_configured() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TemporaryFailure, match="cannot be asked"):
        SpamChecker(rspamd_url=url, timeout=2).score(MESSAGE, "a@b.example", [], "Q")
    skipping = SpamChecker(rspamd_url=url, timeout=2, on_failure="skip")
    assert skipping.score(MESSAGE, "a@b.example", [], "Q") is None


def test_from_settings() -> None:
    from txmail.config import Settings, SpamSettings

    settings = Settings(
        spam=SpamSettings(rspamd_url="http://127.0.0.1:11333", timeout=3.0, on_failure="skip")
    )
    checker = SpamChecker.from_settings(settings)
    assert (checker.rspamd_url, checker.timeout, checker.on_failure, checker.enabled) == (
        "http://127.0.0.1:11333",
        3.0,
        "skip",
        True,
    )
    assert json.loads(json.dumps(checker.__dict__))
