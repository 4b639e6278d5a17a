"""The backup and restore drill on real nodes: a node with accounts, logins, a DKIM-signing
domain, suppressions, a webhook URL and secret, and events its endpoint (down) has not taken
yet is backed up, destroyed (stopped, its Redis data flushed, its state directory deleted)
and restored into a fresh state directory and a fresh Redis. Everything is back: the same
accounts, logins, suppressions and keys (a bounce address handed out before still verifies,
DKIM signs with the same key), and the undelivered events are posted once the endpoint is up.
Run with the node's private Redis and with a configured one. And `txmail up` refuses data of
a newer schema."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest

from txmail_testing.harness import (
    TXMAIL,
    RedisServer,
    Sink,
    Stack,
    simple_message,
    state_dir,
    wait_for,
)
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

ACCOUNT = "keeper"
DOMAIN = "keeper.example"
LOGIN = "orders@keeper.example"
LOGIN_PASSWORD = "a login password that is long enough"


def _json(node: Stack, *args: str) -> Any:
    return json.loads(node.txmail(*args, "--json").stdout)


def _snapshot(node: Stack) -> dict[str, Any]:
    """What must come back, as the CLI shows it (and the shared keys as Redis holds them)."""
    account = _json(node, "accounts", "show", ACCOUNT)
    client = node.redis()
    try:
        secrets = {
            name: client.hgetall(f"txmail:secret:{name}")
            for name in ("bounce", "tracking", "webhook")
        }
    finally:
        client.close()
    return {
        "accounts": _json(node, "accounts", "list"),
        "domains": account["domains"],
        "logins": _json(node, "accounts", "login", "list", ACCOUNT),
        "suppressions": _json(node, "suppressions", "list", "--account", ACCOUNT),
        "dkim": _json(node, "domains", "show", DOMAIN)["dkim"],
        "webhook_secret": node.txmail("webhooks", "secret", ACCOUNT).stdout,
        "secrets": secrets,
    }


def _dkim_verifies(data: bytes, records: dict[str, str]) -> bool:
    """dkimpy's verdict on every signature, the keys looked up in `records` (what DNS had
    before the backup)."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value else None

    checker = dkim.DKIM(data)
    count = data.count(b"DKIM-Signature:")
    return count > 0 and all(checker.verify(idx=i, dnsfunc=lookup) for i in range(count))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver()  # not started: the endpoint is down until the test starts it
    yield made
    made.stop()


@pytest.mark.parametrize("redis_kind", ["private", "configured"])
def test_backup_destroy_restore_drill(
    sink: Sink, receiver: WebhookReceiver, tmp_path: Path, redis_kind: str
) -> None:
    old_redis = new_redis = None
    if redis_kind == "configured":
        old_redis, new_redis = RedisServer().start(), RedisServer().start()
    node = Stack(
        relay_port=sink.port, redis_url=old_redis.url if old_redis else "", name="backup-old"
    )
    restored: Stack | None = None
    try:
        node.configure("webhooks", retry_base=0.5, retry_max_delay=2.0)
        node.start()
        password = node.add_account(ACCOUNT, DOMAIN)
        node.txmail(
            "accounts",
            "login",
            "add",
            ACCOUNT,
            LOGIN,
            "--password-stdin",
            input=LOGIN_PASSWORD + "\n",
        )
        node.txmail("domains", "add", DOMAIN, "--account", ACCOUNT, "--force-sign")
        records = {
            r["name"].rstrip("."): r["value"]
            for r in _json(node, "domains", "dns", DOMAIN)
            if r["type"] == "TXT"
        }
        node.txmail(
            "suppressions",
            "add",
            "--account",
            ACCOUNT,
            "--list",
            "unsubscribe",
            "left@dest.example",
        )
        node.txmail("webhooks", "url", ACCOUNT, receiver.url)
        # A message whose delivery event cannot be posted: the endpoint is down.
        rcpt = f"ok-{redis_kind}@dest.example"
        sender = f"app@{DOMAIN}"
        queue_id = node.send((ACCOUNT, password), sender, [rcpt], simple_message(sender, rcpt))
        wait_for(lambda: sink.find(rcpt), 30, what="the delivery to the sink")
        original = sink.find(rcpt)[-1]
        assert _dkim_verifies(bytes(original.data), records)

        def failing() -> bool:
            [row] = _json(node, "webhooks", "status", "--account", ACCOUNT)
            return row["waiting"] >= 1 and row["attempts"] >= 1

        wait_for(failing, 30, what="a failed post of the delivery event")
        before = _snapshot(node)
        assert before["logins"][0]["login"] == LOGIN and before["suppressions"]

        # The drill: back up, destroy, restore.
        backup_file = tmp_path / "node.txbk"
        made = node.txmail("backup", str(backup_file))
        assert "keys" in made.stdout and (backup_file.stat().st_mode & 0o777) == 0o600
        assert node.stop() == 0
        if old_redis is not None:
            flushed = old_redis.client()
            for key in flushed.scan_iter(match="txmail:*"):
                flushed.delete(key)
            assert flushed.dbsize() == 0
            flushed.close()
        node.close()  # deletes its state directory (and with it the private Redis's data)
        assert not node.state.exists()

        fresh = state_dir("backup-new")
        command = [*TXMAIL, "restore", str(backup_file), "--state-dir", str(fresh)]
        if new_redis is not None:
            command += ["--redis-url", new_redis.url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"txmail --config {fresh / 'txmail.toml'} up" in done.stdout
        again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 1 and "exist already" in again.stderr  # nothing overwritten

        restored = Stack.restored(fresh / "txmail.toml", new_redis.url if new_redis else "")
        restored.start()
        restored.wait_passwd(ACCOUNT)
        restored.wait_passwd(LOGIN)
        assert _snapshot(restored) == before

        # The undelivered event is posted once the endpoint is up, with the same secret.
        receiver.start()
        event = receiver.wait_event(
            lambda e: e["message_id"] == queue_id and e["kind"] == "delivery", timeout=60
        )
        assert event["recipient"] == rcpt
        # A bounce address handed out before the backup still verifies on the restored node.
        Sink.deliver(restored.smtp, "", original.sender, Sink.dsn(original, rcpt))
        receiver.wait_event(
            lambda e: e["message_id"] == queue_id and e["kind"] == "bounce", timeout=60
        )
        # The login's password came back, and DKIM signs with the same key.
        second = f"ok2-{redis_kind}@dest.example"
        restored.send((LOGIN, LOGIN_PASSWORD), sender, [second], simple_message(sender, second))
        wait_for(lambda: sink.find(second), 30, what="a delivery from the restored node")
        assert _dkim_verifies(bytes(sink.find(second)[-1].data), records)
    finally:
        node.close()
        if restored is not None:
            restored.close()
        for server in (old_redis, new_redis):
            if server is not None:
                server.close()


def test_up_refuses_data_of_a_newer_schema(sink: Sink) -> None:
    server = RedisServer().start()
    node = Stack(relay_port=sink.port, redis_url=server.url, name="schema-newer")
    try:
        client = server.client()
        client.set("txmail:schema", "2")
        client.close()
        run = subprocess.run(
            [*TXMAIL, "--config", str(node.config), "up"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 2, run.stdout + run.stderr
        assert "has schema 2, newer than this txmail knows (schema 1)" in run.stderr
        assert "txmail ready" not in run.stdout
        migrate = node.txmail("migrate", check=False)
        assert migrate.returncode == 2 and "newer than this txmail knows" in migrate.stderr
    finally:
        node.close()
        server.close()
