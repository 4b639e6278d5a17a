"""The shared HMAC keys: created once in Redis, the same for every node, rotated with overlap."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis

from txmail import config, store
from txmail.accounts.domains import DkimKey, Domain, Domains
from txmail.milter import dkim
from txmail.store import secrets
from txmail.tokens.bounce_address import bounce_address, verify_bounce_address
from txmail.tokens.links import LinkSigner, Mark
from txmail.webhooks import signing


def _settings(tmp_path: Path) -> config.Settings:
    return config.Settings(state_dir=str(tmp_path))


@pytest.fixture
def keys(client: redis.Redis) -> store.Keys:
    prefix = f"t{time.monotonic_ns()}:"
    return store.Keys(prefix)


def test_first_node_creates_the_keys_and_the_second_reads_them(
    client: redis.Redis, keys: store.Keys, tmp_path: Path
) -> None:
    node_a = secrets.SharedSecrets(client, keys, _settings(tmp_path / "a"))
    node_b = secrets.SharedSecrets(client, keys, _settings(tmp_path / "b"))
    for name in secrets.NAMES:
        assert node_a.current(name) == node_b.current(name)
        assert len(node_a.current(name)) >= 16
    assert node_a.current("bounce_key_file") != node_a.current("tracking_key_file")


def test_a_node_with_key_files_keeps_them(
    client: redis.Redis, keys: store.Keys, tmp_path: Path
) -> None:
    """A relay that kept its keys in files before: its file seeds Redis, so tokens it handed
    out stay valid; a node joining later caches the same key in its own file."""
    settings = _settings(tmp_path / "a")
    path = settings.path(settings.secrets.bounce_key_file)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    node_a = secrets.SharedSecrets(client, keys, settings)
    assert node_a.current("bounce_key_file") == b"0123456789abcdef0123456789abcdef"
    joined = _settings(tmp_path / "b")
    written = secrets.SharedSecrets(client, keys, joined).write_cache("bounce_key_file")
    assert written is not None
    assert written.read_bytes().strip() == b"0123456789abcdef0123456789abcdef"
    assert written.stat().st_mode & 0o777 == 0o600


def test_rotation_reaches_every_node_and_old_tokens_verify(
    client: redis.Redis, keys: store.Keys, tmp_path: Path
) -> None:
    now = [0.0]
    node_a = secrets.SharedSecrets(client, keys, _settings(tmp_path), clock=lambda: now[0])
    node_b = secrets.SharedSecrets(client, keys, _settings(tmp_path), clock=lambda: now[0])
    old_address = bounce_address(
        "4jXCs06YbRzJJ2Y", "x.example", node_b.current("bounce_key_file"), "b.example"
    )
    links = LinkSigner(lambda: node_b.accepted("tracking_key_file"))
    old_link = links.sign(Mark("click", "acme", "4jXCs06YbRzJJ2Y", "a@x.example", 0, "https://x"))
    node_a.rotate("bounce_key_file")
    node_a.rotate("tracking_key_file")
    assert node_b.current("bounce_key_file") != node_a.current("bounce_key_file")  # cached
    now[0] += secrets.REFRESH_SECONDS + 1
    assert node_b.current("bounce_key_file") == node_a.current("bounce_key_file")
    assert verify_bounce_address(old_address, node_b.accepted("bounce_key_file"))
    assert links.verify(old_link) is not None
    new_link = links.sign(Mark("open", "acme", "4jXCs06YbRzJJ2Y", "a@x.example"))
    assert LinkSigner(node_a.current("tracking_key_file")).verify(new_link) is not None
    # A second rotation retires the first key: its tokens no longer verify.
    node_a.rotate("bounce_key_file")
    assert not verify_bounce_address(old_address, node_a.accepted("bounce_key_file"))


def test_webhook_rotation_signs_with_both_during_the_overlap(
    client: redis.Redis, keys: store.Keys
) -> None:
    webhook_key = b"k" * 32
    derived = signing.account_secret(webhook_key, "acme")
    stored = secrets.read_webhook_secret(client, keys, "acme")
    assert signing.account_secrets(webhook_key, "acme", stored, 0) == (derived,)
    fresh = b"n" * 32
    secrets.store_webhook_secret(client, keys, "acme", fresh, derived, until=100.0)
    stored = secrets.read_webhook_secret(client, keys, "acme")
    during = signing.account_secrets(webhook_key, "acme", stored, 50.0)
    assert during == (fresh, derived)
    headers = signing.headers(during, "msg_1", 50, b"{}")
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (fresh, derived):
        assert signing.verify(secret, headers, b"{}", now=50)
    after = signing.account_secrets(webhook_key, "acme", stored, 150.0)
    assert after == (fresh,)
    headers = signing.headers(after, "msg_2", 150, b"{}")
    assert not signing.verify(derived, headers, b"{}", now=150)


def test_dkim_private_keys_live_in_the_record(
    client: redis.Redis, keys: store.Keys, tmp_path: Path
) -> None:
    """A node that never saw the key files signs: the key comes with the record."""
    settings = _settings(tmp_path)
    made = dkim.create_keys(settings, "shared.example", selector="s1", with_ed25519=True)
    assert all(k.private_key and not k.key_path for k in made)
    assert not (tmp_path / "dkim").exists()
    domains = Domains(client, keys)
    domains.accounts.add("acme", ["shared.example"], "a-long-password-1")
    domains.add(Domain(name="shared.example", account="acme", dkim=made, dkim_active=True))
    record = domains.get("shared.example")
    assert record.dkim == made
    assert "PRIVATE" not in str(record.public()) and "PRIVATE" not in repr(record)
    message = b"From: a@shared.example\r\nTo: b@x.example\r\nSubject: hi\r\n\r\nbody\r\n"
    headers = dkim.Signer(domains).sign("shared.example", message, allowed=["shared.example"])
    assert [h[0] for h in headers] == ["DKIM-Signature", "DKIM-Signature"]
    assert "s=s1;" in headers[0][1].replace(" ", "") or "s=s1" in headers[0][1]


def test_dkim_key_type_round_trip() -> None:
    key = DkimKey("s", "rsa-sha256", "", "pub", private_key="-----BEGIN")
    assert "BEGIN" not in repr(key)


def test_rotating_the_webhook_key_signs_with_both_derived_secrets_for_a_while(
    client: redis.Redis, keys: store.Keys, tmp_path: Path
) -> None:
    shared = secrets.SharedSecrets(client, keys, _settings(tmp_path))
    old_key = shared.current("webhook_key_file")
    assert shared.in_force("webhook_key_file", 100, now=0) == (old_key,)
    ring = shared.rotate("webhook_key_file", now=1000.0)
    assert ring.previous == old_key and ring.rotated_at == 1000.0
    in_force = shared.in_force("webhook_key_file", 100, now=1050)
    assert in_force == (ring.current, old_key)
    stored = secrets.read_webhook_secret(client, keys, "acme")
    both = signing.account_secrets(in_force, "acme", stored, 1050)
    assert both == (
        signing.account_secret(ring.current, "acme"),
        signing.account_secret(old_key, "acme"),
    )
    assert shared.in_force("webhook_key_file", 100, now=1101) == (ring.current,)


def test_import_keys_moves_an_older_records_key_files_into_redis(
    client: redis.Redis, keys: store.Keys, redis_server: object, tmp_path: Path
) -> None:
    """A domain set up before keys were shared names a key file; `domains import-keys` puts
    the key into the record, and the signer then needs no file."""
    from click.testing import CliRunner

    from txmail.cli import main as cli

    path = tmp_path / "s1.rsa.pem"
    public = dkim.generate_rsa_key(path)
    domains = Domains(client, keys)
    domains.accounts.add("old", ["old.example"], "a-long-password-1")
    old_key = DkimKey("s1", "rsa-sha256", str(path), public)
    domains.add(Domain(name="old.example", account="old", dkim=(old_key,), dkim_active=True))
    config_file = tmp_path / "txmail.toml"
    config_file.write_text(
        f'state_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\n'  # type: ignore[attr-defined]
        f'prefix = "{keys.prefix}"\n'
    )
    done = CliRunner().invoke(cli, ["--config", str(config_file), "domains", "import-keys"])
    assert done.exit_code == 0, done.output
    assert "1 key(s) moved" in done.output
    (stored,) = domains.get("old.example").dkim
    assert stored.private_key == path.read_text() and stored.public_key == public
    path.unlink()
    message = b"From: a@old.example\r\nTo: b@x.example\r\nSubject: hi\r\n\r\nbody\r\n"
    assert dkim.Signer(domains).sign("old.example", message, allowed=["old.example"])


def test_redis_away_keeps_the_keys_read_before(tmp_path: Path) -> None:
    """No Redis: the keys read before stay in use (asked again only after `refresh`); with
    none read before, the node's cache file serves."""
    settings = _settings(tmp_path)
    path = settings.path(settings.secrets.tracking_key_file)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"f" * 32 + b"\n")
    down = store.connect(
        config.Settings(redis=config.RedisSettings(url="redis://127.0.0.1:1/0", timeout=0.2))
    )
    now = [0.0]
    shared = secrets.SharedSecrets(down, store.Keys("x:"), settings, clock=lambda: now[0])
    assert shared.current("tracking_key_file") == b"f" * 32
    now[0] += 10
    assert shared.current("tracking_key_file") == b"f" * 32
    with pytest.raises(secrets.StoreUnavailable):
        shared.current("bounce_key_file")  # no cache file, nothing read before
    down.close()


