"""`make run`'s steps in a checkout inside a mode-0700 folder (a clone under /root).

The private Redis, Postfix, Dovecot and the bounce pipe run as users of their own and open
what they need by its full path, so they cannot work behind a folder only root may enter:
`txmail init` and `txmail up` refuse there, before they write or start anything, with one
sentence naming the folder and the fix. The fix the sentence names (`chmod o+x FOLDER`) is
then applied, and the same steps start the stack.

The checkout is a copy of this working tree (without its venv), with a venv made as the
Makefile does (`/usr/bin/python3 -m venv`) inside it, but without pip: it finds the installed
libraries through a .pth file listing this venv's site-packages, after the copy itself, so
txmail is loaded from the copy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail_testing.harness import free_offset, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="txmail up runs as root"),
]
ROOT = Path(__file__).resolve().parents[2]
LEFT_OUT = shutil.ignore_patterns(
    ".venv", ".git", "state", "__pycache__", ".*_cache", "*.egg-info", "bench"
)


@pytest.fixture
def closed_checkout() -> Iterator[Path]:
    """FOLDER/txmail: a checkout with its .venv, in a FOLDER of mode 0700 owned by root."""
    folder = Path(tempfile.mkdtemp(prefix="txmail-root-like-", dir="/tmp"))
    folder.chmod(0o700)
    checkout = folder / "txmail"
    try:
        shutil.copytree(ROOT, checkout, ignore=LEFT_OUT, symlinks=True)
        venv = checkout / ".venv"
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
        site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
        ours = sysconfig.get_path("purelib")  # this venv's libraries, where everyone may read
        (site / "txmail-checkout.pth").write_text(f"{checkout}\n{ours}\n")
        yield checkout
    finally:
        left = running_under(folder)
        for pid in left:  # a test that failed half-way: nothing of its stack stays behind
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"processes left running under {folder}: {left}"


def running_under(folder: Path) -> list[int]:
    """Processes whose command line names something under `folder`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(folder).encode() in argv:
            pids.append(int(entry.name))
    return pids


def txmail(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One of `make run`'s steps: .venv/bin/txmail ARGS in the checkout."""
    return subprocess.run(
        [str(checkout / ".venv/bin/python"), "-m", "txmail", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def one_sentence_naming(text: str, folder: Path) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("txmail: error: "), text
    assert "internal error" not in text and text.count(". ") == 0, text
    assert f"{folder} (mode 0700, owner root)" in text, text
    assert f"`chmod o+x {folder}`" in text, text


def test_make_run_in_a_closed_folder_refuses_then_works_once_opened(
    closed_checkout: Path,
) -> None:
    folder = closed_checkout.parent
    offset = str(free_offset())
    state = closed_checkout / "state"

    # `make run`'s init: refused before anything is written.
    done = txmail(closed_checkout, "init", "--state-dir", "state", "--port-offset", offset)
    assert done.returncode == 2, done.stderr
    one_sentence_naming(done.stderr, folder)
    assert "move the checkout" in done.stderr
    assert not state.exists()

    # A state directory made while the folder was open (or by an older txmail): `up` refuses
    # it before it starts anything, as it does this checkout's venv with a state elsewhere.
    folder.chmod(0o711)
    done = txmail(closed_checkout, "init", "--state-dir", "state", "--port-offset", offset)
    assert done.returncode == 0, done.stderr
    folder.chmod(0o700)
    done = txmail(closed_checkout, "--config", "state/txmail.toml", "up", "--dev")
    assert done.returncode == 2, done.stderr
    one_sentence_naming(done.stderr, folder)
    assert "the state directory" in done.stderr and "txmail-redis" in done.stderr
    assert not (state / "run").exists() and not (state / "log").exists()
    assert running_under(folder) == []

    elsewhere = Path(tempfile.mkdtemp(prefix="txmail-open-state-", dir="/tmp"))
    try:
        elsewhere.chmod(0o755)
        done = subprocess.run(
            [sys.executable, "-m", "txmail", "init", "--state-dir", str(elsewhere)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        done = txmail(closed_checkout, "--config", str(elsewhere / "txmail.toml"), "up", "--dev")
        assert done.returncode == 2, done.stderr
        one_sentence_naming(done.stderr, folder)
        python = closed_checkout / ".venv/bin/python"
        assert f"the user txmail cannot run the Python interpreter {python}" in done.stderr
        assert not (elsewhere / "run").exists() and not (elsewhere / "log").exists()
        assert running_under(folder) == []
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)

    # The fix the sentence names: the same steps start the stack.
    folder.chmod(0o711)
    out = state / "up.out"
    with out.open("w") as sink:
        up = subprocess.Popen(
            [str(closed_checkout / ".venv/bin/python"), "-m", "txmail"]
            + ["--config", "state/txmail.toml", "up", "--dev"],
            cwd=closed_checkout,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            assert up.poll() is None, out.read_text()
            return "txmail ready:" in out.read_text()

        wait_for(ready, 120, interval=0.2, what="txmail ready")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    assert running_under(folder) == []


def test_a_venv_made_from_a_python_in_a_closed_folder_is_refused_by_init_and_up(
    closed_checkout: Path,
) -> None:
    """A pyenv under /root: the venv is where everyone may pass, its interpreter is not."""
    folder = closed_checkout.parent
    python = folder / "pyenv/bin/python3"
    python.parent.mkdir(parents=True)
    shutil.copy2(os.path.realpath("/usr/bin/python3"), python)
    elsewhere = Path(tempfile.mkdtemp(prefix="txmail-open-venv-", dir="/tmp"))
    try:
        elsewhere.chmod(0o755)
        venv = elsewhere / "venv"
        subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True)
        site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
        (site / "txmail-checkout.pth").write_text(f"{ROOT}\n{sysconfig.get_path('purelib')}\n")
        command = [str(venv / "bin/python"), "-m", "txmail"]
        state = elsewhere / "state"
        done = subprocess.run(
            [*command, "init", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "cannot run the Python interpreter" in done.stderr, done.stderr
        assert f"{folder} (mode 0700, owner root)" in done.stderr
        assert "/usr/bin/python3 -m venv" in done.stderr
        assert "internal error" not in done.stderr and len(done.stderr.splitlines()) == 1
        assert not state.exists()
        subprocess.run(
            [sys.executable, "-m", "txmail", "init", "--state-dir", str(state)],
            check=True,
            capture_output=True,
            timeout=180,
        )
        done = subprocess.run(
            [*command, "--config", str(state / "txmail.toml"), "up", "--dev"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "cannot run the Python interpreter" in done.stderr, done.stderr
        assert f"{folder} (mode 0700, owner root)" in done.stderr
        assert "internal error" not in done.stderr and len(done.stderr.splitlines()) == 1
        assert not (state / "run").exists() and not (state / "log").exists()
        assert running_under(elsewhere) == [] and running_under(folder) == []
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
