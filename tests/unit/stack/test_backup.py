"""`txmail backup` / `txmail restore` on real Redis servers (the e2e drill is in
tests/e2e/test_backup.py): types, expiries, stream consumer groups, the prefix only, refusals."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.cluster
from click.testing import CliRunner

from txmail import config as config_mod
from txmail.errors import Conflict, UsageError
from txmail.stack import backup
from txmail_testing.harness import RedisServer


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


def _node(state: Path, url: str, prefix: str) -> tuple[config_mod.Settings, Path]:
    base = config_mod.Settings(state_dir=str(state))
    settings = dataclasses.replace(
        base, redis=dataclasses.replace(base.redis, url=url, prefix=prefix)
    )
    state.mkdir(parents=True, exist_ok=True)
    config_file = state / "txmail.toml"
    config_file.write_text(config_mod.to_toml(settings))
    for name in ("bounce_key_file", "tracking_key_file", "webhook_key_file"):
        path = settings.path(getattr(settings.secrets, name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{name}-0123456789abcdef\n".encode())
        path.chmod(0o600)
    return settings, config_file


def _fill(client: redis.Redis, prefix: str) -> None:
    client.set(f"{prefix}plain", "value")
    client.set(f"{prefix}queue:ABC", "acme", px=3_600_000)
    client.hset(f"{prefix}{{acme}}:account", mapping={"name": "acme", "status": "active"})
    client.zadd(f"{prefix}{{acme}}:suppressions:order", {"bounce:x@example.net": 1.5})
    client.sadd(f"{prefix}accounts", "acme", "beta")
    client.rpush(f"{prefix}{{acme}}:message:Q1:events", "a", "b")
    stream = f"{prefix}{{acme}}:events"
    for n in range(3):
        client.xadd(stream, {"event": f"e{n}"})
    client.xgroup_create(stream, "webhooks", id="0")
    client.xreadgroup("webhooks", "w1", {stream: ">"}, count=1)  # one delivered, not acked
    client.set("other-installation:plain", "not ours")
    client.set(prefix.replace(":", "x:") + "glob*", "not ours either")


def test_backup_then_restore_into_a_fresh_redis_and_state_dir(
    redis_server: RedisServer, fresh_redis: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    prefix = f"bk-{uuid.uuid4().hex[:6]}:"
    settings, config_file = _node(tmp_path / "old", redis_server.url, prefix)
    _fill(client, prefix)
    target = tmp_path / "out/node.txbk"
    written = backup.backup(settings, config_file, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert (written.keys, written.files) == (7, 4)
    assert [p.name for p in target.parent.iterdir()] == ["node.txbk"]  # no temporary left
    with gzip.open(target) as fh:
        header = json.loads(fh.readline())
    assert header["format"] == "txmail-backup" and header["version"] == 1
    assert header["prefix"] == prefix and header["schema"] == 1
    with pytest.raises(Conflict, match="exists already"):
        backup.backup(settings, config_file, target)

    restored = backup.restore(target, state_dir=tmp_path / "new", redis_url=fresh_redis.url)
    new = config_mod.load(restored.config_file)
    assert new.state_dir == str((tmp_path / "new").resolve())
    assert new.redis.url == fresh_redis.url and new.redis.prefix == prefix
    key_file = new.path(new.secrets.bounce_key_file)
    assert key_file.read_bytes() == b"bounce_key_file-0123456789abcdef\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    other = fresh_redis.client()
    try:
        assert sorted(other.keys("*")) == sorted(k for k in client.keys(f"{prefix}*"))
        assert other.get(f"{prefix}plain") == "value"
        assert 0 < other.pttl(f"{prefix}queue:ABC") <= 3_600_000
        assert other.pttl(f"{prefix}plain") == -1
        assert other.hgetall(f"{prefix}{{acme}}:account") == {"name": "acme", "status": "active"}
        assert other.smembers(f"{prefix}accounts") == {"acme", "beta"}
        assert other.lrange(f"{prefix}{{acme}}:message:Q1:events", 0, -1) == ["a", "b"]
        stream = f"{prefix}{{acme}}:events"
        [group] = other.xinfo_groups(stream)
        assert (group["name"], group["pending"]) == ("webhooks", 1)
        rest = other.xreadgroup("webhooks", "w2", {stream: ">"})
        assert [f["event"] for _, f in rest[0][1]] == ["e1", "e2"]  # the undelivered ones
        # Restoring again is refused: the data and the files are there.
        with pytest.raises(Conflict, match="exist already"):
            backup.restore(target, state_dir=tmp_path / "new", redis_url=fresh_redis.url)
        (tmp_path / "new/txmail.toml").unlink()
        with pytest.raises(Conflict, match=f"holds keys under '{prefix}'"):
            backup.restore(target, state_dir=tmp_path / "new", redis_url=fresh_redis.url)
        # --force: the prefix becomes the backup and nothing else.
        other.set(f"{prefix}added-later", "x")
        backup.restore(target, state_dir=tmp_path / "new", redis_url=fresh_redis.url, force=True)
        assert other.get(f"{prefix}added-later") is None
        assert other.get(f"{prefix}plain") == "value"
    finally:
        other.close()


def test_a_damaged_or_foreign_file_is_refused_before_anything_is_written(
    redis_server: RedisServer, fresh_redis: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    prefix = f"bk-{uuid.uuid4().hex[:6]}:"
    settings, config_file = _node(tmp_path / "old", redis_server.url, prefix)
    _fill(client, prefix)
    target = tmp_path / "node.txbk"
    backup.backup(settings, config_file, target)
    lines = gzip.open(target).read().splitlines(keepends=True)

    def variant(name: str, body: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(gzip.compress(body))
        return path

    cut = variant("cut.txbk", b"".join(lines[:-2]))
    header = json.loads(lines[0])
    future = variant(
        "future.txbk", json.dumps({**header, "version": 2}).encode() + b"\n" + b"".join(lines[1:])
    )
    newer = variant(
        "newer.txbk", json.dumps({**header, "schema": 9}).encode() + b"\n" + b"".join(lines[1:])
    )
    plain = tmp_path / "plain.txt"
    plain.write_text("hello\n")
    truncated = tmp_path / "truncated.txbk"
    truncated.write_bytes(target.read_bytes()[:-40])
    for path, match in [
        (cut, "cut short"),
        (future, "of format 2, and this txmail"),
        (newer, "schema 9, newer than this txmail knows"),
        (plain, "cannot be read as a txmail backup"),
        (truncated, "damaged or cut short"),
    ]:
        with pytest.raises(UsageError, match=match):
            backup.restore(path, state_dir=tmp_path / f"new-{path.stem}", redis_url=fresh_redis.url)
        assert not (tmp_path / f"new-{path.stem}").exists()
    assert fresh_redis.client().dbsize() == 0


def test_restore_cli_asks_before_force_and_the_backup_cli_writes_0600(
    redis_server: RedisServer, fresh_redis: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    from txmail.cli import main

    prefix = f"bk-{uuid.uuid4().hex[:6]}:"
    _, config_file = _node(tmp_path / "old", redis_server.url, prefix)
    _fill(client, prefix)
    target = tmp_path / "node.txbk"
    old_umask = os.umask(0o022)
    try:
        made = CliRunner().invoke(main, ["--config", str(config_file), "backup", str(target)])
    finally:
        os.umask(old_umask)
    assert made.exit_code == 0, made.output
    assert "7 keys, 4 files" in made.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    args = ["restore", str(target), "--state-dir", str(tmp_path / "new")]
    args += ["--redis-url", fresh_redis.url]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "restored 7 keys and 4 files" in done.output
    assert f"txmail --config {tmp_path / 'new/txmail.toml'} up" in done.output
    refused = CliRunner().invoke(main, [*args, "--force"])
    assert refused.exit_code == 2 and "add --yes" in refused.output
    assert CliRunner().invoke(main, [*args, "--force", "--yes"]).exit_code == 0


def test_a_redis_cluster_is_backed_up_from_every_master_and_restored(tmp_path: Path) -> None:
    from txmail_testing.harness import RedisCluster

    cluster = RedisCluster().start()
    try:
        prefix = f"bk-{uuid.uuid4().hex[:6]}:"
        settings, config_file = _node(tmp_path / "old", cluster.url, prefix)
        settings = dataclasses.replace(
            settings, redis=dataclasses.replace(settings.redis, cluster=True)
        )
        config_file.write_text(config_mod.to_toml(settings))
        client = redis.cluster.RedisCluster.from_url(cluster.url, decode_responses=True)
        try:
            names = [f"{prefix}{{a{n}}}:account" for n in range(30)]  # spread over the slots
            for name in names:
                client.hset(name, "n", name)
            client.set(f"{prefix}queue:Q", "a1", px=60_000)
            assert len({client.keyslot(name) for name in names}) > 1
            target = tmp_path / "cluster.txbk"
            written = backup.backup(settings, config_file, target)
            assert written.keys == 31
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
            restored = backup.restore(target, state_dir=tmp_path / "new")
            assert restored.keys == 31
            assert sorted(client.scan_iter(match=f"{prefix}*")) == sorted(
                [*names, f"{prefix}queue:Q"]
            )
            assert client.hget(names[7], "n") == names[7]
            assert 0 < client.pttl(f"{prefix}queue:Q") <= 60_000
        finally:
            client.close()
    finally:
        cluster.close()
