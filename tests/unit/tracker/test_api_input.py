"""The send API's input checks and how SMTP replies become HTTP answers (no server needed)."""

from __future__ import annotations

import pytest

from txmail.submit import Refused, refused, xtext
from txmail.tracker.api import ApiError, http_status_of, parse_send, replay
from txmail.tracker.idempotency import Held

LIMIT = 10_000


def test_a_full_request_becomes_envelope_options_and_crlf_message() -> None:
    envelope, data, trackbounces = parse_send(
        {
            "envelope": "app@acme.test",
            "recipient": "user@example.net",
            "mime": "From: app@acme.test\nSubject: é\n\nhi\n",
            "dsn": {
                "notify": "failure,delay",
                "ret": "hdrs",
                "envid": "id+1 x",
                "orcpt": "orig@example.net",
            },
            "trackbounces": True,
            "tags": ["reset", " b "],
        },
        LIMIT,
    )
    assert envelope.sender == "app@acme.test" and envelope.recipients == ["user@example.net"]
    assert envelope.mail_options == ["RET=HDRS", "ENVID=id+2B1+20x", "BODY=8BITMIME"]
    assert envelope.rcpt_options == ["NOTIFY=FAILURE,DELAY"]
    assert envelope.orcpt == {"user@example.net": "orig@example.net"}
    assert data.startswith(b"X-Mxm-Tag: reset,b\r\nFrom: app@acme.test\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert trackbounces is True


def test_no_envelope_is_the_null_sender() -> None:
    envelope, _, _ = parse_send({"recipients": ["a@b.test"], "mime": "x"}, LIMIT)
    assert envelope.sender == ""


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"mime": ""},
        {"mime": 5, "recipient": "a@b.test"},
        {"mime": "x"},
        {"mime": "x", "recipients": []},
        {"mime": "x", "recipients": "a@b.test"},
        {"mime": "x", "recipient": "a@b.test", "recipients": ["a@b.test"]},
        {"mime": "x", "recipient": "<a@b.test>"},
        {"mime": "x", "recipient": "a@b.test\r\nRSET"},
        {"mime": "x", "recipient": "a@b.test", "envelope": "x y@z.test"},
        {"mime": "x", "recipient": "a@b.test", "dsn": {"notify": "NEVER,SUCCESS"}},
        {"mime": "x", "recipient": "a@b.test", "dsn": {"ret": "ALL"}},
        {"mime": "x", "recipient": "a@b.test", "dsn": {"envid": "tab\there"}},
        {"mime": "x", "recipient": "a@b.test", "dsn": {"other": 1}},
        {"mime": "x", "recipients": ["a@b.test", "c@d.test"], "dsn": {"orcpt": "a@b.test"}},
        {"mime": "x", "recipient": "a@b.test", "tags": ["a,b"]},
        {"mime": "x", "recipient": "a@b.test", "tags": "a"},
        {"mime": "x", "recipient": "a@b.test", "trackbounces": "yes"},
        {"mime": "x", "recipient": "a@b.test", "unknown": True},
    ],
)
def test_bad_input_is_a_400(body: dict) -> None:
    with pytest.raises(ApiError) as caught:
        parse_send(body, LIMIT)
    assert caught.value.http_status == 400 and caught.value.status == "5.5.4"


def test_a_message_over_the_limit_is_413() -> None:
    with pytest.raises(ApiError) as caught:
        parse_send({"recipient": "a@b.test", "mime": "x" * (LIMIT + 1)}, LIMIT)
    assert (caught.value.http_status, caught.value.smtp_code) == (413, 552)


@pytest.mark.parametrize(
    ("code", "reply", "status", "http"),
    [
        (554, b'5.7.1 Attachment "setup.exe" has a forbidden type (.exe); remove it', "5.7.1", 403),
        (552, b"5.3.4 Message size exceeds fixed limit", "5.3.4", 413),
        (550, b"5.1.1 <x@y>: Recipient address rejected", "5.1.1", 422),
        (451, b"4.7.1 Rate limit reached; try again\nin a minute", "4.7.1", 429),
        (451, b"4.3.0 txmail cannot check this message right now", "4.3.0", 503),
        (554, b"no enhanced code here", "5.0.0", 422),
    ],
)
def test_smtp_replies_keep_their_codes(code: int, reply: bytes, status: str, http: int) -> None:
    refusal = refused(code, reply)
    assert (refusal.code, refusal.status, http_status_of(refusal)) == (code, status, http)
    assert "\n" not in refusal.text
    assert isinstance(refusal, Refused)


def test_xtext() -> None:
    assert xtext("a+b=c d\u00e9") == "a+2Bb+3Dc+20d+E9"


def test_more_recipients_than_a_request_takes_is_a_422_naming_the_limit() -> None:
    recipients = [f"r{n}@b.test" for n in range(1001)]
    with pytest.raises(ApiError) as caught:
        parse_send({"recipients": recipients, "mime": "x"}, LIMIT)
    error = caught.value
    assert (error.http_status, error.smtp_code, error.status) == (422, 552, "5.5.3")
    assert "at most 1000" in error.message and error.headers is None


def test_an_idempotency_key_held_by_another_request() -> None:
    pending = Held("h", pending=True)
    with pytest.raises(ApiError) as caught:
        replay("k", "h", pending)
    assert caught.value.http_status == 409 and caught.value.headers == {"Retry-After": "5"}
    with pytest.raises(ApiError) as caught:
        replay("k", "other", pending)
    assert caught.value.http_status == 422 and "different request" in caught.value.message
    answer = replay("k", "h", Held("h", pending=False, status=403, answer='{"error": {}}'))
    assert (answer.status, answer.text) == (403, '{"error": {}}')
    assert answer.headers["Idempotent-Replayed"] == "true"
