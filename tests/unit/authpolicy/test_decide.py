"""authpolicy/decide.py: requests to attempts, failures to verdicts; no Redis, no clock."""

from __future__ import annotations

import pytest

from txmail.authpolicy import decide

LIMITS = decide.Limits(free_failures=5, reject_failures=30, forgive_seconds=120, max_delay=5)
KEY = b"k" * 32


def test_the_delay_doubles_past_the_free_failures_up_to_the_cap() -> None:
    delays = [decide.delay(n, LIMITS) for n in range(12)]
    assert delays == [0, 0, 0, 0, 0, 1, 2, 4, 5, 5, 5, 5]
    assert decide.delay(5.2, LIMITS) == 2  # a partly forgiven failure still counts
    assert decide.delay(5.0000001, LIMITS) == 1
    assert decide.delay(10_000, LIMITS) == 5


def test_unknown_attempts_are_delayed_then_refused() -> None:
    assert decide.verdict(False, 0, LIMITS) == decide.Verdict(decide.ALLOW)
    assert decide.verdict(False, 7, LIMITS).status == 4
    refused = decide.verdict(False, 30, LIMITS)
    assert refused.status == decide.REJECT
    assert refused.answer() == {
        "status": -1,
        "msg": (
            "Too many failed logins for this account; try again in 2 minutes or from an address "
            "that has logged in before"
        ),
    }
    assert decide.verdict(False, 29.5, LIMITS).status == decide.REJECT
    assert decide.verdict(False, 29, LIMITS).status == 5


@pytest.mark.parametrize("failures", [0, 6, 30, 10_000])
def test_a_known_client_is_never_slowed_nor_refused(failures: float) -> None:
    assert decide.verdict(True, failures, LIMITS).answer() == {"status": 0}


def test_attempt_reads_and_caps_dovecots_request() -> None:
    found = decide.attempt(
        {"login": "Acme", "pwhash": "0A1B2C3D4E5F6071", "remote": "203.0.113.5", "tls": False}
    )
    assert found == decide.Attempt("acme", "203.0.113.5", "0a1b2c3d4e5f6071")
    assert "0a1b" not in repr(found)  # the hash stays out of logs and tracebacks
    assert decide.attempt({"login": "acme", "pwhash": "", "remote": "x"}) is None
    assert decide.attempt({"login": "no such {login}", "pwhash": "00"}) is None
    assert decide.attempt({"login": "x" * 5000, "pwhash": "00"}) is None
    assert decide.attempt(["login"]) is None
    assert decide.attempt({"login": 5, "pwhash": "00"}) is None
    report = decide.report(
        {"login": "acme", "pwhash": "00", "remote": "::1", "success": True, "policy_reject": False}
    )
    assert report is not None and report.success and not report.policy_reject
    report = decide.report({"login": "acme", "pwhash": "00", "success": "true"})
    assert report is not None and not report.success  # only a JSON true is a success


def test_an_accounts_email_address_login_is_limited_too() -> None:
    found = decide.attempt({"login": "Orders@Shop.Example", "pwhash": "00", "remote": "::1"})
    assert found == decide.Attempt("orders@shop.example", "::1", "00")
    assert decide.attempt({"login": "{x}@shop.example", "pwhash": "00"}) is None
    assert decide.attempt({"login": "a@b@shop.example", "pwhash": "00"}) is None


def test_a_client_is_known_by_its_address_or_its_ipv6_64() -> None:
    assert decide.client_network("203.0.113.5") == "203.0.113.5"
    assert decide.client_network("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert decide.client_network("::ffff:203.0.113.5") == "203.0.113.5"
    assert decide.client_network("") == "-"


def test_fingerprints_bind_login_address_password_and_key() -> None:
    one = decide.Attempt("acme", "203.0.113.5", "00aa")
    again = decide.Attempt("acme", "203.0.113.5", "00aa")
    assert decide.fingerprint(KEY, one) == decide.fingerprint(KEY, again)
    others = [
        decide.Attempt("acme", "203.0.113.6", "00aa"),
        decide.Attempt("acme", "203.0.113.5", "00ab"),
        decide.Attempt("acme2", "203.0.113.5", "00aa"),
    ]
    prints = {decide.fingerprint(KEY, a) for a in [one, *others]}
    assert len(prints) == 4
    assert decide.fingerprint(b"z" * 32, one) != decide.fingerprint(KEY, one)
    v6 = [decide.Attempt("acme", f"2001:db8::{n}", "00aa") for n in (1, 2)]
    assert decide.fingerprint(KEY, v6[0]) == decide.fingerprint(KEY, v6[1])
