"""The image itself (Dockerfile), built and run: only with TXMAIL_DOCKER_TEST=1, where a Docker
engine runs (DOCKER_HOST as usual). Not in the default run: the build alone takes minutes.

    TXMAIL_DOCKER_TEST=1 TXMAIL_DOCKER_BASE=txmail-base .venv/bin/python -m pytest -m e2e \\
        tests/e2e/test_image.py

TXMAIL_DOCKER_BASE is the BASE build argument (default debian:12-slim; a base made locally with
debootstrap and `docker import` serves where no registry is reached); TXMAIL_DOCKER_PIP_CA
names a CA file pip must trust (the Dockerfile's PIP_CA, behind a TLS-intercepting proxy).
The container runs the whole node (`txmail up`) on the host's network against a Redis started
here, and must answer `txmail health` for every component, as the image's HEALTHCHECK asks."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail_testing.harness import RedisServer, free_offset, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("TXMAIL_DOCKER_TEST") != "1",
        reason="builds the Docker image: set TXMAIL_DOCKER_TEST=1 where an engine runs",
    ),
]

REPO = Path(__file__).resolve().parents[2]
IMAGE = "txmail:test"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="module")
def image() -> str:
    base = os.environ.get("TXMAIL_DOCKER_BASE", "debian:12-slim")
    ca = os.environ.get("TXMAIL_DOCKER_PIP_CA")
    extra = ["--build-arg", f"PIP_CA={Path(ca).read_text().strip()}"] if ca else []
    docker(
        "build", "--network", "host", "--build-arg", f"BASE={base}", *extra, "-t", IMAGE,
        str(REPO), timeout=1800,
    )  # fmt: skip
    return IMAGE


@pytest.fixture
def node(image: str) -> Iterator[str]:
    redis = RedisServer(password="image-test").start()
    name = f"txmail-image-test-{os.getpid()}"
    offset = free_offset()
    script = (
        f"txmail init --state-dir /var/lib/txmail --port-offset {offset} "
        f"--redis-url {redis.url} >/dev/null && exec txmail up"
    )
    docker(
        "run", "-d", "--name", name, "--network", "host", "--entrypoint", "tini", image,
        "-g", "--", "sh", "-c", script,
    )  # fmt: skip
    try:
        yield name
    finally:
        docker("rm", "-f", name, check=False)
        redis.close()


def test_image_has_no_compilers_and_runs_tini(image: str) -> None:
    found = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                   "command -v gcc cc; command -v tini; id -u txmail")  # fmt: skip
    assert found.stdout.split() == ["/usr/bin/tini", "990"]


def test_the_node_in_the_image_answers_txmail_health(node: str) -> None:
    def healthy() -> bool:
        state = docker("inspect", "-f", "{{.State.Running}}", node).stdout.strip()
        assert state == "true", docker("logs", node, check=False).stdout
        return docker("exec", node, "txmail", "health", check=False).returncode == 0

    wait_for(healthy, 120, interval=1, what="txmail health in the container")
    said = docker("exec", node, "txmail", "health").stdout.splitlines()
    for name in ("milter", "policyd", "socketmap", "dovecot", "tracker", "postfix"):
        assert f"{name}: ok" in said
    # The tracker's check works as the unprivileged user compose runs it as.
    as_user = docker("exec", "--user", "990:990", node, "txmail", "health", "tracker", check=False)
    assert as_user.returncode == 0, as_user.stderr
