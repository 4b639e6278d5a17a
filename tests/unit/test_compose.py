"""compose.yaml: valid for Docker Compose, and one service for every component `txmail up` runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from txmail.config import RedisSettings, Settings, SpamSettings
from txmail.stack.supervisor import build

REPO = Path(__file__).resolve().parents[2]


def compose_config() -> dict:
    """The file as Docker Compose resolves it: the v2 plugin where it is installed, else
    Debian's docker-compose (v1). Both validate it against the Compose schema."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose", "-f", str(REPO / "compose.yaml"), "config"]
    else:
        command = ["docker-compose", "-f", str(REPO / "compose.yaml"), "config"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_runs_every_component() -> None:
    config = compose_config()
    services = config["services"]
    settings = Settings(
        state_dir="/var/lib/txmail",
        redis=RedisSettings(url="redis://redis:6379/0"),
        spam=SpamSettings(enabled=True),  # compose's init writes --spam
    )
    for component in build(settings, Path("/var/lib/txmail/txmail.toml"), dev=False):
        matching = [
            name
            for name, s in services.items()
            if s.get("command") == ["up", "--only", component.name]
        ]
        assert matching, f"compose.yaml has no service running `txmail up --only {component.name}`"
        assert "healthcheck" in services[matching[0]]
    published = {
        str(p["target"]) if isinstance(p, dict) else str(p).split(":")[-1]
        for p in services["postfix"]["ports"]
    }
    assert {"25", "465", "587"} <= published
