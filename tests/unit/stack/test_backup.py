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


# -- review fixes: nothing outside the state directory or the prefix, bad input refused


def _lines(target: Path) -> list[dict[str, object]]:
    with gzip.open(target) as fh:
        return [json.loads(line) for line in fh]


def _rewrite(path: Path, records: list[dict[str, object]]) -> Path:
    """A backup of these records, with its end line's counts made to fit."""
    body = [r for r in records if "end" not in r]
    end = {
        "end": True,
        "files": sum(1 for r in body if "file" in r or "external" in r),
        "keys": sum(1 for r in body if "key" in r),
    }
    path.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in [*body, end])))
    return path


@pytest.fixture
def made(redis_server: RedisServer, client: redis.Redis, tmp_path: Path) -> tuple[str, Path]:
    prefix = f"bk-{uuid.uuid4().hex[:6]}:"
    settings, config_file = _node(tmp_path / "old", redis_server.url, prefix)
    _fill(client, prefix)
    target = tmp_path / "node.txbk"
    backup.backup(settings, config_file, target)
    return prefix, target


def test_restore_writes_no_file_outside_the_state_directory(
    made: tuple[str, Path], fresh_redis: RedisServer, tmp_path: Path
) -> None:
    _, target = made
    records = _lines(target)
    header, rest = records[0], records[1:]
    key_file = next(r for r in rest if "file" in r and not r["config"])
    outside = tmp_path / "outside.txt"
    crafted = {
        "absolute": [header, *rest, {**key_file, "file": str(outside), "mode": 0o777}],
        "dotdot": [header, *rest, {**key_file, "file": "../outside.txt"}],
        "dot": [header, *rest, {**key_file, "file": "./tls/x.pem"}],
        "nul": [header, *rest, {**key_file, "file": "tls/x\0.pem"}],
        "config_name": [{**header, "config_name": "../escaped-config.toml"}, *rest],
    }
    for name, lines in crafted.items():
        path = _rewrite(tmp_path / f"{name}.txbk", lines)
        with pytest.raises(UsageError):
            backup.restore(path, state_dir=tmp_path / f"new-{name}", redis_url=fresh_redis.url)
        assert not (tmp_path / f"new-{name}").exists(), name
    assert not outside.exists() and not (tmp_path / "escaped-config.toml").exists()
    assert fresh_redis.client().dbsize() == 0
    # A symlink in the state directory that leads out of it is refused too.
    state = tmp_path / "linked"
    (tmp_path / "elsewhere").mkdir()
    state.mkdir()
    (state / "secrets").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="leads out of the state directory"):
        backup.restore(target, state_dir=state, redis_url=fresh_redis.url)
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert fresh_redis.client().dbsize() == 0


def test_restored_file_modes_are_0600_or_0644(
    made: tuple[str, Path], fresh_redis: RedisServer, tmp_path: Path
) -> None:
    _, target = made
    records = _lines(target)
    for record in records:
        if "file" in record:
            record["mode"] = 0o4777 if record["config"] else 0o640
    path = _rewrite(tmp_path / "modes.txbk", records)
    restored = backup.restore(path, state_dir=tmp_path / "new", redis_url=fresh_redis.url)
    assert stat.S_IMODE(restored.config_file.stat().st_mode) == 0o644
    modes = {
        stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "new").rglob("*") if p.is_file()
    } - {stat.S_IMODE(restored.config_file.stat().st_mode)}
    assert modes == {0o600}


