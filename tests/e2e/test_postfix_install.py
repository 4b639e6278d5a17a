"""`txmail postfix install` into a stock Debian Postfix configuration, then mail through it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from txmail.stack.render import QUEUE_FILE_ROOM
from txmail_testing.harness import (
    Sink,
    Stack,
    free_listening_port,
    simple_message,
    state_dir,
    wait_for,
)

pytestmark = pytest.mark.e2e

OPERATOR_BANNER = "$myhostname ESMTP operated by the operator"


@pytest.fixture
def operator_postfix(sink: Sink) -> Iterator[tuple[Path, int]]:
    """A stock Debian main.cf/master.cf, moved onto loopback in its own folders, with a few
    settings of the operator's own that the install must keep."""
    root = state_dir("operator")
    etc = root / "etc"
    etc.mkdir()
    shutil.copy("/usr/share/postfix/main.cf.debian", etc / "main.cf")
    shutil.copy("/usr/share/postfix/master.cf.dist", etc / "master.cf")
    (etc / "op_transport").write_text(f"op.example smtp:[127.0.0.1]:{sink.port}\n")
    port = free_listening_port()
    settings = {
        "queue_directory": root / "spool",
        "data_directory": root / "data",
        "maillog_file": root / "maillog",
        "maillog_file_prefixes": root,
        "syslog_name": "operator",
        "myhostname": "mx.operator.test",
        "mydestination": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "alias_maps": "",
        "alias_database": "",
        "relayhost": f"[127.0.0.1]:{sink.port}",
        "smtpd_banner": OPERATOR_BANNER,
        "transport_maps": f"texthash:{etc}/op_transport",
        "message_size_limit": "20480000",
    }
    (root / "spool").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", "postfix", "postfix")
    subprocess.run(
        ["postconf", "-c", str(etc), "-e", *(f"{k} = {v}" for k, v in settings.items())], check=True
    )
    # The test runs without the chroot jail Debian's master.cf asks for (it would need copies
    # of /etc inside the queue folder), and moves port 25 onto a free loopback port.
    subprocess.run(["postconf", "-c", str(etc), "-F", "*/*/chroot = n"], check=True)
    subprocess.run(
        [
            "postconf",
            "-c",
            str(etc),
            "-M",
            "-e",
            f"127.0.0.1:{port}/inet=127.0.0.1:{port} inet n - n - - smtpd",
        ],
        check=True,
    )
    subprocess.run(["postconf", "-c", str(etc), "-M", "-X", "smtp/inet"], check=True)
    yield etc, port
    subprocess.run(["postfix", "-c", str(etc), "stop"], capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


def postconf_h(etc: Path, name: str) -> str:
    return subprocess.run(
        ["postconf", "-c", str(etc), "-h", name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_install_into_existing_postfix_and_send(
    operator_postfix: tuple[Path, int], make_stack: Callable[..., Stack], sink: Sink
) -> None:
    etc, operator_port = operator_postfix
    original_main = (etc / "main.cf").read_text()
    node = make_stack(name="installed")
    dry = node.txmail(
        "postfix", "install", "--postfix-config-dir", str(etc), "--dry-run", "--no-systemd"
    )
    assert "postconf -c" in dry.stdout and "-M -e" in dry.stdout
    assert f"[maillog]: source = 'file', path = '{etc.parent / 'maillog'}'" in dry.stdout
    assert (etc / "main.cf").read_text() == original_main  # a dry run changes nothing

    units = node.state / "systemd"
    result = node.txmail(
        "postfix", "install", "--postfix-config-dir", str(etc), "--systemd-dir", str(units)
    )
    assert "installed into" in result.stdout
    # The follower reads the operator's maillog_file, detected and written to txmail.toml.
    from txmail import config

    maillog = config.load(node.config).maillog
    assert (maillog.source, maillog.path) == ("file", str(etc.parent / "maillog"))
    unit = (units / "txmail.service").read_text()
    assert "up --external-postfix" in unit and str(node.config) in unit
    [backup] = list(etc.glob("txmail-backup-*"))
    assert (backup / "main.cf").read_text() == original_main

    # The operator's own settings are all still there.
    assert postconf_h(etc, "smtpd_banner") == OPERATOR_BANNER
    assert postconf_h(etc, "transport_maps").startswith(f"texthash:{etc}/op_transport")
    assert "socketmap:" in postconf_h(etc, "transport_maps")
    # raised, never lowered: txmail's 50 MB plus the room of Postfix's queue file
    assert postconf_h(etc, "message_size_limit") == str(52428800 + QUEUE_FILE_ROOM)
    # the operator's port 25 takes txmail's bounces now: no VRFY, no ETRN there either
    assert postconf_h(etc, "disable_vrfy_command") == "yes"
    assert postconf_h(etc, "smtpd_etrn_restrictions").startswith("check_etrn_access")
    assert postconf_h(etc, "enable_long_queue_ids") == "yes"
    master = subprocess.run(
        ["postconf", "-c", str(etc), "-M"], capture_output=True, text=True, check=True
    ).stdout
    assert f"127.0.0.1:{operator_port} inet" in master
    assert f"127.0.0.1:{node.submission} inet" in master
    assert "bouncepipe unix" in master
    # The operator's port keeps the operator's restrictions: no txmail milter on it.
    assert "smtpd_milters" not in postconf_h(etc, "smtpd_milters")

    # Installing again changes nothing in main.cf and adds no duplicates.
    again = node.txmail(
        "postfix", "install", "--postfix-config-dir", str(etc), "--dry-run", "--no-systemd"
    )
    assert " -e '" not in again.stdout.split("-M -e")[0].replace("postconf -c", "")

    node.start(args=("--external-postfix",))
    subprocess.run(["postfix", "-c", str(etc), "start"], check=True, capture_output=True)
    login = ("ops", node.add_account("ops", "ops.example"))
    recipient = "through-operator@example.net"
    queue_id = node.send(
        login, "app@ops.example", [recipient], simple_message("app@ops.example", recipient)
    )
    wait_for(lambda: sink.find(recipient), 30, what="delivery through the operator's Postfix")
    assert node.redis().hgetall(f"txmail:{{ops}}:message:{queue_id}")["account"] == "ops"
    # The delivery event comes from the operator's log, where the follower was pointed.
    wait_for(
        lambda: "delivery" in node.txmail("messages", "show", queue_id).stdout,
        30,
        what="the delivery event from the operator's maillog",
    )
