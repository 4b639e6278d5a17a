"""The image itself (Dockerfile), built and run by a private Docker engine that the test starts
(txmail_testing/docker.py: Debian's dockerd, folders of its own, no bridge network, stopped by
its PID). Skipped, saying why, where no engine can run (not root, no docker.io or debootstrap)
or with TXMAIL_DOCKER_TEST=0.

    .venv/bin/python -m pytest -m e2e tests/e2e/test_image.py

The base image is Debian 12 minbase made with debootstrap and `docker import` (no registry is
reached); TXMAIL_DOCKER_BASE names another (pulled by the engine) instead. pip inside the build
trusts the CAs this machine added to Debian's (/usr/local/share/ca-certificates: a
TLS-intercepting proxy's), passed as the Dockerfile's PIP_CA, which only the build stage sees.
The container runs the whole node (`txmail up`) on the host's network against a Redis started
here, and must answer `txmail health` for every component, as the image's HEALTHCHECK asks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from txmail_testing.docker import IMAGE_BUILD, IMAGE_TAG, Engine, ImageBuild, unavailable
from txmail_testing.harness import RedisServer, free_offset, wait_for

WHY_NOT = unavailable()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))]

REPO = Path(__file__).resolve().parents[2]
IMAGE = IMAGE_TAG


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, str]]:
    build = request.config.stash.get(IMAGE_BUILD, None) or ImageBuild(REPO, IMAGE)
    try:
        yield build.image()
    finally:
        build.engine.close()


@pytest.fixture(scope="module")
def engine(built: tuple[Engine, str]) -> Engine:
    return built[0]


@pytest.fixture(scope="module")
def image(built: tuple[Engine, str]) -> str:
    return built[1]


@pytest.fixture
def node(engine: Engine, image: str) -> Iterator[str]:
    redis = RedisServer(password="image-test").start()
    name = f"txmail-image-test-{os.getpid()}"
    offset = free_offset()
    script = (
        f"txmail init --state-dir /var/lib/txmail --port-offset {offset} "
        f"--redis-url {redis.url} >/dev/null && exec txmail up"
    )
    engine.docker(
        "run", "-d", "--name", name, "--network", "host", "--entrypoint", "tini", image,
        "-g", "--", "sh", "-c", script,
    )  # fmt: skip
    try:
        yield name
    finally:
        engine.docker("rm", "-f", name, check=False)
        redis.close()


def test_image_has_no_compilers_and_runs_tini(engine: Engine, image: str) -> None:
    found = engine.docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                   "command -v gcc cc; command -v tini; id -u txmail")  # fmt: skip
    assert found.stdout.split() == ["/usr/bin/tini", "990"]


def test_the_node_in_the_image_answers_txmail_health(engine: Engine, node: str) -> None:
    def healthy() -> bool:
        state = engine.docker("inspect", "-f", "{{.State.Running}}", node).stdout.strip()
        assert state == "true", engine.docker("logs", node, check=False).stdout
        return engine.docker("exec", node, "txmail", "health", check=False).returncode == 0

    wait_for(healthy, 120, interval=1, what="txmail health in the container")
    said = engine.docker("exec", node, "txmail", "health").stdout.splitlines()
    for name in ("milter", "policyd", "socketmap", "dovecot", "tracker", "postfix"):
        assert f"{name}: ok" in said
    # The tracker's check works as the unprivileged user compose runs it as.
    as_user = engine.docker(
        "exec", "--user", "990:990", node, "txmail", "health", "tracker", check=False
    )
    assert as_user.returncode == 0, as_user.stderr
