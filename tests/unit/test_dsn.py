"""txmail.dsn: the one NOTIFY parser of the milter, the bounce pipe and the send API."""

from __future__ import annotations

import pytest

from txmail import dsn


@pytest.mark.parametrize(
    "value,words",
    [
        ("NEVER", ("NEVER",)),
        ("never", ("NEVER",)),
        ("failure, delay", ("FAILURE", "DELAY")),
        ("SUCCESS,FAILURE,SUCCESS", ("SUCCESS", "FAILURE")),
        ("NEVER,SUCCESS", None),
        ("FAILURE,", None),
        ("", None),
        ("SOMETIMES", None),
    ],
)
def test_notify_words_are_rfc_3461s(value: str, words: tuple[str, ...] | None) -> None:
    assert dsn.notify_words(value) == words


def test_notify_of_rcpt_parameters() -> None:
    assert dsn.notify_of(["ORCPT=rfc822;a@b.example", "notify=Failure,DELAY"]) == {
        "FAILURE",
        "DELAY",
    }
    assert dsn.notify_of(["NOTIFY=NEVER"]) == {"NEVER"}
    assert dsn.notify_of(["ORCPT=rfc822;a@b.example"]) is None
    assert dsn.notify_of(["NOTIFY="]) is None


def test_no_notify_means_failure_and_delay_as_postfix_reports() -> None:
    assert dsn.wanted([]) == {"FAILURE", "DELAY"}
    assert dsn.wanted(["NOTIFY=SUCCESS"]) == {"SUCCESS"}


def test_esmtp_value() -> None:
    assert dsn.esmtp_value(["RET=hdrs", "ENVID=x"], "ret") == "hdrs"
    assert dsn.esmtp_value(["SMTPUTF8"], "SMTPUTF8") is None
    assert dsn.esmtp_value([], "RET") is None
