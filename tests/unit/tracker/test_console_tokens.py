"""The console's signed values (txmail/tokens/console.py): session cookies, CSRF tokens and
operator tokens; none passes for another, none survives a change, an expiry or another key."""

from __future__ import annotations

import pytest

from txmail.tokens.console import ConsoleSigner, Session
from txmail.tokens.links import LinkSigner, Mark

KEY = b"k" * 32
OTHER = b"o" * 32
NOW = 1_800_000_000.0


def signer(*keys: bytes) -> ConsoleSigner:
    return ConsoleSigner(lambda: keys or (KEY,))


def test_a_session_cookie_says_what_was_signed_until_it_expires() -> None:
    cookie = signer().sign_session(Session("sid1", "shop", False, NOW + 60))
    assert signer().verify_session(cookie, NOW) == Session("sid1", "shop", False, NOW + 60)
    assert signer().verify_session(cookie, NOW + 60) is None
    operator = signer().sign_session(Session("sid2", "", True, NOW + 60))
    assert signer().verify_session(operator, NOW) == Session("sid2", "", True, NOW + 60)


def test_any_change_or_another_key_fails() -> None:
    cookie = signer().sign_session(Session("sid1", "shop", False, NOW + 60))
    body, mac = cookie.split(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    for changed in (flipped + "." + mac, body + "." + mac[:-2], body, "", "a.b.c", "." * 3000):
        assert signer().verify_session(changed, NOW) is None, changed
    assert signer(OTHER).verify_session(cookie, NOW) is None


def test_a_rotated_key_still_verifies_until_the_next_rotation() -> None:
    cookie = signer(KEY).sign_session(Session("sid1", "shop", False, NOW + 60))
    assert signer(OTHER, KEY).verify_session(cookie, NOW) is not None
    assert signer(OTHER).verify_session(cookie, NOW) is None


@pytest.mark.parametrize(
    "session",
    [
        Session("sid", "", False, NOW + 60),  # neither an account nor the operator
        Session("sid", "shop", True, NOW + 60),  # both
        Session("", "shop", False, NOW + 60),  # no id
    ],
)
def test_an_impossible_session_is_refused_even_when_signed(session: Session) -> None:
    assert signer().verify_session(signer().sign_session(session), NOW) is None


def test_kinds_never_pass_for_one_another() -> None:
    token = signer().sign_operator(NOW + 60)
    assert signer().verify_operator(token, NOW)
    assert not signer().verify_operator(token, NOW + 61)
    assert signer().verify_session(token, NOW) is None
    cookie = signer().sign_session(Session("sid", "", True, NOW + 60))
    assert not signer().verify_operator(cookie, NOW)
    assert not signer().check_csrf("sid", cookie)
    # a tracking link under the same key is no console token of any kind
    link = LinkSigner(KEY).sign(Mark("open", "shop", "QID1234", "a@b.example"))
    assert not signer().verify_operator(link, NOW)
    assert signer().verify_session(link, NOW) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    token = signer().csrf_token("sid1")
    assert signer().check_csrf("sid1", token)
    assert not signer().check_csrf("sid2", token)
    assert not signer().check_csrf("", token)
    assert not signer().check_csrf("sid1", "")
    assert not signer().check_csrf("sid1", token[:-1])
    assert not signer(OTHER).check_csrf("sid1", token)
    assert signer(OTHER, KEY).check_csrf("sid1", token)  # after a rotation


def test_operator_tokens_differ_each_time() -> None:
    assert signer().sign_operator(NOW + 60) != signer().sign_operator(NOW + 60)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        ConsoleSigner(lambda: (b"short",)).sign_operator(NOW)
