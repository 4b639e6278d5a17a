"""The maillog follower: resumes from a saved inode and offset, survives rotation (also while
it was stopped) and truncation, and never returns half a line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from txmail.maillog.follower import LogFollower

OPEN: list[LogFollower] = []


@pytest.fixture(autouse=True)
def close_followers():
    yield
    while OPEN:
        OPEN.pop().close()


def follower(tmp_path: Path) -> LogFollower:
    made = LogFollower(tmp_path / "postfix.log", tmp_path / "maillog.offset")
    OPEN.append(made)
    return made


def append(path: Path, text: str) -> None:
    with path.open("a") as fh:
        fh.write(text)


def test_complete_lines_only_and_resume_after_commit(tmp_path: Path) -> None:
    log = tmp_path / "postfix.log"
    append(log, "one\ntwo\nthr")
    f = follower(tmp_path)
    assert f.read_lines() == ["one", "two"]
    append(log, "ee\n")
    assert f.read_lines() == ["three"]
    f.commit()
    f.close()
    append(log, "four\n")
    again = follower(tmp_path)
    assert again.read_lines() == ["four"]


def test_lines_not_committed_are_read_again(tmp_path: Path) -> None:
    append(tmp_path / "postfix.log", "a\nb\n")
    f = follower(tmp_path)
    assert f.read_lines() == ["a", "b"]
    f.rewind()  # could not record them
    assert f.read_lines() == ["a", "b"]


def test_rotation_while_running(tmp_path: Path) -> None:
    log = tmp_path / "postfix.log"
    append(log, "old1\n")
    f = follower(tmp_path)
    assert f.read_lines() == ["old1"]
    append(log, "old2\n")
    os.rename(log, tmp_path / "postfix.log.20261122-101010")
    append(log, "new1\n")
    assert f.read_lines() == ["old2"]  # the rest of the old file first
    assert f.read_lines() == ["new1"]
    f.commit()


def test_rotation_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "postfix.log"
    append(log, "old1\n")
    f = follower(tmp_path)
    assert f.read_lines() == ["old1"]
    f.commit()
    f.close()
    append(log, "old2\n")
    os.rename(log, tmp_path / "postfix.log.20261122-101010")
    append(log, "new1\n")
    again = follower(tmp_path)
    assert again.read_lines() == ["old2"]
    assert again.read_lines() == ["new1"]


def test_truncated_log_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "postfix.log"
    append(log, "a long first line\n")
    f = follower(tmp_path)
    assert f.read_lines() == ["a long first line"]
    log.write_text("b\n")  # copytruncate
    assert f.read_lines() == []
    assert f.read_lines() == ["b"]


def test_missing_log_is_waited_for(tmp_path: Path) -> None:
    f = follower(tmp_path)
    assert f.read_lines() == []
    append(tmp_path / "postfix.log", "first\n")
    assert f.read_lines() == ["first"]
