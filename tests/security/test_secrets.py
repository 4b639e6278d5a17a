"""Attack: reading secrets out of logs and files.

Logs are read by more people than keys are (operators, log shippers, support tickets), and a
file another local user can read is a secret shared with them. After a full run on a dedicated
node that uses every secret txmail holds (SASL logins with PLAIN and LOGIN, a mistyped
password, an API key, webhook posts signed with the account's secret, DKIM signing, tracked
links, signed bounce addresses and a bounce coming back, a Redis that needs a password), no
secret may appear in any log under the state directory nor in the supervisor's output; and the
files that hold secrets are readable by their owner only, or by exactly the one daemon group
that must read them.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import json
import pwd
import re
import smtplib
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.test_events import Account
from tests.e2e.test_tracker import delivered_html, html_message, target  # noqa: F401
from txmail import config, store
from txmail_testing.harness import RedisServer, Sink, Stack, simple_message, wait_for
from txmail_testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[RedisServer]:
    server = RedisServer(password=f"redis-pw-{uuid.uuid4().hex}").start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def node(sink: Sink, redis_with_password: RedisServer) -> Iterator[Stack]:
    made = Stack(relay_port=sink.port, name="secrets", redis_url=redis_with_password.url)
    try:
        yield made.start()
    finally:
        made.close()


def pem_body_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]


@pytest.fixture(scope="module")
def full_run(
    node: Stack,
    sink: Sink,
    target: str,  # noqa: F811
    redis_with_password: RedisServer,
) -> list[str]:
    """Use every secret once, stop the node (its output complete), and return the secrets."""
    receiver = WebhookReceiver().start()
    try:
        account = Account(node, receiver)
        node.txmail(
            "accounts", "set", account.name, "track_clicks=true", "track_opens=true", "warmup=false"
        )
        node.txmail(
            "domains",
            "add",
            account.domain,
            "--account",
            account.name,
            "--force-sign",
            "--no-return-path",
        )
        login = (account.name, account.password)
        webhook_secret = node.txmail("webhooks", "secret", account.name).stdout.strip()
        api_key = node.txmail("accounts", "apikey", account.name).stdout.strip().splitlines()[-1]

        # logins: PLAIN on 587 (smtplib's choice), PLAIN on 465, LOGIN on 587
        tracked = f"tracked-{account.name}@dest.example"
        node.send(login, account.sender, [tracked], html_message(account.sender, tracked, target))
        bounced = f"reject-{account.name}@dest.example"
        node.send(
            login,
            account.sender,
            [bounced],
            simple_message(account.sender, bounced),
            port="submissions",
        )
        with contextlib.closing(node.client("submission")) as smtp:
            smtp.user, smtp.password = login
            assert smtp.auth("LOGIN", smtp.auth_login)[0] == 235
        # tracked links: a click and an open through the tracker
        html = delivered_html(sink, tracked)
        tracker = f"http://127.0.0.1:{8080 + node.offset}"
        for path in re.findall(r"/[co]/[A-Za-z0-9_.-]+", html):
            requests.get(tracker + path, allow_redirects=False, timeout=10)
        account.wait("click", tracked)
        # the HTTP API with its key; a late DSN to a signed bounce address on port 25
        via_api = f"api-{account.name}@dest.example"
        answer = requests.post(
            f"{tracker}/v1/send",
            timeout=60,
            json={
                "envelope": account.sender,
                "recipients": [via_api],
                "mime": simple_message(account.sender, via_api).decode(),
            },
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert answer.status_code == 200, answer.text
        original = wait_for(lambda: sink.find(via_api), 30, what="the API's delivery")[-1]
        Sink.deliver(node.smtp, "", original.sender, Sink.dsn(original, via_api))
        account.wait("bounce", via_api)
        account.wait("bounce", bounced)
        node.txmail("webhooks", "test", account.name)
        # and a mistyped password, last (Dovecot slows down the logins after a failure)
        mistyped = account.password + "-typo"
        with contextlib.closing(node.client("submission")) as smtp:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login(account.name, mistyped)
    finally:
        receiver.stop()
    assert node.stop() == 0
    settings = config.load(node.config)
    plain = base64.b64encode(f"\0{account.name}\0{account.password}".encode()).decode()
    secrets = [
        account.password,
        mistyped,
        plain,
        base64.b64encode(account.password.encode()).decode(),
        api_key,
        webhook_secret,
        webhook_secret.removeprefix("whsec_"),
        redis_with_password.password,
    ]
    for name in ("bounce_key_file", "webhook_key_file", "tracking_key_file"):
        secrets.append(settings.read_secret(name).decode())
    for key in sorted((node.state / "dkim").rglob("*.pem")) + [node.state / "tls/key.pem"]:
        secrets.extend(pem_body_lines(key))
    # the DKIM keys, which live in the domain's record in Redis
    client = node.redis()
    try:
        stored = json.loads(client.hget(f"txmail:domain:{account.domain}", "dkim") or "[]")
    finally:
        client.close()
    assert stored and all(k["private_key"] for k in stored)
    for k in stored:
        secrets.extend(
            line for line in k["private_key"].splitlines() if line and not line.startswith("-----")
        )
    return secrets


def logs(node: Stack) -> list[Path]:
    """Every log of the node: the log folder (maillog, component logs) and any *.log or *.out
    under the state directory, the supervisor's captured output (up.out) among them."""
    found = {p for p in (node.state / "log").rglob("*") if p.is_file()}
    found |= {p for pattern in ("*.log", "*.out") for p in node.state.rglob(pattern)}
    return sorted(found)


