"""Redis is told to fsync its append-only file before it answers, by default, in the private
Redis that `txmail up` renders and in compose.yaml: with appendfsync everysec Redis may hold
back the AOF write for up to 2 s while a background fsync is slow and still answer, so a kill -9
could lose message records and events their writers were told were stored (found by
bench/soak.py). redis.appendfsync = "everysec" renders it so; anything else is refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from txmail.config import ConfigError, RedisSettings, Settings, validate
from txmail.stack.render import render_file

REPO = Path(__file__).resolve().parents[2]


def directives(text: str) -> dict[str, str]:
    pairs = (
        line.split(None, 1)
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key: value.strip() for key, value in pairs}


def test_rendered_redis_conf_fsyncs_every_write(tmp_path: Path) -> None:
    settings = Settings(state_dir=str(tmp_path))
    conf = directives(render_file("redis.conf", settings, tmp_path / "txmail.toml"))
    assert (conf["appendonly"], conf["appendfsync"]) == ("yes", "always")


def test_everysec_is_a_setting_and_nothing_else_is(tmp_path: Path) -> None:
    settings = Settings(state_dir=str(tmp_path), redis=RedisSettings(appendfsync="everysec"))
    validate(settings)
    conf = directives(render_file("redis.conf", settings, tmp_path / "txmail.toml"))
    assert conf["appendfsync"] == "everysec"
    wrong = dataclasses.replace(settings, redis=RedisSettings(appendfsync="no"))
    with pytest.raises(ConfigError, match="redis.appendfsync = 'no': write one of \"always\""):
        validate(wrong)


def test_compose_redis_fsyncs_every_write() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    # a shell line since the password is read from the state volume (issue 15, finding 8)
    words = " ".join(compose["services"]["redis"]["command"]).split()
    assert words[words.index("--appendfsync") + 1] == "always"
