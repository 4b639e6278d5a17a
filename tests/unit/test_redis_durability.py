"""Redis is told to fsync its append-only file before it answers, in the private Redis that
`txmail up` renders and in compose.yaml: with appendfsync everysec Redis may hold back the
AOF write for up to 2 s while a background fsync is slow and still answer, so a kill -9 could
lose message records and events their writers were told were stored (found by bench/soak.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from txmail.config import Settings
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


def test_compose_redis_fsyncs_every_write() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    # a shell line since the password is read from the state volume (issue 15, finding 8)
    words = " ".join(compose["services"]["redis"]["command"]).split()
    assert words[words.index("--appendfsync") + 1] == "always"
