"""The maillog follower across real rotations of a real Postfix's maillog_file: `postfix
logrotate` (rename, HUP so postlogd reopens, then gzip of the renamed file one second later)
while mail flows, and a logrotate-style rename while the follower is stopped and then killed.
Every delivery gets its event, once."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable

import pytest

from txmail_testing.harness import Sink, Stack, simple_message, wait_for

pytestmark = pytest.mark.e2e


def delivered(node: Stack, queue_id: str) -> bool:
    return "delivery" in node.txmail("messages", "show", queue_id).stdout


def test_no_delivery_event_is_lost_across_rotations(
    make_stack: Callable[..., Stack], sink: Sink
) -> None:
    node = make_stack(name="rotation")
    node.start()
    login = ("rot", node.add_account("rot", "rot.example"))
    maillog = node.state / "log/postfix.log"

    def send(n: int, tag: str) -> list[str]:
        ids = []
        for i in range(n):
            rcpt = f"{tag}{i}@example.net"
            ids.append(
                node.send(login, "app@rot.example", [rcpt], simple_message("app@rot.example", rcpt))
            )
        return ids

    first = send(3, "before")
    wait_for(lambda: all(delivered(node, q) for q in first), 30, what="the first deliveries")

    # postfix logrotate while mail is in flight: the lines of these messages are split
    # between the renamed (then compressed) file and the new one.
    during = send(3, "during")
    subprocess.run(
        ["postfix", "-c", str(node.state / "postfix/etc"), "logrotate"],
        check=True,
        capture_output=True,
    )
    after = send(3, "after")
    wait_for(
        lambda: all(delivered(node, q) for q in during + after),
        30,
        what="the deliveries around `postfix logrotate`",
    )
    assert list(node.state.glob("log/postfix.log.*.gz"))  # it really was rotated away

    # The follower is stopped (SIGSTOP: the supervisor does not restart it) while the log is
    # renamed as logrotate does (mail.log -> mail.log.1) and mail goes on; then it is killed,
    # so the one the supervisor starts resumes from the saved position, in postfix.log.1.
    follower = node.pid_of("maillog")
    os.kill(follower, signal.SIGSTOP)
    try:
        while_stopped = send(2, "stopped-old")
        wait_for(
            lambda: all(f"{q}: removed" in maillog.read_text() for q in while_stopped),
            30,
            what="Postfix finishing the messages sent while the follower is stopped",
        )
        os.rename(maillog, maillog.with_name("postfix.log.1"))
        subprocess.run(
            ["postfix", "-c", str(node.state / "postfix/etc"), "reload"],
            check=True,
            capture_output=True,
        )
        later = send(2, "stopped-new")
        wait_for(
            lambda: maillog.exists() and all(f"{q}: removed" in maillog.read_text() for q in later),
            30,
            what="Postfix logging into the new file",
        )
    finally:
        os.kill(follower, signal.SIGKILL)
    wait_for(
        lambda: node.pids_of("maillog") not in ([], [follower]),
        30,
        what="the supervisor restarting the follower",
    )
    wait_for(
        lambda: all(delivered(node, q) for q in while_stopped + later),
        30,
        what="the deliveries logged while the follower was stopped",
    )
    for queue_id in first + during + after + while_stopped + later:
        shown = node.txmail("messages", "show", queue_id).stdout
        assert shown.count(" delivery ") == 1, shown
    assert "resuming in the rotated log" in node.log("maillog")
