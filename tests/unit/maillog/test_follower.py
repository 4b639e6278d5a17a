"""The maillog follower: resumes from a saved inode and offset, survives rotation (also while
it was stopped, Postfix's and logrotate's names, a logger still writing to the rotated file)
and truncation, and never returns half a line. Real files, really renamed and truncated; the
clock is an argument."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from txmail.maillog.follower import LEFT_WATCH, LogFollower

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
    assert f.read_lines() == []  # the grace counts from the old file's last line
    clock.now += 0.5
    assert f.read_lines() == ["new"]
    f.commit()
    f.close()
    assert follower(tmp_path, "mail.log").read_lines() == []  # the position is in the new file


def test_old_file_is_left_only_after_it_was_quiet_for_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """rsyslog writes to the rotated file at 0.1 s and 0.9 s after the rotation was seen; a
    poll at 1.2 s finds nothing, but the file gave a line only 0.3 s before, so the follower
    stays and reads the line rsyslog (not yet HUPed) writes at 1.5 s."""
    log = tmp_path / "mail.log"
    old = tmp_path / "mail.log.1"
    clock = Clock()
    start = clock.now
    append(log, "a\n")
    f = follower(tmp_path, "mail.log", clock)
    assert f.read_lines() == ["a"]
    os.rename(log, old)
    log.touch()
    assert f.read_lines() == []  # the rotation is seen at 0
    for at, line in ((0.1, "at 0.1"), (0.9, "at 0.9")):
        clock.now = start + at
        append(old, line + "\n")
        assert f.read_lines() == [line]
    clock.now = start + 1.2
    assert f.read_lines() == []
    clock.now = start + 1.5
    append(old, "late at 1.5\n")
    append(log, "new\n")
    assert f.read_lines() == ["late at 1.5"]
    clock.now = start + 2.4
    assert f.read_lines() == []
    clock.now = start + 2.5
    assert f.read_lines() == ["new"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_growth_of_the_old_file_after_it_was_left_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Lines a logger writes to the rotated file after it was left are not read (the new
    file's lines after them already were), but never silently: one warning with the count."""
    log = tmp_path / "mail.log"
    old = tmp_path / "mail.log.1"
    clock = Clock()
    append(log, "a\n")
    f = follower(tmp_path, "mail.log", clock)
    assert f.read_lines() == ["a"]
    os.rename(log, old)
    append(log, "new\n")
    assert f.read_lines() == []
    clock.now += 1.0
    assert f.read_lines() == ["new"]
    f.commit()
    append(old, "too late\n")  # 9 bytes
    clock.now += 0.2
    with caplog.at_level(logging.WARNING, "txmail.maillog"):
        assert f.read_lines() == []
        append(old, "later still\n")
        clock.now += 0.2
        assert f.read_lines() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"{old} (inode {old.stat().st_ino}) grew" in warnings[0]
    assert "9 bytes after offset 2 were not read" in warnings[0]
    append(log, "newer\n")
    assert f.read_lines() == ["newer"]


def test_the_left_file_is_watched_for_a_while_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "mail.log"
    old = tmp_path / "mail.log.1"
    clock = Clock()
    append(log, "a\n")
    f = follower(tmp_path, "mail.log", clock)
    assert f.read_lines() == ["a"]
    os.rename(log, old)
    log.touch()
    assert f.read_lines() == []
    clock.now += 1.0
    assert f.read_lines() == []  # left
    assert f.left is not None
    clock.now += LEFT_WATCH
    assert f.read_lines() == []
    assert f.left is None  # its descriptor is closed
    append(old, "much later\n")
    assert f.read_lines() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_half_a_line_at_the_end_of_the_old_file_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "mail.log"
    clock = Clock()
    append(log, "a\nhalf")
    f = follower(tmp_path, "mail.log", clock)
    assert f.read_lines() == ["a"]
    os.rename(log, tmp_path / "mail.log.1")
    append(log, "new\n")
    assert f.read_lines() == []
    clock.now += 1.0
    assert f.read_lines() == ["new"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "ends in 4 bytes without a line end at offset 2" in warnings[0]


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
