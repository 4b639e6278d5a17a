"""`txmail doctor` on a real node (Postfix, Dovecot, the daemons, a Redis of its own started
here so the test can stop it): all good, then one problem at a time, each its line and exit 1;
`txmail up` refuses to start on the errors with the same lines."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from txmail import config
from txmail_testing.harness import TXMAIL, RedisServer, Stack
from txmail_testing.loopback_dns import LoopbackDns

pytestmark = pytest.mark.e2e


def doctor(node: Stack) -> subprocess.CompletedProcess[str]:
    return node.txmail("doctor", "--offline", check=False)


def test_doctor_on_a_running_node(make_stack: Callable[..., Stack]) -> None:
    redis = RedisServer().start()
    try:
        node = make_stack(name="doctor", redis_url=redis.url)
        node.start()
        healthy = doctor(node)
        assert (healthy.returncode, healthy.stdout) == (0, "all good\n"), healthy.stderr

        key = node.state / "secrets/bounce.key"
        key.chmod(0o644)
        leaked = doctor(node)
        assert leaked.returncode == 1
        assert leaked.stdout == (
            f"error: secrets.bounce_key_file: {key} is mode 0644, others on this machine "
            f"can read it; run `chmod 600 {key}` (and replace the key if someone may have "
            "read it)\n"
        )
        key.chmod(0o600)

        redis.stop()
        down = doctor(node)
        assert down.returncode == 1
        [line] = down.stdout.splitlines()
        assert line.startswith(f"warning: Redis at {redis.url} does not answer (")
        assert line.endswith("; start that Redis, or correct redis.url")

        node.stop()
        redis.start()
        stopped = doctor(node)
        assert stopped.returncode == 1
        assert "nothing accepts connections on the milter" in stopped.stdout
        assert doctor(node).stdout.count("\n") == 4  # milter, policy, socketmap, Dovecot
    finally:
        redis.close()


def run_up(node: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TXMAIL, "--config", str(node.config), "up"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_up_stops_on_what_doctor_calls_an_error(make_stack: Callable[..., Stack]) -> None:
    node = make_stack(name="doctorup")
    node.configure("maillog", path="/nonexistent/folder/mail.log")
    result = run_up(node)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "txmail: error: the maillog follower's log /nonexistent/folder/mail.log cannot exist"
    )
    assert not (node.state / "run/redis/redis.sock").exists()  # nothing was started
    assert "error: the maillog follower's log /nonexistent" in doctor(node).stdout

    (node.state / "secrets/webhook.key").unlink()
    result = run_up(node)
    assert result.returncode == 2, result.stderr
    assert "secrets.webhook_key_file" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert "error: secrets.webhook_key_file" in doctor(node).stdout


def test_doctor_on_a_stock_debian_postfix_after_install(
    make_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    """Debian's stock master.cf runs smtpd and trivial-rewrite chrooted in the queue folder.
    `txmail postfix install` names txmail's sockets relative to it (QUEUE/txmail/), so doctor
    finds nothing to say about them; a service pointed at a socket by its absolute path
    (which inside the jail names another file) is named, and the fix sentence mends it."""
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy("/usr/share/postfix/main.cf.debian", etc / "main.cf")
    shutil.copy("/usr/share/postfix/master.cf.dist", etc / "master.cf")
    queue = tmp_path / "spool"
    queue.mkdir()
    subprocess.run(["postconf", "-c", str(etc), "-e", f"queue_directory = {queue}"], check=True)
    node = make_stack(name="doctorchroot")
    log = tmp_path / "mail.log"
    log.write_text("")
    node.txmail(
        "postfix",
        "install",
        "--postfix-config-dir",
        str(etc),
        "--no-systemd",
        "--maillog-source",
        "file",
        "--maillog-path",
        str(log),
    )

    def chroot_lines() -> list[str]:
        return [line for line in doctor(node).stdout.splitlines() if "runs chrooted" in line]

    assert chroot_lines() == []
    milter = queue / "txmail/milter.sock"
    subprocess.run(
        ["postconf", "-c", str(etc), "-P", f"smtp/inet/smtpd_milters=unix:{milter}"], check=True
    )
    assert chroot_lines() == [
        f"error: master.cf service smtp/inet (smtpd) runs chrooted in {queue} and cannot "
        f"reach the milter {milter} (smtpd_milters); run `postconf -c {etc} -F "
        "'smtp/inet/chroot = n'` and `postfix reload`",
    ]
    command = chroot_lines()[0].split("run `", 1)[1].split("`", 1)[0]
    subprocess.run(shlex.split(command), check=True)
    assert chroot_lines() == []


def test_doctor_reports_dns_not_published_and_up_still_starts(
    make_stack: Callable[..., Stack],
) -> None:
    """With a sending domain whose records are not in DNS (a loopback DNS server stands in
    for the domain's), doctor warns with the records to publish, `txmail up` starts anyway,
    and once they are published doctor says all good."""
    dns_server = LoopbackDns().start()
    try:
        node = make_stack(name="doctordns")
        node.configure("domains", nameservers=[f"127.0.0.1:{dns_server.port}"])
        node.start()  # the DNS warnings never stop a node
        node.add_account("dnsacct", "dns.example")
        node.txmail("domains", "add", "dns.example", "--account", "dnsacct")
        missing = node.txmail("doctor", check=False)
        assert missing.returncode == 1
        lines = missing.stdout.splitlines()
        assert len(lines) == 4, missing.stdout
        assert lines[0].startswith("warning: dns.example: the dkim s=")
        assert "publish " in lines[0] and "txmail domains verify dns.example" in lines[0]
        assert lines[1].startswith(
            "warning: dns.example: the return path record mta.dns.example is not published"
        )
        hostname = config.load(node.config).hostname
        assert lines[2].startswith("warning: dns.example: the spf record mta.dns.example is not")
        assert f'publish {hostname} TXT "v=spf1 a:{hostname} -all"' in lines[2]
        assert lines[3].startswith("warning: dns.example: the mx record mta.dns.example is not")
        record = json.loads(node.txmail("domains", "show", "dns.example", "--json").stdout)
        for key in record["dkim"]:
            dns_server.set_txt(key["dns_name"], key["dns_value"])
        dns_server.set(record["return_path"], "CNAME", hostname + ".")
        dns_server.set_txt(hostname, f"v=spf1 a:{hostname} -all")
        dns_server.set(hostname, "MX", f"10 {hostname}.")
        published = node.txmail("doctor", check=False)
        assert (published.returncode, published.stdout) == (0, "all good\n")
    finally:
        dns_server.stop()
