"""`txmail health COMPONENT` against a real node: every component answers; one that is stopped
(SIGSTOP: alive, but silent) or gone does not, and the sentence says which and why."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from txmail.stack.supervisor import build
from txmail_testing.harness import TXMAIL, Sink, Stack, wait_for

pytestmark = pytest.mark.e2e


def test_every_component_answers_and_a_stopped_one_does_not(sink: Sink) -> None:
    from txmail import config

    node = Stack(relay_port=sink.port, name="health")
    try:
        node.start(dev=True)
        settings = config.load(node.config)
        names = [c.name for c in build(settings, node.config, dev=True)]
        assert {"redis", "milter", "policyd", "dovecot", "postfix", "tracker"} <= set(names)
        for name in names:
            result = node.txmail("health", name, check=False)
            assert (result.returncode, result.stdout) == (0, f"{name}: ok\n"), result.stderr
        everything = node.txmail("health")  # the image's HEALTHCHECK: every component of up
        assert everything.stdout.splitlines() == [f"{n}: ok" for n in names if n != "capture"]

        policyd = node.pids_of("policyd")  # the daemon and its workers
        for pid in policyd:
            os.kill(pid, signal.SIGSTOP)
        try:
            result = node.txmail("health", "policyd", check=False)
        finally:
            for pid in policyd:
                os.kill(pid, signal.SIGCONT)
        assert result.returncode == 1
        assert "policyd unhealthy: the policy service: no answer within" in result.stderr

        node.stop()
        result = node.txmail("health", "postfix", check=False)
        assert result.returncode == 1
        assert "Postfix: cannot connect to" in result.stderr
        result = node.txmail("health", "milter", check=False)
        assert result.returncode == 1 and "no socket at" in result.stderr
    finally:
        node.close()


def test_postfix_start_fg_runs_the_master_in_the_foreground_until_sigterm(sink: Sink) -> None:
    """The container's Postfix: `txmail postfix start-fg` prepares the state directory and
    runs Postfix's master in the foreground (no daemon left behind); SIGTERM to its process
    group (as tini -g sends it) stops the master too, and the command exits 0."""
    node = Stack(relay_port=sink.port, name="startfg")
    out = (node.state / "start-fg.out").open("w")
    proc = subprocess.Popen(
        [*TXMAIL, "--config", str(node.config), "postfix", "start-fg"],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    try:

        def answers() -> bool:
            assert proc.poll() is None, (node.state / "start-fg.out").read_text()
            return node.txmail("health", "postfix", check=False).returncode == 0

        wait_for(answers, 60, interval=0.2, what="Postfix's greeting")
        master = int((node.state / "postfix/spool/pid/master.pid").read_text())
        # The master is a child of the command's postfix-script, not a daemon on its own.
        assert _parent(_parent(master)) == proc.pid
        os.killpg(proc.pid, signal.SIGTERM)  # as tini -g does
        assert proc.wait(60) == 0
        assert not os.path.exists(f"/proc/{master}")
        assert node.txmail("health", "postfix", check=False).returncode == 1
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        node.close()


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])