def test_files_outside_the_state_directory_come_back_only_when_asked_onto_the_same_node(
    redis_server: RedisServer, fresh_redis: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    prefix = f"bk-{uuid.uuid4().hex[:6]}:"
    settings, config_file = _node(tmp_path / "old", redis_server.url, prefix)
    cert = tmp_path / "etc/tls/cert.pem"
    cert.parent.mkdir(parents=True)
    cert.write_text("CERT\n")
    settings = dataclasses.replace(
        settings, tls=dataclasses.replace(settings.tls, cert_file=str(cert))
    )
    config_file.write_text(config_mod.to_toml(settings))
    client.set(f"{prefix}plain", "value")
    target = tmp_path / "node.txbk"
    backup.backup(settings, config_file, target)
    [external] = [r for r in _lines(target) if "external" in r]
    assert external["external"] == str(cert.resolve())
    cert.unlink()
    # Onto another state directory: left out, named.
    restored = backup.restore(target, state_dir=tmp_path / "new", redis_url=fresh_redis.url)
    assert restored.left_out == [str(cert.resolve())] and not cert.exists()
    with pytest.raises(UsageError, match="outside its state directory"):
        backup.restore(
            target,
            state_dir=tmp_path / "other",
            redis_url=fresh_redis.url,
            force=True,
            external_files=True,
        )
    assert not cert.exists()
    # Onto the same one, with the flag: written (0644 as it was readable).
    for path in (tmp_path / "old").rglob("*"):
        if path.is_file():
            path.unlink()
    client.delete(f"{prefix}plain")
    done = backup.restore(target, external_files=True)
    assert done.left_out == [] and cert.read_text() == "CERT\n"
    assert stat.S_IMODE(cert.stat().st_mode) in (0o600, 0o644)
    assert client.get(f"{prefix}plain") == "value"


def test_a_key_outside_the_prefix_is_refused_before_anything_is_written(
    made: tuple[str, Path], fresh_redis: RedisServer, tmp_path: Path
) -> None:
    import base64

    prefix, target = made
    records = _lines(target)
    key = next(r for r in records if "key" in r)
    other = fresh_redis.client()
    other.set("other-installation:plain", "theirs")
    other.set(prefix.rstrip(":") + "-staging:plain", "theirs too")
    for name, victim in [
        ("other", "other-installation:plain"),
        ("near", prefix[:-1] + "-staging:plain"),
    ]:
        path = _rewrite(
            tmp_path / f"{name}.txbk",
            [*records, {**key, "key": base64.b64encode(victim.encode()).decode()}],
        )
        with pytest.raises(UsageError, match="not under the backup's prefix"):
            backup.restore(
                path, state_dir=tmp_path / f"new-{name}", redis_url=fresh_redis.url, force=True
            )
        assert not (tmp_path / f"new-{name}").exists()
    assert other.get("other-installation:plain") == "theirs"
    assert other.get(prefix[:-1] + "-staging:plain") == "theirs too"
    assert other.dbsize() == 2


def test_bad_input_is_a_usage_error_never_an_internal_one(
    made: tuple[str, Path], fresh_redis: RedisServer, tmp_path: Path
) -> None:
    from txmail.cli import main

    _, target = made
    records = _lines(target)
    header, rest = records[0], records[1:]
    key = next(r for r in rest if "key" in r)
    key_file = next(r for r in rest if "file" in r and not r["config"])
    damaged = tmp_path / "damaged.txbk"
    raw = bytearray(target.read_bytes())
    for n in range(30, 60):
        raw[n] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    variants = {
        "damaged": damaged,
        "schema": _rewrite(tmp_path / "schema.txbk", [{**header, "schema": "two"}, *rest]),
        "prefix": _rewrite(tmp_path / "prefix.txbk", [{**header, "prefix": 7}, *rest]),
        "key64": _rewrite(tmp_path / "key64.txbk", [*records, {**key, "key": "!!not base64"}]),
        "dump": _rewrite(tmp_path / "dump.txbk", [*records, {**key, "dump": None}]),
        "data": _rewrite(
            tmp_path / "data.txbk",
            [*records, {k: v for k, v in key_file.items() if k != "data"}],
        ),
        "mode": _rewrite(tmp_path / "mode.txbk", [*records, {**key_file, "mode": "rw"}]),
    }
    for name, path in variants.items():
        with pytest.raises(UsageError):
            backup.restore(path, state_dir=tmp_path / f"new-{name}", redis_url=fresh_redis.url)
        result = CliRunner().invoke(
            main,
            ["restore", str(path), "--state-dir", str(tmp_path / f"new-{name}")],
        )
        assert result.exit_code == 2, (name, result.output)
        assert not (tmp_path / f"new-{name}").exists()
    result = CliRunner().invoke(
        main,
        [
            "restore",
            str(target),
            "--state-dir",
            str(tmp_path / "n"),
            "--redis-url",
            "localhost:6379",
        ],
    )
    assert result.exit_code == 2 and "--redis-url 'localhost:6379'" in result.output
    assert "redis://" in result.output and not (tmp_path / "n").exists()


def test_force_onto_a_redis_that_cannot_read_the_payloads_deletes_nothing(
    made: tuple[str, Path], fresh_redis: RedisServer, tmp_path: Path
) -> None:
    import base64

    prefix, target = made
    records = _lines(target)
    first = next(r for r in records if "key" in r)
    dump = bytearray(base64.b64decode(str(first["dump"])))
    dump[-10] ^= 0xFF  # its RDB version: what an older Redis reports
    first["dump"] = base64.b64encode(bytes(dump)).decode()
    path = _rewrite(tmp_path / "newer-redis.txbk", records)
    other = fresh_redis.client()
    other.set(f"{prefix}live", "kept")
    with pytest.raises(UsageError, match="cannot read the backup's data"):
        backup.restore(path, state_dir=tmp_path / "new", redis_url=fresh_redis.url, force=True)
    assert other.keys("*") == [f"{prefix}live"]
    assert not (tmp_path / "new/txmail.toml").exists()


def test_a_prefix_must_end_in_a_colon(tmp_path: Path) -> None:
    from txmail.errors import ConfigError

    for prefix in ("txmail", ""):
        config = tmp_path / "txmail.toml"
        config.write_text(f'[redis]\nprefix = "{prefix}"\n')
        with pytest.raises(ConfigError, match="ending in a colon"):
            config_mod.load(config)
    assert backup.match_pattern("txmail:") == "txmail:*"


def test_key_files_follow_no_symlink_in_the_dkim_folder(tmp_path: Path) -> None:
    settings = config_mod.Settings(state_dir=str(tmp_path / "state"))
    dkim = settings.path(settings.domains.dkim_key_dir)
    (dkim / "acme").mkdir(parents=True)
    (dkim / "acme/s1.pem").write_text("KEY\n")
    secret = tmp_path / "secret"
    (secret / "deep").mkdir(parents=True)
    (secret / "shadow").write_text("root only\n")
    (secret / "deep/x.pem").write_text("root only\n")
    (dkim / "linked.pem").symlink_to(secret / "shadow")
    (dkim / "linked-dir").symlink_to(secret / "deep")
    assert backup.key_files(settings) == [dkim / "acme/s1.pem"]


def test_restore_warns_when_the_private_redis_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    settings = config_mod.Settings(state_dir=str(tmp_path))
    path = tmp_path / "run/redis/redis.sock"
    path.parent.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    try:
        with caplog.at_level("WARNING", logger="txmail.backup"):
            backup._warn_if_running(settings)
    finally:
        listener.close()
    assert "`txmail up` seems to run" in caplog.text
