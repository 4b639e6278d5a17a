"""reach.closed_folder: the first folder on the way to a path that a user may not pass."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail import config, reach
from txmail.errors import ConfigError
from txmail.stack import supervisor

NOBODY = reach.Passer("someone", 4242, frozenset({4343}))


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may reach (pytest's own is under a mode-0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="txmail-reach-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def folder(path: Path, mode: int, uid: int = 0, gid: int = 0) -> Path:
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def test_a_folder_others_may_not_enter_is_named(open_dir: Path) -> None:
    base = folder(open_dir / "open", 0o755)
    closed = folder(base / "root-like", 0o700)
    inner = folder(closed / "checkout", 0o755)
    check = reach.Passer("someone", 4242, frozenset())
    assert reach.closed_folder(inner / "state", check) == closed
    assert reach.closed_folder(base / "elsewhere", check) is None
    closed.chmod(0o711)
    assert reach.closed_folder(inner / "state", check) is None


def test_the_path_itself_counts_when_it_is_a_folder(open_dir: Path) -> None:
    base = folder(open_dir / "open", 0o755)
    state = folder(base / "state", 0o700)
    assert reach.closed_folder(state, NOBODY) == state


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another owner needs root")
def test_owner_and_group_bits_decide_before_others(open_dir: Path) -> None:
    owned = folder(open_dir / "owned", 0o071, uid=4242, gid=4343)
    owner = reach.Passer("owner", 4242, frozenset())
    member = reach.Passer("member", 4444, frozenset({4343}))
    other = reach.Passer("other", 4444, frozenset())
    assert not reach.may_pass(os.stat(owned), owner)  # the owner's own bits say no
    assert reach.may_pass(os.stat(owned), member)
    owned.chmod(0o701)  # the group may not, though others may
    assert not reach.may_pass(os.stat(owned), member)
    assert reach.may_pass(os.stat(owned), other)


def test_a_symlink_is_followed_to_where_it_points(open_dir: Path) -> None:
    base = folder(open_dir / "open", 0o755)
    closed = folder(base / "root-like", 0o700)
    (closed / "python3").write_text("")
    link = base / "venv-python"
    link.symlink_to(closed / "python3")
    assert reach.closed_folder(link, NOBODY) == closed
    assert reach.holds(closed, link)
    assert not reach.holds(closed, base)


def test_root_passes_everywhere(open_dir: Path) -> None:
    closed = folder(open_dir / "root-like", 0o700)
    assert reach.closed_folder(closed, reach.Passer("root", 0, frozenset({0}))) is None


def test_a_user_not_created_yet_passes_only_where_everyone_may(open_dir: Path) -> None:
    who = reach.passer("txmail-no-such-user")
    assert who.uid == -1 and not who.gids
    closed = folder(open_dir / "root-like", 0o750)
    assert reach.closed_folder(closed, who) == closed
    assert "mode 0750" in reach.describe(closed)


def test_up_names_the_closed_folder_above_the_state_and_the_fix(open_dir: Path) -> None:
    closed = folder(open_dir / "root-like", 0o700)
    state = closed / "state"
    settings = config.Settings(state_dir=str(state))
    with pytest.raises(ConfigError) as caught:
        supervisor.check_reach(settings, state / "txmail.toml")
    text = str(caught.value)
    assert "\n" not in text and text.count(". ") == 0  # one sentence
    assert text.startswith(f"the state directory {state} is behind {closed} (mode 0700, owner")
    assert "postfix (Postfix)" in text and "txmail-redis (the private Redis)" in text
    assert "`txmail init --state-dir /var/lib/txmail`" in text
    assert text.endswith(f"`chmod o+x {closed}`")
    closed.chmod(0o711)
    supervisor.check_reach(settings, state / "txmail.toml")


def test_a_socket_outside_the_state_is_checked_for_its_own_user(open_dir: Path) -> None:
    closed = folder(open_dir / "root-like", 0o700)
    settings = config.Settings(state_dir=str(folder(open_dir / "state", 0o755)))
    milter = closed / "run/milter/milter.sock"
    settings = dataclasses.replace(
        settings, milter=dataclasses.replace(settings.milter, socket=str(milter))
    )
    with pytest.raises(ConfigError) as caught:
        supervisor.check_reach(settings, open_dir / "state/txmail.toml")
    assert str(caught.value).startswith(f"the socket {milter} is behind {closed} (mode 0700")
    assert "which the user postfix (Postfix) may not pass" in str(caught.value)
