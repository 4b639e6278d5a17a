"""txmail policyd through the real Postfix: limits, exact counting, warm-up, suspension, failure.

Most tests share the session's stack, each with its own account. The warm-up and failure tests
run a node of their own (they restart it, stop its helpers), and the cluster test runs two nodes
against one 3-master Redis Cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from txmail.accounts import reputation
from txmail.store import Keys
from txmail_testing.harness import RedisCluster, Sink, Stack, simple_message, wait_for

pytestmark = pytest.mark.e2e

TEMPFAIL = b"txmail cannot check the sending limits right now; try again in a few minutes"


def stats(stack: Stack, account: str) -> dict[str, Any]:
    [row] = json.loads(stack.txmail("stats", "--account", account, "--json").stdout)
    return row  # type: ignore[no-any-return]


def used(row: dict[str, Any], unit: str, window: str) -> int:
    return next(r["used"] for r in row["limits"] if (r["unit"], r["window"]) == (unit, window))


def attempt(
    smtp: smtplib.SMTP, sender: str, recipients: list[str], message: bytes
) -> tuple[int, bytes]:
    """One transaction on an open session: the first refusal, or the DATA reply. After a
    refusal at end of data it sends RSET, as smtplib's sendmail() and other client libraries
    do: Postfix keeps the transaction open after an smtpd_end_of_data_restrictions refusal."""
    code, text = smtp.mail(sender)
    if code >= 400:
        return code, text
    accepted = 0
    refusal: tuple[int, bytes] | None = None
    for recipient in recipients:
        code, text = smtp.rcpt(recipient)
        if code < 400:
            accepted += 1
        elif refusal is None:
            refusal = code, text
    if not accepted:
        smtp.rset()
        assert refusal is not None
        return refusal
    code, text = smtp.data(message)
    if code >= 400:
        smtp.rset()
    return code, text


def exe_attachment(sender: str, recipient: str) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, recipient, "invoice"
    message.set_content("See the attachment.")
    message.add_attachment(
        b"MZ\x90\x00not really",
        maintype="application",
        subtype="octet-stream",
        filename="invoice.pdf.exe",
    )
    return message.as_bytes().replace(b"\n", b"\r\n")


# -- rate limits --------------------------------------------------------------------------


def fresh_minute() -> None:
    """Start right after a minute boundary, so 101 messages fit in one clock minute."""
    if time.time() % 60 > 15:
        time.sleep(60 - time.time() % 60 + 0.2)


def test_the_101st_message_in_a_minute_is_deferred(stack: Stack, sink: Sink) -> None:
    login = ("minute", stack.add_account("minute", "minute.example", settings=["warmup=false"]))
    for _ in range(2):  # a second try only if the first straddled a minute boundary
        fresh_minute()
        started = int(time.time() // 60)
        with contextlib.closing(stack.client("submission", login)) as smtp:
            replies = [
                attempt(
                    smtp,
                    "app@minute.example",
                    [f"m{started}-{n}@example.net"],
                    simple_message("app@minute.example", "x@example.net"),
                )
                for n in range(101)
            ]
        if int(time.time() // 60) == started:
            break
    assert [code for code, _ in replies[:100]] == [250] * 100
    code, text = replies[100]
    reset = time.strftime("%H:%M:%S", time.gmtime((started + 1) * 60))
    assert code == 450
    assert text.startswith(b"4.7.1 ")
    assert text.endswith(
        f"Rate limit of 100 messages per minute for account minute reached; "
        f"retry after {reset}Z".encode()
    )


def test_a_message_refused_later_uses_no_quota(stack: Stack, sink: Sink) -> None:
    login = (
        "later",
        stack.add_account(
            "later", "later.example", settings=["warmup=false", "messages_per_day=2"]
        ),
    )
    hops = "".join(
        f"Received: from hop{n}.example by relay{n}.example; "
        f"Sun, 22 Nov 2026 10:00:{n % 60:02d} +0000\r\n"
        for n in range(60)
    )
    with contextlib.closing(stack.client("submission", login)) as smtp:
        # Refused by the milter at end of message, after policyd passed it at end of data.
        by_milter = attempt(
            smtp,
            "app@later.example",
            ["later-one@example.net"],
            exe_attachment("app@later.example", "later-one@example.net"),
        )
        # Refused by Postfix itself (cleanup: over hopcount_limit), also after end of data.
        by_postfix = attempt(
            smtp,
            "app@later.example",
            ["later-two@example.net"],
            hops.encode() + simple_message("app@later.example", "later-two@example.net"),
        )
        # The two accepted messages the quota allows, then the refusal.
        good = [
            attempt(
                smtp,
                "app@later.example",
                [f"later-good{n}@example.net"],
                simple_message("app@later.example", f"later-good{n}@example.net"),
            )
            for n in range(3)
        ]
    assert by_milter[0] == 554 and b"invoice.pdf.exe" in by_milter[1]
    assert by_postfix == (554, b"5.4.0 Error: too many hops")
    assert [code for code, _ in good] == [250, 250, 450]
    assert b"Rate limit of 2 messages per day for account later reached" in good[2][1]
    row = stats(stack, "later")
    assert used(row, "messages", "day") == 2
    assert row["in_flight"] == {"messages": 0, "recipients": 0, "bytes": 0}
    # policyd did pass both refused messages at end of data (the milter and cleanup come
    # after it); their holds were given back when the session moved on.
    assert stack.log("policyd").count("end-of-message: dunno account=later") == 4
    wait_for(lambda: len(sink.find("later-good1@example.net")) == 1, 20, what="the second message")
    assert not sink.find("later-one@example.net") and not sink.find("later-two@example.net")


def test_a_race_lost_at_end_of_data_is_deferred_with_the_sentence(stack: Stack, sink: Sink) -> None:
    """Two sessions pass RCPT for the last message of the day; the one that reaches end of
    data second is deferred there, with the same sentence, and counts nothing."""
    login = (
        "racer",
        stack.add_account(
            "racer", "racer.example", settings=["warmup=false", "messages_per_day=1"]
        ),
    )
    with (
        contextlib.closing(stack.client("submission", login)) as slow,
        contextlib.closing(stack.client("submission", login)) as fast,
    ):
        assert slow.mail("app@racer.example")[0] == 250
        assert slow.rcpt("racer-slow@example.net")[0] == 250
        assert (
            attempt(
                fast,
                "app@racer.example",
                ["racer-fast@example.net"],
                simple_message("app@racer.example", "racer-fast@example.net"),
            )[0]
            == 250
        )
        code, text = slow.data(simple_message("app@racer.example", "racer-slow@example.net"))
        assert code == 450
        assert text.startswith(b"4.7.1 ")
        assert b"Rate limit of 1 message per day for account racer reached" in text
        # Postfix keeps the transaction after an end-of-data refusal: a client must RSET.
        assert slow.mail("app@racer.example")[0] == 503
        assert slow.rset()[0] == 250
        assert (
            attempt(
                slow,
                "app@racer.example",
                ["racer-again@example.net"],
                simple_message("app@racer.example", "racer-again@example.net"),
            )[0]
            == 450
        )
    row = stats(stack, "racer")
    assert used(row, "messages", "day") == 1
    assert row["in_flight"] == {"messages": 0, "recipients": 0, "bytes": 0}
    wait_for(lambda: len(sink.find("racer-fast@example.net")) == 1, 20, what="the fast message")
    assert not sink.find("racer-slow@example.net")


def test_many_parallel_clients_and_no_over_admission(stack: Stack, sink: Sink) -> None:
    login = (
        "crowd",
        stack.add_account(
            "crowd", "crowd.example", settings=["warmup=false", "messages_per_day=20"]
        ),
    )
    codes: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with contextlib.closing(stack.client("submission", login)) as smtp:
            for m in range(4):
                recipient = f"crowd-{n}-{m}@example.net"
                code, text = attempt(
                    smtp,
                    "app@crowd.example",
                    [recipient],
                    simple_message("app@crowd.example", recipient),
                )
                assert code in (250, 450), (code, text)
                if code == 450:
                    assert b"Rate limit of 20 messages per day for account crowd" in text
                with lock:
                    codes.append(code)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(codes) == 40
    assert codes.count(250) == 20
    row = stats(stack, "crowd")
    assert used(row, "messages", "day") == 20
    assert row["in_flight"]["messages"] == 0
    wait_for(
        lambda: (
            sum(1 for m in sink.messages if any(r.startswith("crowd-") for r in m.recipients)) >= 20
        ),
        30,
        what="20 messages at the sink",
    )
    time.sleep(1)
    assert sum(1 for m in sink.messages if any(r.startswith("crowd-") for r in m.recipients)) == 20


# -- reputation ---------------------------------------------------------------------------


def test_suspension_after_recorded_bounces(stack: Stack) -> None:
    login = ("bouncy", stack.add_account("bouncy", "bouncy.example"))
    client, keys = stack.redis(), Keys("txmail:")
    for _ in range(195):
        reputation.count_outcome(client, keys, "bouncy", "delivery")
    for _ in range(5):
        judged = reputation.count_outcome(client, keys, "bouncy", "bounce")
    assert judged[0].level == "suspend"
    reason = (
        "Sending suspended: hard bounce rate 2.5% (5 of 200) over the last 7 days exceeds "
        "2%; contact the operator"
    )
    with contextlib.closing(stack.client("submission", login)) as smtp:
        code, text = smtp.mail("app@bouncy.example")
    assert code == 554 and text.startswith(b"5.7.1")
    assert reason.encode() in text
    kinds = [f["kind"] for _, f in client.xrange(keys.reputation_alerts("bouncy"))]
    assert kinds == ["reputation_warning", "reputation_suspended"]
    shown = stack.txmail("accounts", "show", "bouncy").stdout
    assert f"status:      suspended ({reason})" in shown
    stack.txmail("accounts", "resume", "bouncy")
    queue_id = stack.send(
        login,
        "app@bouncy.example",
        ["fine@example.net"],
        simple_message("app@bouncy.example", "fine@example.net"),
    )
    assert queue_id


# -- the policy socket itself -------------------------------------------------------------


def policy_socket(stack: Stack) -> Path:
    return stack.state / "run/policyd/policyd.sock"


def ask(path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(request)
        answer = b""
        # A reset is a close too: policyd closes a connection whose request is over its limit
        # while the rest of that request is still unread, and the kernel then resets it.
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while not answer.endswith(b"\n\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        return answer


def serving(path: Path) -> bool:
    try:
        return ask(path, RCPT_REQUEST) == b"action=DUNNO\n\n"
    except OSError:
        return False


RCPT_REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=acme-socket\n"
    b"instance=x1\nrecipient=user@example.net\n\n"
)


def test_garbage_on_the_socket_closes_it_and_the_daemon_goes_on(stack: Stack) -> None:
    for garbage in (
        b"GET / HTTP/1.0\r\n\r\n",
        b"request=smtpd_access_policy\nx=" + b"y" * 600 + b"\n\n",
        b"request=smtpd_access_policy\n" + b"z=1\n" * 20000,
    ):
        assert ask(policy_socket(stack), garbage) == b""
    assert ask(policy_socket(stack), RCPT_REQUEST) == b"action=DUNNO\n\n"
    # The line passes through `txmail up` (stack/relay.py) on its way to the log.
    wait_for(lambda: "disconnecting" in stack.log("policyd"), 10, what="policyd's line")


# -- a node of its own: warm-up over days, policyd or Redis gone ---------------------------


@pytest.fixture(scope="module")
def node(sink: Sink) -> Iterator[Stack]:
    stack = Stack(relay_port=sink.port, name="policyd")
    try:
        stack.start()
        yield stack
    finally:
        stack.close()


def restart_with_clock_offset(stack: Stack, seconds: float) -> None:
    stack.stop()
    text = stack.config.read_text()
    start = text.index("clock_offset = ")
    end = text.index("\n", start)
    stack.config.write_text(text[:start] + f"clock_offset = {seconds!r}" + text[end:])
    stack.start()


def test_warmup_rollover_with_a_clock_offset(node: Stack, sink: Sink) -> None:
    login = (
        "warm",
        node.add_account(
            "warm", "warm.example", settings=["warmup_schedule=2", "recipients_per_day=100"]
        ),
    )
    recipients = [f"w1-{n}@example.net" for n in range(3)]
    with contextlib.closing(node.client("submission", login)) as smtp:
        smtp.mail("app@warm.example")
        replies = [smtp.rcpt(r) for r in recipients]
        assert smtp.data(simple_message("app@warm.example", recipients[0]))[0] == 250
    assert [code for code, _ in replies] == [250, 250, 450]
    assert replies[2][1] == (
        b"4.7.1 <w1-2@example.net>: Recipient address rejected: Daily "
        b"warm-up quota of 2 recipients reached (day 1 of warm-up); "
        b"resets at 00:00Z"
    )
    assert (
        "warm-up:     day 1 of warm-up, 2 of 2 recipients today"
        in node.txmail("accounts", "show", "warm").stdout
    )

    restart_with_clock_offset(node, 86400.0)  # tomorrow: day 2, quota 4
    node.wait_passwd("warm")
    shown = node.txmail("accounts", "show", "warm").stdout
    assert "warm-up:     day 2 of warm-up, 0 of 4 recipients today" in shown
    assert "today:       0 messages, 0 recipients" in shown
    recipients = [f"w2-{n}@example.net" for n in range(5)]
    with contextlib.closing(node.client("submission", login)) as smtp:
        code, text = attempt(
            smtp, "app@warm.example", recipients, simple_message("app@warm.example", recipients[0])
        )
        assert code == 250
        code, text = attempt(
            smtp,
            "app@warm.example",
            ["late@example.net"],
            simple_message("app@warm.example", "late@example.net"),
        )
    assert code == 450 and b"quota of 4 recipients reached (day 2 of warm-up)" in text
    assert (
        "day 2 of warm-up, 4 of 4 recipients today"
        in node.txmail("accounts", "show", "warm").stdout
    )


def children(pid: int) -> dict[int, str]:
    """The command lines of the processes `pid` started (the supervisor's components)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_text().replace("\0", " ")
    return found


@contextlib.contextmanager
def supervisor_paused(stack: Stack) -> Iterator[int]:
    """Stop the node's supervisor from restarting what the test kills."""
    assert stack.proc is not None
    os.kill(stack.proc.pid, signal.SIGSTOP)
    try:
        yield stack.proc.pid
    finally:
        os.kill(stack.proc.pid, signal.SIGCONT)


def component_pid(stack: Stack, word: str) -> int:
    assert stack.proc is not None
    [pid] = [pid for pid, cmd in children(stack.proc.pid).items() if word in cmd]
    return pid


def test_a_dead_policyd_means_4xx_never_a_permit(node: Stack) -> None:
    login = ("deadpol", node.add_account("deadpol", "deadpol.example"))
    with supervisor_paused(node):
        os.kill(component_pid(node, " policyd"), signal.SIGKILL)
        with contextlib.closing(node.client("submission", login)) as smtp:
            smtp.mail("app@deadpol.example")
            code, text = smtp.rcpt("someone@example.net")
    assert code == 451 and text.startswith(b"4.3.0") and TEMPFAIL in text
    wait_for(lambda: serving(policy_socket(node)), 30, what="policyd restarted")
    node.send(
        login,
        "app@deadpol.example",
        ["after@example.net"],
        simple_message("app@deadpol.example", "after@example.net"),
    )


def test_redis_down_means_defer(node: Stack) -> None:
    login = ("noredis", node.add_account("noredis", "noredis.example"))
    with supervisor_paused(node):
        os.kill(component_pid(node, "redis-server"), signal.SIGKILL)
        answer = ask(policy_socket(node), RCPT_REQUEST.replace(b"acme-socket", b"noredis"))
        with contextlib.closing(node.client("submission", login)) as smtp:
            code, text = smtp.mail("app@noredis.example")
    assert answer.startswith(b"action=451 4.3.0 ")
    assert code == 451 and text.startswith(b"4.3.0")  # the milter answers first, also a 4xx
    wait_for(
        lambda: "tempfail: Redis unavailable" in node.log("policyd"), 10, what="policyd's line"
    )


# -- two nodes, one Redis Cluster ---------------------------------------------------------


def test_two_nodes_on_one_redis_cluster_hold_one_limit(sink: Sink) -> None:
    cluster = RedisCluster().start()
    nodes = [
        Stack(
            relay_port=sink.port,
            redis_url=cluster.url,
            cluster=True,
            name=f"node{n}",
            log_permits=True,
        )
        for n in range(2)
    ]
    try:
        for node in nodes:
            node.start()
        password = nodes[0].add_account(
            "shared", "shared.example", settings=["warmup=false", "messages_per_day=10"]
        )
        nodes[1].wait_passwd("shared")
        codes: list[int] = []
        lock = threading.Lock()

        def client(node: Stack, n: int) -> None:
            with contextlib.closing(node.client("submission", ("shared", password))) as smtp:
                for m in range(4):
                    recipient = f"shared-{n}-{m}@example.net"
                    code, _ = attempt(
                        smtp,
                        "app@shared.example",
                        [recipient],
                        simple_message("app@shared.example", recipient),
                    )
                    with lock:
                        codes.append(code)

        threads = [threading.Thread(target=client, args=(nodes[n % 2], n)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(codes) == 16
        assert codes.count(250) == 10 and codes.count(450) == 6
        for node in nodes:
            assert used(stats(node, "shared"), "messages", "day") == 10
        log = "".join(node.log("policyd") for node in nodes)
        assert log.count("end-of-message: dunno account=shared") == 10
        assert all("account=shared" in node.log("policyd") for node in nodes)
    finally:
        for node in nodes:
            node.close()
        cluster.close()
