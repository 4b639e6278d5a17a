"""`txmail postfix install` into Postfix exactly as Debian 12 ships it, then every capability.

The operator's Postfix (txmail_testing/debian_postfix.py) is made from Debian's stock
main.cf.debian and master.cf.dist, chroot left `y` as Debian's master.cf has it, the jail
populated by Debian's configure-instance.sh, logging through syslog(3) to a real rsyslogd (no
maillog_file). After install: authenticated submission with txmail's rules, a 550 at the sink
as a signed bounce webhook and the forwarded bounce (through the installed reinjection
listener), an asynchronous DSN on the operator's port 25, delivery events read from rsyslog's
file, per-recipient copies of tracked mail, /v1/send, the queue gauges; and `uninstall` puts
main.cf and master.cf back byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.test_tracker import html_message
from txmail import config
from txmail.stack.render import QUEUE_FILE_ROOM
from txmail.webhooks import signing
from txmail_testing.debian_postfix import DebianPostfix
from txmail_testing.harness import Sink, Stack, simple_message, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

OPERATOR_BANNER = "$myhostname ESMTP operated by the operator"


@pytest.fixture
def operator(sink: Sink) -> Iterator[DebianPostfix]:
    """Debian's stock configuration, with a few settings of the operator's own that the
    install must keep."""
    made = DebianPostfix(sink.port)
    op_transport = made.root / "op_transport"
    op_transport.write_text(f"op.example smtp:[127.0.0.1]:{sink.port}\n")
    made.extra = {
        "smtpd_banner": OPERATOR_BANNER,
        "transport_maps": f"texthash:{op_transport}",
        "message_size_limit": "20480000",
    }
    made.create()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def postconf_h(etc: Path, name: str) -> str:
    return subprocess.run(
        ["postconf", "-c", str(etc), "-h", name], capture_output=True, text=True, check=True
    ).stdout.strip()


def chroot_columns(etc: Path) -> dict[str, str]:
    out = subprocess.run(
        ["postconf", "-c", str(etc), "-F", "*/*/chroot"], capture_output=True, text=True, check=True
    ).stdout
    return {
        key.rsplit("/", 1)[0]: value
        for key, value in (line.split(" = ", 1) for line in out.splitlines())
    }


def jails(master_pid: int) -> dict[str, set[str]]:
    """The root directory of each running child of Postfix's master, by program name."""
    roots: dict[str, set[str]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) != master_pid:
                continue
            program = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            roots.setdefault(program, set()).add(os.readlink(entry / "root"))
        except (OSError, ValueError):
            continue
    return roots


def queue_gauge(base: str, queue: str) -> int:
    text = requests.get(f"{base}/metrics", timeout=10).text
    match = re.search(
        rf'^txmail_postfix_queue_messages{{queue="{queue}",scope="node"}} (\S+)$', text, re.M
    )
    assert match, text[:2000]
    return int(float(match[1]))


