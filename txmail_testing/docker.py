"""A private Docker engine for the image tests (tests/e2e/test_image.py), started and stopped here.

The engine is Debian's dockerd run by the test as a child, with folders of its own (data, exec
root, socket) under a temporary directory, no bridge network and no iptables rules: containers
use the host's network (`--network host`), which reaches loopback only. Nothing of an engine
the machine may already run is used or touched, and the engine is stopped by its PID.

No image registry is reached, so the base image is made from Debian's packages: `debootstrap
--variant=minbase bookworm`, then `docker import` (Engine.debian_base). The Dockerfile's BASE
argument takes it. The debootstrapped tree is kept as a tar file in CACHE for a week (like
apt's own package cache), so a second run on the same machine imports it instead of making it
again (85 s of a 160 s test here).

Building takes minutes that are mostly waiting (debootstrap, apt and pip downloads), so
tests/conftest.py starts an ImageBuild in a thread as soon as the image tests are collected and
runs those tests last: the build goes on while the other tests run.

The engine needs root and dockerd (Debian's docker.io); without either, or with
TXMAIL_DOCKER_TEST=0, the tests that need it are skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from txmail_testing.harness import wait_for

LOCAL_CAS = Path("/usr/local/share/ca-certificates")
CACHE = Path("/var/cache/txmail-tests")
CACHE_DAYS = 7
IMAGE_TAG = "txmail:test"


def unavailable() -> str | None:
    """Why no private engine can run here, or None when one can."""
    if os.environ.get("TXMAIL_DOCKER_TEST") == "0":
        return "TXMAIL_DOCKER_TEST=0"
    if os.geteuid() != 0:
        return "a private Docker engine needs root"
    for tool in ("dockerd", "docker", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian's docker.io and debootstrap)"
    return None


def local_cas() -> str:
    """The CA certificates this machine added to Debian's (a TLS-intercepting proxy's), for
    pip inside a build; empty where there are none."""
    if not LOCAL_CAS.is_dir():
        return ""
    return "".join(p.read_text() for p in sorted(LOCAL_CAS.glob("*.crt")))


class Engine:
    def __init__(self) -> None:
        # Short: containerd's sockets live under the exec root and a socket path has 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="txd-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()  # a build thread starts it, the test session may close it
        self.closed = False

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def start(self) -> Engine:
        with self.lock:
            if self.closed:
                raise RuntimeError("the engine was closed before it started")
            self._spawn()

        def answers() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            return self.docker("info", check=False, timeout=10).returncode == 0

        wait_for(answers, 60, interval=0.5, what="the private dockerd")
        return self

    def _spawn(self) -> None:
        log = (self.root / "dockerd.log").open("wb")
        self.process = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false",
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "x"),
             "--pidfile", str(self.root / "dockerd.pid"), "--host", f"unix://{self.socket}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", *args], capture_output=True, check=False, timeout=timeout,
            env=self.env, input=stdin,
        )  # fmt: skip
        done = subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode("utf-8", "replace"),
            result.stderr.decode("utf-8", "replace"),
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stdout}{done.stderr}")
        return done

    def debian_base(self, name: str = "txmail-base") -> str:
        """Debian 12 minbase from Debian's packages, imported as image `name`."""
        saved = CACHE / "debian-bookworm-minbase.tar"
        if not saved.exists() or time.time() - saved.stat().st_mtime > CACHE_DAYS * 86400:
            tree = self.root / "base"
            made = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(tree)],
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
            assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
            CACHE.mkdir(parents=True, exist_ok=True)
            partial = saved.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(tree), "-cf", str(partial), "."], check=True)
            partial.replace(saved)
            shutil.rmtree(tree, ignore_errors=True)
        with saved.open("rb") as tar:
            self.docker("import", "-", name, stdin=tar.read(), timeout=300)
        return name

    def log_tail(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        with self.lock:
            self.closed = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        # dockerd leaves mounts behind it (the host's network namespace, bound under the exec
        # root): let go of every mount under the folder, deepest first, then remove it.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(f"{self.root}/")), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


class ImageBuild(threading.Thread):
    """Starts a private engine and builds the image of `repo` as `tag`, in the background."""

    def __init__(self, repo: Path, tag: str) -> None:
        super().__init__(name="txmail-image-build", daemon=True)
        self.repo, self.tag = repo, tag
        self.engine = Engine()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.engine.start()
            base = os.environ.get("TXMAIL_DOCKER_BASE") or self.engine.debian_base()
            ca = local_cas()
            extra = ["--build-arg", f"PIP_CA={ca.strip()}"] if ca else []
            self.engine.docker(
                "build", "--network", "host", "--build-arg", f"BASE={base}", *extra,
                "-t", self.tag, str(self.repo), timeout=1800,
            )  # fmt: skip
        except BaseException as exc:  # handed to the test that waits for the image
            self.error = exc

    def image(self) -> tuple[Engine, str]:
        """The engine and the built image, once the build is over; its error if it failed."""
        if not self.is_alive() and self.ident is None:
            self.start()
        self.join()
        if self.error is not None:
            raise AssertionError(f"the image build failed: {self.error}") from self.error
        return self.engine, self.tag


IMAGE_BUILD = pytest.StashKey[ImageBuild]()
