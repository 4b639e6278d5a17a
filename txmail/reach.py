"""Which folders an unprivileged user may pass on the way to a path.

The components that do not run as root open what they need by its full path: Postfix
(postfix) and Dovecot (dovecot) their files and sockets under the state directory, the bounce
pipe (settings.user) the configuration and the recorder's socket, the private Redis
(settings.user + "-redis") its configuration, data and socket, and the pipe and its parser
workers (settings.user, group nogroup) the venv's Python and txmail wherever it is installed.
Each must be allowed to pass (the x bit) every folder above those paths: a checkout under
root's home (/root is mode 0700) is not. `txmail init` and `txmail up` use closed_folder() to
refuse such a place before they create or start anything, with one sentence naming the folder
and the fix; nothing here changes a permission.

Reads: the mode and owner of each folder on the way, as written and with symlinks resolved
(os.stat), and the user and group databases. A user that does not exist yet (`txmail up`
creates settings.user and its Redis user, each with a group of its own) passes only where
every user may. Access control lists are not read: a folder opened to these users by an ACL
alone is taken as closed.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Passer:
    """A user, with the groups its processes run with, that has to pass folders."""

    name: str
    uid: int  # -1: the user does not exist yet
    gids: frozenset[int]


def passer(name: str, gid: int | None = None) -> Passer:
    """`name` with its own groups (primary and supplementary), or with the group `gid` alone
    (the parser workers: group nogroup and no supplementary group)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return Passer(name, -1, frozenset() if gid is None else frozenset({gid}))
    if gid is not None:
        return Passer(name, entry.pw_uid, frozenset({gid}))
    gids = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)}
    return Passer(name, entry.pw_uid, frozenset(gids))


def may_pass(mode: os.stat_result, who: Passer) -> bool:
    """Whether `who` may search a folder of this mode and owner (owner, else group, else
    others: the first class that applies decides, as the kernel does)."""
    if who.uid == 0:
        return True
    if mode.st_uid == who.uid:
        return bool(mode.st_mode & stat.S_IXUSR)
    if mode.st_gid in who.gids:
        return bool(mode.st_mode & stat.S_IXGRP)
    return bool(mode.st_mode & stat.S_IXOTH)


def closed_folder(path: str | Path, who: Passer) -> Path | None:
    """The first folder on the way to `path` (and `path` itself when it is a folder) that
    `who` may not pass, or None. The path is followed as written and with its symlinks
    resolved (an interpreter in a venv is a symlink to the real one); folders not created
    yet are left out (root creates them, mode 0755)."""
    written = Path(os.path.abspath(path))
    for way in dict.fromkeys([written, Path(os.path.realpath(written))]):
        for folder in [*reversed(way.parents), way]:
            try:
                mode = os.stat(folder)
            except OSError:  # not there yet
                break
            if not stat.S_ISDIR(mode.st_mode):
                break
            if not may_pass(mode, who):
                return folder
    return None


def describe(folder: Path) -> str:
    """`/root (mode 0700, owner root)`: what the sentence names."""
    mode = os.stat(folder)
    try:
        owner = pwd.getpwuid(mode.st_uid).pw_name
    except KeyError:
        owner = str(mode.st_uid)
    return f"{folder} (mode {stat.S_IMODE(mode.st_mode):04o}, owner {owner})"


def holds(folder: Path, path: str | Path) -> bool:
    """Whether `path`, as written or resolved, is under `folder`."""
    return any(
        Path(way).is_relative_to(folder) for way in (os.path.abspath(path), os.path.realpath(path))
    )