def test_a_second_rotation_waits_until_the_tokens_of_the_first_have_lived() -> None:
    """Rotating drops the previous key: only once the tokens it signed have outlived their
    lifetime may the key be rotated again (`txmail secrets rotate` refuses before that)."""
    never = secrets.KeyRing(current=b"k" * 32)
    assert secrets.safe_to_rotate_at(never, 86400) == 0.0
    rotated = secrets.KeyRing(current=b"k" * 32, previous=b"p" * 32, rotated_at=1000.0)
    assert secrets.safe_to_rotate_at(rotated, 86400) == 1000.0 + 86400


def test_revoking_a_leaked_key_cuts_off_its_tokens_on_every_node(
    client: redis.Redis, keys: store.Keys, tmp_path: Path
) -> None:
    """`secrets rotate KEY --revoke`: a plain rotation after a leak would keep the leaked key
    as `previous`; a revocation drops it, and every node refuses its tokens within
    REFRESH_SECONDS (the time a process caches the keys)."""
    now = [0.0]
    node_a = secrets.SharedSecrets(client, keys, _settings(tmp_path), clock=lambda: now[0])
    node_b = secrets.SharedSecrets(client, keys, _settings(tmp_path), clock=lambda: now[0])
    leaked = node_b.current("bounce_key_file")
    node_a.rotate("bounce_key_file")  # the leaked key is `previous` now: it still verifies
    leaked_address = bounce_address("4jXCs06YbRzJJ2Y", "x.example", leaked, "b.example")
    now[0] += secrets.REFRESH_SECONDS + 1
    assert verify_bounce_address(leaked_address, node_b.accepted("bounce_key_file"))
    links = LinkSigner(lambda: node_b.accepted("tracking_key_file"))
    leaked_link = links.sign(
        Mark("click", "acme", "4jXCs06YbRzJJ2Y", "a@x.example", 0, "https://x")
    )

    ring = node_a.rotate("bounce_key_file", revoke=True)
    tracking = node_a.rotate("tracking_key_file", revoke=True)
    assert ring.accepted == (ring.current,) and tracking.accepted == (tracking.current,)
    assert not verify_bounce_address(leaked_address, node_a.accepted("bounce_key_file"))
    assert LinkSigner(node_a.current("tracking_key_file")).verify(leaked_link) is None
    # node_b still holds the keys it cached, for at most REFRESH_SECONDS.
    assert verify_bounce_address(leaked_address, node_b.accepted("bounce_key_file"))
    now[0] += secrets.REFRESH_SECONDS
    assert node_b.accepted("bounce_key_file") == (ring.current,)
    assert not verify_bounce_address(leaked_address, node_b.accepted("bounce_key_file"))
    assert links.verify(leaked_link) is None
    fresh = bounce_address("4jXCs06YbRzJJ2Y", "x.example", ring.current, "b.example")
    assert verify_bounce_address(fresh, node_b.accepted("bounce_key_file"))


