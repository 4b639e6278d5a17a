"""Bounce addresses: round trip, case folding by remote MTAs, forgery, size limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txmail.tokens.bounce_address import bounce_address, bounce_token, verify_bounce_address

SECRET = b"0123456789abcdef0123456789abcdef"
QID = "4jXCs06YbRzJJ2Y"


def test_address_shape() -> None:
    address = bounce_address(QID, "acme.example", SECRET, "mta.acme.example")
    local, domain = address.split("@")
    assert domain == "mta.acme.example"
    assert local.startswith("bounces+") and local == local.lower()
    assert len(local) <= 64
    assert verify_bounce_address(address, SECRET) == QID


@pytest.mark.parametrize("fold", [str.upper, str.lower, str.swapcase, str.title])
def test_survives_case_folding(fold) -> None:  # type: ignore[no-untyped-def]
    address = bounce_address(QID, "acme.example", SECRET, "mta.acme.example")
    assert verify_bounce_address(fold(address), SECRET) == QID


def test_local_part_and_bare_token_verify() -> None:
    address = bounce_address(QID, "acme.example", SECRET, "bounces.example.test")
    local = address.split("@")[0]
    assert verify_bounce_address(local, SECRET) == QID
    assert verify_bounce_address(local.split("+", 1)[1], SECRET) == QID
    assert verify_bounce_address(f"<{address}>", SECRET) == QID


def test_short_queue_ids_work_too() -> None:
    assert (
        verify_bounce_address(
            bounce_address("C59BC2101BD", "a.example", SECRET, "mta.a.example"), SECRET
        )
        == "C59BC2101BD"
    )


@pytest.mark.parametrize(
    "forged",
    [
        "bounces+{token}@mta.acme.example".replace("{token}", bounce_token(QID, b"x" * 32)),
        "bounces+" + bounce_token("4jXCs06YbRzJJ2Z", SECRET)[:-8] + bounce_token(QID, SECRET)[-8:],
        "bounces+" + bounce_token(QID, SECRET)[:-1],
        "bounces+" + bounce_token(QID, SECRET) + "a",
        "other+" + bounce_token(QID, SECRET),
        "bounces",
        "bounces+",
        "bounces+-",
        "bounces+!!!-aaaaaaaa",
        "bounces+" + "a" * 400,
        "",
    ],
)
def test_forged_or_malformed_addresses_give_none(forged: str) -> None:
    assert verify_bounce_address(forged, SECRET) is None


def test_wrong_secret_gives_none() -> None:
    address = bounce_address(QID, "acme.example", SECRET, "mta.acme.example")
    assert verify_bounce_address(address, b"another secret of enough length") is None


@pytest.mark.parametrize("bad", ["", "abc", "has space", "qid@x", "A" * 30])
def test_bad_queue_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        bounce_address(bad, "acme.example", SECRET, "mta.acme.example")


@given(
    st.text(
        alphabet="0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz", min_size=5, max_size=29
    )
)
def test_any_queue_id_round_trips_within_64(queue_id: str) -> None:
    address = bounce_address(queue_id, "d.example", SECRET, "mta.d.example")
    assert len(address.split("@")[0]) <= 64
    assert verify_bounce_address(address.upper(), SECRET) == queue_id
