"""The maillog follower: resumes from a saved inode and offset, survives rotation (also while
it was stopped, Postfix's and logrotate's names, a logger still writing to the rotated file)
and truncation, and never returns half a line. Real files, really renamed and truncated; the
clock is an argument."""

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


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def follower(tmp_path: Path, name: str = "postfix.log", clock: Clock | None = None) -> LogFollower:
    made = LogFollower(tmp_path / name, tmp_path / "maillog.offset", 1.0, clock or Clock())
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
    clock = Clock()
    append(log, "old1\n")
    f = follower(tmp_path, clock=clock)
    assert f.read_lines() == ["old1"]
    append(log, "old2\n")
    os.rename(log, tmp_path / "postfix.log.20261122-101010")
    append(log, "new1\n")
    assert f.read_lines() == ["old2"]  # the rest of the old file first
    assert f.read_lines() == []  # the grace: a logger may still write to the old file
    clock.now += 1.5
    assert f.read_lines() == ["new1"]
    f.commit()


def test_logrotate_create_with_a_late_line_in_the_old_file(tmp_path: Path) -> None:
    """rsyslog + logrotate: mail.log is renamed mail.log.1 and a new mail.log created; rsyslog
    writes to mail.log.1 until postrotate's HUP. Those late lines come before the new file's."""
    log = tmp_path / "mail.log"
    clock = Clock()
    append(log, "a\n")
    f = follower(tmp_path, "mail.log", clock)
    assert f.read_lines() == ["a"]
    f.commit()
    os.rename(log, tmp_path / "mail.log.1")
    log.touch()  # logrotate's create
    assert f.read_lines() == []
    clock.now += 0.5
    append(tmp_path / "mail.log.1", "late\n")  # rsyslog not yet HUPed
    append(log, "new\n")  # rsyslog reopened
    assert f.read_lines() == ["late"]
    clock.now += 0.5
    assert f.read_lines() == ["new"]
    f.commit()
    f.close()
    assert follower(tmp_path, "mail.log").read_lines() == []  # the position is in the new file


def test_rotated_twice_while_stopped_reads_both_in_order(tmp_path: Path) -> None:
    """Down across two rotations: the rest of mail.log.2 (the file the position is in), then
    mail.log.1, then mail.log; a compressed older file is left alone."""
    log = tmp_path / "mail.log"
    clock = Clock()
    append(log, "one\n")
    f = follower(tmp_path, "mail.log", clock)
    assert f.read_lines() == ["one"]
    f.commit()
    f.close()
    append(log, "two\n")
    os.rename(log, tmp_path / "mail.log.1")
    append(log, "three\n")
    os.rename(tmp_path / "mail.log.1", tmp_path / "mail.log.2")
    os.rename(log, tmp_path / "mail.log.1")
    append(log, "four\n")
    (tmp_path / "mail.log.3.gz").write_bytes(b"\x1f\x8b")
    stamp = 1_700_000_000
    for age, name in ((3, "mail.log.3.gz"), (2, "mail.log.2"), (1, "mail.log.1"), (0, "mail.log")):
        os.utime(tmp_path / name, (stamp - age * 100, stamp - age * 100))
    again = follower(tmp_path, "mail.log", clock)
    got = []
    for _ in range(10):
        got += again.read_lines()
        clock.now += 2
    assert got == ["two", "three", "four"]


def test_copytruncate_while_running(tmp_path: Path) -> None:
    """logrotate's copytruncate: the file keeps its inode and starts again from 0."""
    log = tmp_path / "mail.log"
    append(log, "before rotation, a longer line\n")
    f = follower(tmp_path, "mail.log")
    assert f.read_lines() == ["before rotation, a longer line"]
    f.commit()
    (tmp_path / "mail.log.1").write_bytes(log.read_bytes())
    with log.open("r+") as fh:
        fh.truncate(0)
    append(log, "after\n")
    assert f.read_lines() == []
    assert f.read_lines() == ["after"]


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
    clock = Clock()
    again = follower(tmp_path, clock=clock)
    assert again.read_lines() == ["old2"]
    clock.now += 2
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