def test_secrets_rotate_revoke_is_not_held_back_by_the_last_rotation(
    client: redis.Redis, keys: store.Keys, redis_server: object, tmp_path: Path
) -> None:
    """A second plain rotation within milter.message_ttl_days is refused; --revoke is what
    a leak needs, so it goes through and says that older tokens are refused."""
    from click.testing import CliRunner

    from txmail.cli import main as cli

    config_file = tmp_path / "txmail.toml"
    config_file.write_text(
        f'state_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\n'  # type: ignore[attr-defined]
        f'prefix = "{keys.prefix}"\n'
    )
    run = [*("--config", str(config_file)), "secrets", "rotate", "tracking"]
    assert CliRunner().invoke(cli, run).exit_code == 0
    refused = CliRunner().invoke(cli, run)
    assert refused.exit_code != 0 and "--revoke" in refused.output
    done = CliRunner().invoke(cli, [*run, "--revoke", "--yes"])
    assert done.exit_code == 0, done.output
    assert "tracking links signed before are now refused" in done.output
    ring = secrets.SharedSecrets(client, keys).ring("tracking_key_file")
    assert not ring.previous
    cached = tmp_path / config.Settings().secrets.tracking_key_file
    assert cached.read_bytes().strip() == ring.current


def _joined(tmp_path: Path, url: str, prefix: str) -> config.Settings:
    return config.Settings(
        state_dir=str(tmp_path), redis=config.RedisSettings(url=url, prefix=prefix, timeout=0.5)
    )


