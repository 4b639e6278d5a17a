"""Writing files safely: keys and secrets only their owner reads, and configuration that readers
(Dovecot, Postfix) see whole or not at all. Used by init, the renderers, the DKIM key store and
the passwd-file sync."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (keys, secrets), atomically."""
    replace_atomically(path, data, mode=0o600)


def write_secret(path: Path) -> None:
    """Create a random 32-byte secret (hex) unless the file exists."""
    if path.exists():
        return
    write_private(path, secrets.token_hex(32).encode() + b"\n")


def replace_atomically(
    path: Path, data: bytes, mode: int = 0o644, uid: int = -1, gid: int = -1
) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place.

    Readers (Dovecot, Postfix) see either the old file or the new one, never a half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if uid != -1 or gid != -1:
            os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
