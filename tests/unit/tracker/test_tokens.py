"""Tracking tokens: genuine ones verify, every change to one is refused."""

from __future__ import annotations

import pytest

from txmail.tokens.links import MAX_TOKEN, LinkSigner, Mark

SECRET = b"0123456789abcdef-tracking"
CLICK = Mark(
    "click",
    "acme",
    "4jXCs06YbRzJJ2Y",
    "user@example.net",
    3,
    "https://shop.example.com/order?id=7&x=ü",
    1_800_000_000,
)


def test_a_click_token_carries_message_recipient_index_and_url() -> None:
    signer = LinkSigner(SECRET)
    assert signer.verify(signer.sign(CLICK)) == CLICK


def test_an_open_token_round_trips() -> None:
    signer = LinkSigner(SECRET)
    mark = Mark("open", "acme", "4jXCs06YbRzJJ2Y", "", sent_at=5)
    assert signer.verify(signer.sign(mark)) == mark


def test_every_single_character_change_is_refused() -> None:
    signer = LinkSigner(SECRET)
    token = signer.sign(CLICK)
    alphabet = "ABCabc012-_."
    for position in range(len(token)):
        for replacement in alphabet:
            if token[position] == replacement:
                continue
            changed = token[:position] + replacement + token[position + 1 :]
            assert signer.verify(changed) is None, (position, replacement)


def test_another_key_cut_tokens_and_junk_are_refused() -> None:
    token = LinkSigner(SECRET).sign(CLICK)
    assert LinkSigner(b"another secret of enough bytes").verify(token) is None
    for junk in (
        "",
        ".",
        token[:-1],
        token.split(".")[0],
        token + ".x",
        "%%%.%%%",
        "a" * (MAX_TOKEN + 1),
        token + "==",
    ):
        assert LinkSigner(SECRET).verify(junk) is None


def test_only_web_links_are_signed() -> None:
    signer = LinkSigner(SECRET)
    for url in ("javascript:alert(1)", "mailto:a@b.c", "//evil.example", "data:text/html,x"):
        with pytest.raises(ValueError):
            signer.sign(Mark("click", "acme", "Q", "", 0, url))


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        LinkSigner(b"short")