def test_joining_while_redis_is_down_writes_no_key_of_its_own_and_up_fetches_them(
    client: redis.Redis,
    keys: store.Keys,
    redis_server: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`txmail init --redis-url` with Redis away: no random key files (they would sign in
    this node's name whenever Redis is away later); `txmail up` fetches the keys from Redis
    into 0600 cache files before it checks them, and its checks pass."""
    from click.testing import CliRunner

    from txmail.bounce_pipe import server
    from txmail.cli import main as cli
    from txmail.stack import doctor, supervisor

    # pytest's folder is root's alone: what init refuses there is tests/unit/test_reach.py's.
    monkeypatch.setattr(supervisor, "check_reach", lambda *args: None)
    monkeypatch.setattr(server, "check_interpreter_reach", lambda *args: None)
    state = tmp_path / "node"
    done = CliRunner().invoke(
        cli, ["init", "--state-dir", str(state), "--redis-url", "redis://127.0.0.1:1/0"]
    )
    assert done.exit_code == 0, done.output
    assert (
        "no key file was written: this node fetches the installation's keys from Redis when "
        "it starts, so `txmail up` needs Redis the first time" in done.output
    )
    settings = config.load(state / "txmail.toml")
    for name in secrets.NAMES:
        assert not settings.path(getattr(settings.secrets, name)).exists()
    assert settings.path(settings.authpolicy.key_file).exists()  # not shared: Dovecot's
    # Redis still away: `up` stops, with a sentence that says why.
    with pytest.raises(config.ConfigError) as stopped:
        supervisor.cache_shared_keys(settings)
        supervisor.check_files(settings)
    assert "does not answer, so this node has no key; start Redis" in str(stopped.value)

    url = redis_server.url  # type: ignore[attr-defined]
    installation = secrets.SharedSecrets(client, keys)
    back = _joined(state, url, keys.prefix)
    assert all(p.repaired_by_up for p in doctor.check_keys(back))  # in Redis: not an error
    supervisor.cache_shared_keys(back)
    supervisor.check_files(back)
    assert doctor.check_keys(back) == []
    for name in secrets.NAMES:
        path = back.path(getattr(back.secrets, name))
        assert path.read_bytes().strip() == installation.current(name)
        assert path.stat().st_mode & 0o777 == 0o600


def test_a_stale_key_file_is_replaced_with_one_warning_that_never_shows_the_key(
    client: redis.Redis,
    keys: store.Keys,
    redis_server: object,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key file that holds neither key in Redis (made while Redis was away, or revoked)
    would sign in the node's name on the next outage: the first read from Redis replaces it,
    and says so once."""
    installation = secrets.SharedSecrets(client, keys)
    current = installation.current("bounce_key_file")
    settings = _joined(tmp_path, redis_server.url, keys.prefix)  # type: ignore[attr-defined]
    path = settings.path(settings.secrets.bounce_key_file)
    path.parent.mkdir(parents=True)
    stale = b"s" * 64
    path.write_bytes(stale + b"\n")
    now = [0.0]
    node = secrets.SharedSecrets(client, keys, settings, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="txmail.store.secrets"):
        assert node.current("bounce_key_file") == current
        now[0] += secrets.REFRESH_SECONDS + 1
        assert node.current("bounce_key_file") == current
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        f"the bounce key file {path} is stale: it holds neither key in Redis (a key made "
        "while Redis could not be reached, or a revoked one), and will be replaced with the "
        "current key"
    )
    assert stale.decode() not in caplog.text and current.decode() not in caplog.text
    assert path.read_bytes().strip() == current
    assert path.stat().st_mode & 0o777 == 0o600
    # A file that holds the previous key (a rotation elsewhere) is brought up to date quietly.
    caplog.clear()
    installation.rotate("bounce_key_file")
    now[0] += secrets.REFRESH_SECONDS + 1
    with caplog.at_level(logging.WARNING, logger="txmail.store.secrets"):
        fresh = node.current("bounce_key_file")
    assert fresh != current and path.read_bytes().strip() == fresh
    assert not caplog.records
