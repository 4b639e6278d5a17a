"""`txmail health COMPONENT` against a real node: every component answers; one that is stopped
(SIGSTOP: alive, but silent) or gone does not, and the sentence says which and why."""

from __future__ import annotations

import os
import signal

import pytest

from txmail.stack.supervisor import build
from txmail_testing.harness import Sink, Stack

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