def test_no_secret_in_any_log(node: Stack, full_run: list[str]) -> None:
    files = logs(node)
    names = {p.name for p in files}
    assert {"up.out", "postfix.log"} <= names, names
    # The components' lines are in up.out, led by their names (log.destination = "stderr").
    shown = {line.split(": ", 1)[0] for line in node.output().splitlines()}
    assert {"dovecot", "milter", "tracker", "webhooks", "bounce-pipe"} <= shown, shown
    assert all(len(secret) >= 16 for secret in full_run)  # long enough not to match by chance
    for path in files:
        text = path.read_text(errors="replace")
        for secret in full_run:
            assert secret not in text, f"{path} shows a secret ({secret[:4]}...)"


def mode_of(path: Path) -> tuple[int, str, str]:
    info = path.stat()
    return (
        stat.S_IMODE(info.st_mode),
        pwd.getpwuid(info.st_uid).pw_name,
        grp.getgrgid(info.st_gid).gr_name,
    )


def test_secret_files_are_private(node: Stack, full_run: list[str]) -> None:
    settings = config.load(node.config)
    user = settings.user
    # The HMAC keys: read by root's daemons only (the bounce recorder among them); the txmail
    # user, which runs Postfix's bounce pipe and the parsers of returned mail, cannot.
    for name in ("bounce_key_file", "webhook_key_file", "tracking_key_file"):
        path = settings.path(getattr(settings.secrets, name))
        assert mode_of(path) == (0o600, "root", "root"), path
        assert user != "root"
    # Postfix's smtpd reads the TLS key as root before it drops privileges.
    assert mode_of(settings.path(settings.tls.key_file))[:2] == (0o600, "root")
    # DKIM keys: kept in the domain's record in Redis (every node signs with them), so no
    # file holds one; Redis itself is guarded by its password (README, "Several nodes").
    assert not (node.state / "dkim").exists()
    for key in sorted((node.state / "dkim").rglob("*.pem")):  # none: kept for older records
        assert mode_of(key)[:2] == (0o600, "root"), key
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700, key.parent
    # The passwd-file: Dovecot's auth process runs as a dovecot user and must read it, so
    # 0640 root:dovecot; it holds bcrypt hashes only, never a password.
    passwd = settings.path(settings.dovecot.passwd_file)
    assert mode_of(passwd) == (0o640, "root", "dovecot")
    assert not any(secret in passwd.read_text() for secret in full_run)


def test_a_config_holding_the_redis_password_is_not_world_readable(node: Stack) -> None:
    """redis.url holds a password here. The bounce pipe (as the txmail user) reads the
    configuration, so it is 0640 with the txmail user's group, not readable by others (the
    parser workers too run with group nogroup: tests/security/test_privileges.py)."""
    settings = config.load(node.config)
    assert "redis-pw-" in node.config.read_text()
    assert mode_of(node.config)[0] & 0o007 == 0
    assert mode_of(node.config)[0] == 0o640
    assert mode_of(node.config)[2] == grp.getgrgid(pwd.getpwnam(settings.user).pw_gid).gr_name


def test_the_secrets_are_not_in_the_configuration(node: Stack, full_run: list[str]) -> None:
    text = node.config.read_text()
    assert not [s for s in full_run if s in text and not s.startswith("redis-pw-")]


@pytest.mark.parametrize(
    "url,shown",
    [
        ("redis://:s3cret@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
        ("rediss://default:s3cret@redis.example:6380", "rediss://default:***@redis.example:6380"),
        ("redis://10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
        (
            "unix:///var/lib/txmail/run/redis/redis.sock",
            "unix:///var/lib/txmail/run/redis/redis.sock",
        ),
        (
            "redis://10.0.0.5:6379/0?password=s3cret&db=1",
            "redis://10.0.0.5:6379/0?password=***&db=1",
        ),
        ("unix:///run/redis.sock?db=2&Password=s3cret", "unix:///run/redis.sock?db=2&Password=***"),
        ("redis://:a@10.0.0.5?password=b", "redis://:***@10.0.0.5?password=***"),
    ],
)
def test_a_redis_url_is_printed_without_its_password(url: str, shown: str) -> None:
    assert store.shown_url(url) == shown
    assert store.holds_password(url) == (shown != url)