def test_install_into_debian_postfix_chrooted_and_every_capability(
    operator: DebianPostfix,
    make_stack: Callable[..., Stack],
    sink: Sink,
    receiver: WebhookReceiver,
) -> None:
    etc = operator.etc
    original = operator.files()
    debian_chroot = chroot_columns(etc)
    assert debian_chroot["smtp/unix"] == "y" and debian_chroot["cleanup/unix"] == "y"
    assert debian_chroot[f"127.0.0.1:{operator.port}/inet"] == "y"
    assert postconf_h(etc, "maillog_file") == ""  # Debian logs through syslog

    node = make_stack(name="installed")
    # The follower is pointed at rsyslog's mail log by install. What detection would find
    # depends on the rsyslogd processes of this machine (this test's reads its own
    # configuration), so the file is named (tests/unit/stack/test_logsource.py: detection).
    log_flags = ("--maillog-source", "file", "--maillog-path", str(operator.mail_log))
    dry = node.txmail(
        "postfix",
        "install",
        "--postfix-config-dir",
        str(etc),
        "--dry-run",
        "--no-systemd",
        *log_flags,
    )
    assert f"maillog.path = '{operator.mail_log}'" in dry.stdout
    assert "postconf -c" in dry.stdout and "-M -e" in dry.stdout
    assert f"queue_directory = '{operator.queue}'" in dry.stdout
    assert operator.files() == original  # a dry run changes nothing

    units = node.state / "systemd"
    result = node.txmail(
        "postfix",
        "install",
        "--postfix-config-dir",
        str(etc),
        "--systemd-dir",
        str(units),
        *log_flags,
    )
    assert "installed into" in result.stdout
    maillog = config.load(node.config).maillog
    assert (maillog.source, maillog.path) == ("file", str(operator.mail_log))
    unit = (units / "txmail.service").read_text()
    assert "up --external-postfix" in unit and str(node.config) in unit
    # Type=notify in a sandbox: the socket folder it may write exists before it starts.
    assert "Type=notify" in unit and f" {operator.queue / 'txmail'} " in unit
    assert (operator.queue / "txmail").is_dir()
    [backup] = list(etc.glob("txmail-backup-*"))
    assert (backup / "main.cf").read_bytes() == original["main.cf"]

    # txmail.toml now names the operator's Postfix, read with postconf -h
    settings = config.load(node.config)
    assert settings.postfix.queue_directory == str(operator.queue)
    assert settings.postfix.config_directory == str(etc)
    assert settings.milter.socket == str(operator.queue / "txmail/milter.sock")

    # The operator's own settings are all still there, chroot as Debian ships it.
    assert postconf_h(etc, "smtpd_banner") == OPERATOR_BANNER
    assert postconf_h(etc, "transport_maps").startswith(f"texthash:{operator.root}/op_transport")
    # every socket Postfix connects to is named inside the queue directory (chroot jail)
    assert "socketmap:unix:txmail/socketmap.sock:transport" in postconf_h(etc, "transport_maps")
    assert "socketmap:unix:txmail/socketmap.sock:relay" in postconf_h(etc, "relay_domains")
    assert postconf_h(etc, "message_size_limit") == str(52428800 + QUEUE_FILE_ROOM)
    assert postconf_h(etc, "disable_vrfy_command") == "yes"
    assert postconf_h(etc, "smtpd_etrn_restrictions").startswith("check_etrn_access")
    assert postconf_h(etc, "enable_long_queue_ids") == "yes"
    assert postconf_h(etc, "maillog_file") == ""
    installed_chroot = chroot_columns(etc)
    assert {k: installed_chroot[k] for k in debian_chroot} == debian_chroot
    submission = f"127.0.0.1:{node.submission}/inet"
    reinject = f"127.0.0.1:{settings.listen.reinject}/inet"
    assert installed_chroot[submission] == "y"  # chrooted as the operator's smtpd
    assert installed_chroot[reinject] == "y"  # the reinjection listener, loopback only
    master = subprocess.run(
        ["postconf", "-c", str(etc), "-M"], capture_output=True, text=True, check=True
    ).stdout
    assert "smtpd_milters=unix:txmail/milter.sock" in master
    assert "smtpd_sasl_path=txmail/auth" in master
    assert "check_policy_service unix:txmail/policyd.sock" in master
    assert "bouncepipe unix" in master
    # The operator's port keeps the operator's restrictions: no txmail milter on it.
    assert postconf_h(etc, "smtpd_milters") == ""

    # Installing again changes nothing in main.cf and adds no duplicates.
    again = node.txmail(
        "postfix", "install", "--postfix-config-dir", str(etc), "--dry-run", "--no-systemd"
    )
    assert " -e '" not in again.stdout.split("-M -e")[0].replace("postconf -c", "")
    assert "# the maillog follower: as txmail.toml says" in again.stdout  # not detected anew

    node.start(args=("--external-postfix",))
    operator.start()
    installed = operator.files()
    base = f"http://127.0.0.1:{settings.listen.http}"

    name = f"op{uuid.uuid4().hex[:6]}"
    domain = f"{name}.example"
    password = node.add_account(
        name,
        domain,
        settings=["warmup=false", "track_opens=true", "track_clicks=true", "max_recipients=5"],
    )
    node.txmail("domains", "add", domain, "--account", name)  # return path mta.DOMAIN
    node.txmail("webhooks", "url", name, receiver.url)
    login = (name, password)
    sender = f"app@{domain}"

    def wait_event(kind: str, rcpt: str, queue_id: str, timeout: float = 30) -> dict:
        return receiver.wait_event(
            lambda e: (e["kind"], e["recipient"], e["message_id"]) == (kind, rcpt, queue_id),
            timeout,
        )

    # 1. Authenticated submission on 587 (SASL through the chroot), every rule applied:
    # the milter's bounce address on the return-path domain, control headers removed, a
    # forbidden attachment and too many recipients refused with txmail's sentences.
    ok = f"ok-{name}@dest.example"
    queue_id = node.send(
        login,
        sender,
        [ok],
        simple_message(sender, ok, extra_headers={"X-CloudMTA-Tags": "welcome"}),
    )
    [delivered] = wait_for(lambda: sink.find(ok), 30, what="delivery through Debian's Postfix")
    assert delivered.sender.startswith("bounces+")  # the milter's signed bounce address
    assert b"X-CloudMTA-" not in bytes(delivered.data)
    assert node.redis().hgetall(f"txmail:{{{name}}}:message:{queue_id}")["account"] == name
    # the daemons that did it ran in Debian's chroot jail, the queue directory
    master_pid = operator.master_pid()
    assert master_pid
    running = jails(master_pid)
    for program in ("smtpd", "cleanup", "trivial-rewrite", "smtp"):
        assert running.get(program) == {str(operator.queue)}, (program, running)
    delivery = wait_event("delivery", ok, queue_id)  # read from rsyslog's mail log
    assert delivery["tags"] == ["welcome"]
    exe = (
        f"From: {sender}\r\nTo: {ok}\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n'
        "\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="setup.exe"\r\n\r\nMZ\r\n--b--\r\n'
    ).encode()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        node.send(login, sender, [ok], exe)
    assert refused.value.smtp_code == 554 and b"setup.exe" in refused.value.smtp_error
    with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)):
        node.send(login, sender, [f"r{i}@dest.example" for i in range(7)], b"Subject: x\r\n\r\nx")

    # 2. A 550 at the sink: a signed bounce webhook, and the DSN forwarded to the client's
    # envelope sender through the reinjection listener (not left in the deferred queue).
    rejected = f"reject-{name}@dest.example"
    client_sender = f"client-{name}@{domain}"
    bounced_id = node.send(login, client_sender, [rejected], simple_message(sender, rejected))
    event = wait_event("bounce", rejected, bounced_id)
    assert (event["details"]["status"], event["details"]["reason"]) == ("5.1.1", "userunknown")
    headers, body, _ = receiver.post_of(event["id"])
    secret = node.txmail("webhooks", "secret", name).stdout.strip()
    assert signing.verify(secret, headers, body, now=float(headers["webhook-timestamp"]))
    forwarded = wait_for(
        lambda: [m for m in sink.find(client_sender) if m.sender in ("", "<>")],
        60,
        what="the bounce forwarded to the client's envelope sender",
    )
    assert bounced_id.encode() in bytes(forwarded[0].data)

    # 3. An asynchronous DSN from the internet on the operator's (chrooted) port 25, to the
    # return-path domain the socketmap names: recorded and forwarded per the client's NOTIFY.
    later = f"later-{name}@dest.example"
    async_sender = f"async-{name}@{domain}"
    with contextlib.closing(node.client(login=login)) as smtp:
        smtp.mail(async_sender)
        smtp.rcpt(later, ["NOTIFY=FAILURE"])
        code, text = smtp.data(simple_message(sender, later))
    async_id = text.decode().split("queued as ")[1].split()[0]
    wait_event("delivery", later, async_id)
    original_mail = sink.find(later)[-1]
    Sink.deliver(operator.port, "", original_mail.sender, Sink.dsn(original_mail, later))
    async_event = wait_event("bounce", later, async_id)
    assert async_event["details"]["source"] == "bounce-pipe"
    wait_for(
        lambda: [m for m in sink.find(async_sender) if m.sender in ("", "<>")],
        60,
        what="the asynchronous DSN forwarded per NOTIFY=FAILURE",
    )

    # The return-path domain mta.DOMAIN is known only to the socketmap (Redis): the chrooted
    # smtpd on the operator's port 25 and trivial-rewrite reach it through the queue directory.
    forged = f"bounces+forged@mta.{domain}"
    Sink.deliver(operator.port, "", forged, Sink.dsn(original_mail, later))
    wait_for(
        lambda: re.search(rf"to=<{re.escape(forged)}>, relay=bouncepipe", operator.log()),
        30,
        what="the return-path domain routed to the bounce pipe",
    )
    assert not sink.find(forged)
    assert not re.search(r"warning: .*txmail/", operator.log()), operator.log()

    # 4. Tracked mail to several recipients leaves as one copy per recipient (private/
    # txmail-copy in the operator's queue directory).
    r1, r2 = f"t1-{name}@dest.example", f"t2-{name}@dest.example"
    node.send(login, sender, [r1, r2], html_message(sender, f"{r1}, {r2}", "https://shop.example"))
    one = wait_for(lambda: sink.find(r1), 30, what="the first copy")
    two = wait_for(lambda: sink.find(r2), 30, what="the second copy")
    assert one[0].recipients == [r1] and two[0].recipients == [r2]
    assert b"/o/" in bytes(one[0].data) and bytes(one[0].data) != bytes(two[0].data)

    # 5. /v1/send (private/txmail-api in the operator's queue directory).
    key = node.txmail("accounts", "apikey", name).stdout.strip().splitlines()[-1]
    api_rcpt = f"api-{name}@dest.example"
    answer = requests.post(
        f"{base}/v1/send",
        json={
            "envelope": sender,
            "recipients": [api_rcpt],
            "mime": simple_message(sender, api_rcpt, subject="via api").decode(),
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    wait_for(lambda: sink.find(api_rcpt), 30, what="delivery of the API send")

    # 6. The queue gauges count the operator's queue: a 450 leaves a message deferred.
    before = queue_gauge(base, "deferred")
    deferred = f"defer-{name}@dest.example"
    node.send(login, sender, [deferred], simple_message(sender, deferred))
    wait_for(lambda: queue_gauge(base, "deferred") > before, 30, what="the deferred gauge")

    # Nothing about the forwarded bounces stays in the queue.
    queue = subprocess.run(
        ["postqueue", "-c", str(etc), "-j"], capture_output=True, text=True, check=True
    ).stdout
    assert client_sender not in queue and async_sender not in queue

    # 7. uninstall: both files byte for byte as before, txmail's services gone.
    node.stop()
    operator.stop()
    assert operator.files() == installed
    gone = node.txmail(
        "postfix", "uninstall", "--postfix-config-dir", str(etc), "--systemd-dir", str(units)
    )
    assert "restored" in gone.stdout
    assert operator.files() == original
    assert not list(etc.glob("txmail-backup-*"))
    assert not (units / "txmail.service").exists()
    assert config.load(node.config).postfix.queue_directory == ""
    assert config.load(node.config).maillog.path == ""  # txmail's own Postfix's log again
