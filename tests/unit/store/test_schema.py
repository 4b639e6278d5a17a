"""The schema version in Redis and `txmail migrate`, on a real Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from txmail.errors import ConfigError
from txmail.store import Keys, schema
from txmail_testing.harness import RedisServer


@pytest.fixture
def keys() -> Keys:
    return Keys(f"schema-{uuid.uuid4().hex[:8]}:")


def _cli(redis_server: RedisServer, keys: Keys, tmp_path: Path, *args: str) -> tuple[int, str]:
    from txmail.cli import main

    config = tmp_path / "txmail.toml"
    config.write_text(f'[redis]\nurl = "{redis_server.url}"\nprefix = "{keys.prefix}"\n')
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_ensure_writes_the_first_schema_once_and_accepts_it(
    client: redis.Redis, keys: Keys
) -> None:
    assert schema.stored(client, keys) is None
    assert schema.ensure(client, keys) == schema.CURRENT == 1
    assert client.get(keys.schema) == "1"
    assert schema.ensure(client, keys) == 1


def test_a_newer_schema_is_refused_with_a_sentence(client: redis.Redis, keys: Keys) -> None:
    client.set(keys.schema, str(schema.CURRENT + 1))
    with pytest.raises(ConfigError, match="newer than this txmail knows") as refused:
        schema.ensure(client, keys)
    assert "restore a backup" in str(refused.value)
    with pytest.raises(ConfigError, match="newer than this txmail knows"):
        schema.migrate(client, keys)
    assert client.get(keys.schema) == str(schema.CURRENT + 1)  # left as it was


def test_an_older_schema_waits_for_migrate(client: redis.Redis, keys: Keys) -> None:
    client.set(keys.schema, "0")
    with pytest.raises(ConfigError, match="txmail migrate"):
        schema.ensure(client, keys)


def test_migrate_applies_steps_in_order_from_the_stored_version(
    client: redis.Redis, keys: Keys
) -> None:
    done: list[int] = []

    def step(version: int) -> schema.Migration:
        return schema.Migration(version, f"step {version}", lambda c, k: done.append(version))

    client.set(keys.schema, "1")
    found, applied = schema.migrate(client, keys, (step(3), step(2), step(4)), current=4)
    assert found == 1 and done == [2, 3, 4] and [s.version for s in applied] == [2, 3, 4]
    assert client.get(keys.schema) == "4"
    assert schema.migrate(client, keys, (step(2), step(3), step(4)), current=4) == (4, [])
    with pytest.raises(ConfigError, match="no migration from schema 4 to 6"):
        schema.migrate(client, keys, (step(6),), current=6)


def test_migrate_command_today_is_a_no_op(
    redis_server: RedisServer, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    code, output = _cli(redis_server, keys, tmp_path, "migrate")
    assert (code, output) == (0, "schema 1, nothing to do\n")
    assert client.get(keys.schema) == "1"
    client.set(keys.schema, "7")
    code, output = _cli(redis_server, keys, tmp_path, "migrate")
    assert code == 2 and "schema 7, newer than this txmail knows (schema 1)" in output


def test_a_bad_stored_version_is_a_sentence(client: redis.Redis, keys: Keys) -> None:
    client.set(keys.schema, "one")
    with pytest.raises(ConfigError, match="not a schema version"):
        schema.ensure(client, keys)


def test_up_checks_the_schema_only_once_redis_answers_and_waits_for_it(
    redis_server: RedisServer, keys: Keys
) -> None:
    """`up` starts nothing before the schema is checked: a Redis that does not answer yet is
    asked again with a growing pause (fakes for connect and sleep passed in)."""
    import dataclasses

    from txmail import config as config_mod
    from txmail.stack import supervisor

    base = config_mod.Settings()
    settings = dataclasses.replace(
        base, redis=dataclasses.replace(base.redis, url=redis_server.url, prefix=keys.prefix)
    )
    down = dataclasses.replace(settings.redis, url="redis://127.0.0.1:1/0", timeout=0.5)
    answers = iter([down, down, down, settings.redis])
    pauses: list[float] = []

    def connect(s: config_mod.Settings) -> redis.Redis:
        from txmail import store

        return store.connect(dataclasses.replace(s, redis=next(answers)))

    supervisor.check_schema(settings, connect=connect, sleep=pauses.append)
    assert pauses == [1.0, 2.0, 4.0]
    real = redis_server.client()
    try:
        assert real.get(keys.schema) == str(schema.CURRENT)
    finally:
        real.close()
    # Stopped while it waits: it gives up without a pause more.
    pauses.clear()
    answers = iter([down])
    supervisor.check_schema(settings, connect=connect, sleep=pauses.append, stopping=lambda: True)
    assert pauses == []
