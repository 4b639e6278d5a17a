"""The spam check as part of the stack: `txmail up` with spam.enabled runs Debian's rspamd
itself (stack/rspamd.py: Debian's modules, its own config and state in STATE/rspamd, a
loopback port), the milter asks it, and it stops with the stack. The only resolver it may ask
is a loopback DNS server, so no traffic leaves the machine."""

from __future__ import annotations

import pwd
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from txmail_testing.harness import Sink, Stack, free_listening_port, simple_message, wait_for
from txmail_testing.loopback_dns import LoopbackDns

pytestmark = pytest.mark.e2e

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def children(parent: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in status:
            found.add(int(entry.name))
    return found


def rspamd_processes(supervisor: int) -> set[int]:
    """The rspamd processes (main and workers) the supervisor started (rspamd sets their
    titles, so the command line does not say which configuration they run)."""
    main = {pid for pid in children(supervisor) if is_rspamd(pid)}
    return {pid for m in main for pid in {m, *children(m)} if is_rspamd(pid)}


def is_rspamd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name == "rspamd"
    except OSError:
        return False


def submit(node: Stack, login: tuple[str, str], recipient: str, body: str) -> tuple[int, str]:
    with node.client("submission", login) as smtp:
        smtp.mail("app@upspam.example")
        smtp.rcpt(recipient)
        try:
            code, reply = smtp.data(
                simple_message("app@upspam.example", recipient, subject="Order", body=body)
            )
        except smtplib.SMTPDataError as exc:
            code, reply = exc.smtp_code, exc.smtp_error
    return code, reply.decode(errors="replace")


def test_up_runs_rspamd_and_stops_it(make_stack: Callable[..., Stack], sink: Sink) -> None:
    dns = LoopbackDns().start()
    try:
        node = make_stack(name="upspam")
        node.configure(
            "spam",
            enabled=True,
            listen=f"127.0.0.1:{free_listening_port()}",
            nameservers=[f"127.0.0.1:{dns.port}"],
        )
        node.start(timeout=120)  # Debian's rspamd reads its modules and suffix list first
        assert node.proc is not None
        processes = rspamd_processes(node.proc.pid)
        assert len(processes) >= 2, processes  # the main process and its normal worker
        password = node.add_account("upspam", "upspam.example")
        login = ("upspam", password)

        code, reply = submit(node, login, "gtube@example.net", f"Test.\r\n{GTUBE}\r\n")
        assert code == 550, reply
        assert "5.7.1" in reply and "spam" in reply and "score 15.0" in reply, reply
        assert not sink.find("gtube@example.net")

        code, reply = submit(node, login, "clean@example.net", "Your invoice is attached.\r\n")
        assert code == 250, reply
        wait_for(lambda: sink.find("clean@example.net"), 20, what="delivery of the clean mail")
        assert "GTUBE" in node.log("rspamd")  # rspamd's own log, kept by the supervisor

        assert node.stop() == 0
        assert [pid for pid in processes if is_rspamd(pid)] == []
        # Its workers wrote only in db/: the configuration they cannot touch still works.
        folder = node.state / "rspamd"
        worker = pwd.getpwnam("_rspamd").pw_uid
        written = {p.relative_to(folder).parts[0] for p in folder.rglob("*") if p.owner() != "root"}
        assert written == {"db"}, written
        assert [p for p in (folder / "db").iterdir() if p.stat().st_uid == worker]  # the .hs cache
        assert folder.stat().st_uid == 0
    finally:
        dns.stop()
