"""Test harness: real Redis, a scriptable SMTP sink and whole txmail stacks on loopback.

Everything here starts real processes in their own temporary folders on free ports, and
stops them again even when a test fails. Used by tests/ (conftest.py) and by bench/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from txmail.stack.capture import CaptureHandler, CaptureServer

REPO = Path(__file__).resolve().parents[1]
TXMAIL = [sys.executable, "-m", "txmail"]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(proc: subprocess.Popen[Any] | None, grace: float) -> None:
    """SIGTERM a process we started, SIGKILL it if it is still there after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, both below the
    ephemeral ports (see free_listening_port)."""
    for _ in range(200):
        port = random.randrange(12000, 22000)
        if port_free(port) and port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def free_listening_port() -> int:
    """A free port below Linux's ephemeral ports (32768 on), for a server that binds it later
    or binds it again after a stop: a client connection cannot take it in between, as it may
    take a port free_port() found."""
    for _ in range(200):
        port = random.randrange(1025, 32000)
        if port_free(port):
            return port
    raise RuntimeError("no free port found")


def free_offset() -> int:
    """A --port-offset N for which 25+N, 465+N, 587+N, 2525+N, 8080+N, 10025+N (the bounce
    pipe's reinjection listener) and 10030+N (authpolicy) are all free. Below Linux's
    ephemeral ports (32768 on), so a client connection cannot take one before it is bound."""
    for _ in range(200):
        n = random.randrange(1000, 22000)
        if all(port_free(base + n) for base in (25, 465, 587, 2525, 8080, 10025, 10030)):
            return n
    raise RuntimeError("no free port offset found")


def bounce_settings(state: Path, bounce_key: bytes) -> Any:
    """Settings of a node in `state` (no process runs) with `bounce_key` in its key file and
    a key prefix of its own, for tests that call the bounce pipe's functions directly."""
    from txmail.config import Settings

    (state / "secrets").mkdir(exist_ok=True)
    (state / "secrets/bounce.key").write_bytes(bounce_key)
    base = Settings(state_dir=str(state))
    return dataclasses.replace(
        base, redis=dataclasses.replace(base.redis, prefix=f"t{random.getrandbits(32):08x}:")
    )


def state_dir(prefix: str) -> Path:
    """A temporary folder Postfix's and Dovecot's users can traverse (pytest's tmp_path is
    under a mode-0700 folder they cannot enter)."""
    path = Path(tempfile.mkdtemp(prefix=f"txmail-{prefix}-", dir="/tmp"))
    path.chmod(0o755)
    return path


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far; gone ones count 0."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server on a free loopback port."""

    def __init__(
        self,
        port: int | None = None,
        cluster: bool = False,
        password: str = "",
        appendfsync: str = "everysec",
    ) -> None:
        self.port = port or (cluster_port() if cluster else free_listening_port())
        self.appendfsync = appendfsync  # Redis's own default, as these tests always had
        self.dir = state_dir(f"redis{self.port}")
        self.cluster = cluster
        self.password = password  # requirepass, when set
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(self.ping, 10, what=f"redis on {self.port}")
        except AssertionError:
            self.stop()
            raise
        return self

    def ping(self) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=0.5, password=self.password or None)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()  # an unclosed socket is a ResourceWarning, an error under pytest

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, password=self.password or None)

    def stop(self) -> None:
        terminate(self.proc, 10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """Three masters on loopback, joined with `redis-cli --cluster create`."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [RedisServer(cluster=True) for _ in range(masters)]

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addrs,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def ok() -> bool:
            info = self.nodes[0].client().execute_command("CLUSTER", "INFO")
            text = info if isinstance(info, str) else str(info)
            return "cluster_state:ok" in text

        wait_for(ok, 20, what="cluster_state:ok")
        return self

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def sink_verdict(recipient: str) -> str | None:
    """The test sink's script: reject*@ -> 550 5.1.1, defer*@ -> 450 4.2.0, else accept."""
    local = recipient.split("@", 1)[0].lower()
    if local.startswith("reject"):
        return f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown"
    if local.startswith("defer"):
        return f"450 4.2.0 <{recipient}>: Mailbox busy, try later"
    return None


class Sink:
    """A scriptable SMTP sink standing in for the internet."""

    def __init__(self, verdict: Callable[[str], str | None] = sink_verdict) -> None:
        self.handler = CaptureHandler(verdict=verdict)
        self.server = CaptureServer(self.handler, port=free_listening_port())

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def messages(self) -> list[Any]:
        return self.handler.messages

    def start(self) -> Sink:
        self.server.start()
        return self

    def wait(self, count: int, timeout: float = 20.0) -> list[Any]:
        wait_for(
            lambda: len(self.messages) >= count, timeout, what=f"{count} message(s) at the sink"
        )
        return self.messages

    def find(self, recipient: str) -> list[Any]:
        return [m for m in self.messages if recipient in m.recipients]

    def stop(self) -> None:
        self.server.stop()

    @staticmethod
    def dsn(
        original: Any,
        recipient: str,
        status: str = "5.1.1",
        diagnostic: str = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
        reporting_mta: str = "mx.remote.test",
    ) -> bytes:
        """An RFC 3464 delivery status notification for `recipient` of a message this sink
        accepted earlier, as a remote MTA sends it back to the envelope sender later."""
        action = "failed" if status.startswith("5") else "delayed"
        boundary = f"dsn-{random.getrandbits(48):x}"
        headers_of_original = (
            bytes(original.data).split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        )
        text = (
            f"From: MAILER-DAEMON@{reporting_mta}\r\n"
            f"To: {original.sender}\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
            f"Message-ID: <{random.getrandbits(64):x}@{reporting_mta}>\r\n"
            f"Auto-Submitted: auto-replied\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type=delivery-status; "
            f'boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\n"
            f"Your message could not be delivered to {recipient}.\r\n\r\n"
            f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; {reporting_mta}\r\n\r\n"
            f"Final-Recipient: rfc822; {recipient}\r\n"
            f"Action: {action}\r\nStatus: {status}\r\n"
            f"Remote-MTA: dns; {reporting_mta}\r\n"
            f"Diagnostic-Code: smtp; {diagnostic.format(rcpt=recipient)}\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"{headers_of_original}\r\n\r\n"
            f"--{boundary}--\r\n"
        )
        return text.encode()

    @staticmethod
    def arf(return_path: str, recipient: str, original: bytes) -> bytes:
        """An RFC 5965 abuse report (ARF) about `original`, as a mailbox provider's feedback
        loop mails it to the message's return-path address."""
        boundary = f"arf-{random.getrandbits(64):x}"
        return (
            f"From: fbl@isp.example\r\nTo: {return_path}\r\nSubject: Abuse report\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            f'report-type=feedback-report; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain\r\n\r\n"
            f"This is an abuse report.\r\n\r\n"
            f"--{boundary}\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1\r\n"
            f"Original-Mail-From: <{return_path}>\r\nOriginal-Rcpt-To: <{recipient}>\r\n"
            f"\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
        ).encode() + (original + f"\r\n--{boundary}--\r\n".encode())

    @staticmethod
    def deliver(port: int, sender: str, recipient: str, data: bytes) -> str:
        """Hand a message to an MTA's port 25 as the internet would (no login, STARTTLS if
        offered); return the server's final reply."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("mx.remote.test")
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo("mx.remote.test")
            code, text = smtp.mail(sender)
            if code >= 400:  # e.g. 451 4.7.1 while the milter is down
                raise smtplib.SMTPSenderRefused(code, text, sender)
            code, text = smtp.rcpt(recipient)
            if code >= 400:
                raise smtplib.SMTPRecipientsRefused({recipient: (code, text)})
            code, text = smtp.data(data)
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        return text.decode()


class Stack:
    """One txmail node: `txmail init` in a temporary state directory, then `txmail up`."""

    def __init__(
        self,
        relay_port: int,
        redis_url: str = "",
        cluster: bool = False,
        name: str = "stack",
        extra_init: list[str] | None = None,
        log_permits: bool = False,
    ) -> None:
        self.offset = free_offset()
        self.state = state_dir(name)
        self.config = self.state / "txmail.toml"
        self.redis_url = redis_url
        init = [
            *TXMAIL,
            "init",
            "--state-dir",
            str(self.state),
            "--port-offset",
            str(self.offset),
            "--relayhost",
            f"[127.0.0.1]:{relay_port}",
        ]
        if redis_url:
            init += ["--redis-url", redis_url]
        if cluster:
            init += ["--redis-cluster"]
        subprocess.run(init + (extra_init or []), check=True, capture_output=True)
        if log_permits:  # policyd logs its permits too, for tests that count them
            text = self.config.read_text()
            assert "\nlog_permits = false\n" in text
            self.config.write_text(
                text.replace("\nlog_permits = false\n", "\nlog_permits = true\n")
            )
        self.proc: subprocess.Popen[str] | None = None
        self.output_path = self.state / "up.out"

    @classmethod
    def restored(cls, config: Path, redis_url: str = "") -> Stack:
        """A Stack over a state directory made otherwise (by `txmail restore`), not started;
        its ports are the ones its configuration names (made with a port offset)."""
        from txmail import config as config_mod

        settings = config_mod.load(config)
        node = cls.__new__(cls)
        node.offset = settings.listen.smtp - 25
        node.state = settings.state_path
        node.config = config
        node.redis_url = redis_url
        node.proc = None
        node.output_path = node.state / "up.out"
        return node

    # ports
    @property
    def smtp(self) -> int:
        return 25 + self.offset

    @property
    def submissions(self) -> int:
        return 465 + self.offset

    @property
    def submission(self) -> int:
        return 587 + self.offset

    def configure(self, section: str, **values: Any) -> Stack:
        """Change settings of one section of txmail.toml (before start())."""
        from txmail import config

        settings = config.load(self.config)
        changed = dataclasses.replace(getattr(settings, section), **values)
        self.config.write_text(config.to_toml(dataclasses.replace(settings, **{section: changed})))
        return self

    def start(
        self,
        timeout: float = 60.0,
        dev: bool = False,
        args: tuple[str, ...] = (),
        stderr: Any = subprocess.STDOUT,
    ) -> Stack:
        """`txmail up`; its output (standard error too, unless `stderr` says where) in
        up.out."""
        out = self.output_path.open("w")
        self.proc = subprocess.Popen(
            [*TXMAIL, "--config", str(self.config), "up", *(["--dev"] if dev else []), *args],
            stdout=out,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        out.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"txmail up exited {self.proc.returncode}:\n{self.output()}")
            return "txmail ready:" in self.output()

        wait_for(ready, timeout, interval=0.1, what="txmail ready")
        return self

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def log(self, name: str) -> str:
        """The lines of one component: STATE/log/NAME.log (Postfix's maillog, or any component
        with log.destination = "files"), else those `txmail up` passed to its standard error
        led by `NAME: ` (text) or with "component": NAME (JSON), as the component wrote them."""
        path = self.state / "log" / f"{name}.log"
        if path.exists():
            return path.read_text(errors="replace")
        text = ""
        lead = f"{name}: "
        for line in self.output().splitlines():
            if line.startswith(lead):
                text += line[len(lead) :] + "\n"
            elif line.startswith("{"):
                try:
                    fields = json.loads(line)
                except ValueError:
                    continue
                if isinstance(fields, dict) and fields.get("component") == name:
                    text += line + "\n"
        return text

    def config_without_bounce_parser(self) -> Path:
        """A copy of this node's configuration whose bounce pipe finds no `txmail bounces
        serve` listening, so it exits 75 (Postfix would keep the mail)."""
        from txmail import config as config_mod

        settings = config_mod.load(self.config)
        alone = self.state / "no-parser.toml"
        alone.write_text(
            config_mod.to_toml(
                dataclasses.replace(
                    settings,
                    bounce_pipe=dataclasses.replace(
                        settings.bounce_pipe, socket="run/bounce/nobody.sock"
                    ),
                )
            )
        )
        return alone

    def pids_of(self, *command: str) -> list[int]:
        """The pids of this node's txmail processes run as `txmail --config FILE COMMAND...`
        (a forking daemon's workers share its command line)."""
        tail = [part.encode() for part in command] + [b""]
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(self.config).encode() in argv and argv[-len(tail) :] == tail:
                pids.append(int(entry.name))
        return sorted(pids)

    def pid_of(self, *command: str) -> int:
        """The pid of this node's (first) `txmail --config FILE COMMAND...` process."""
        pids = self.pids_of(*command)
        if not pids:
            raise AssertionError(f"no `txmail {' '.join(command)}` runs for this node")
        return pids[0]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        # A supervisor killed hard may have left Postfix behind; stop it by its own pid file.
        subprocess.run(
            ["postfix", "-c", str(self.state / "postfix/etc"), "stop"],
            capture_output=True,
            check=False,
        )
        if not os.environ.get("TXMAIL_KEEP_STATE"):  # keep it to read the logs of a failure
            shutil.rmtree(self.state, ignore_errors=True)

    # commands
    def txmail(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*TXMAIL, "--config", str(self.config), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"txmail {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def add_account(self, name: str, *domains: str, settings: list[str] | None = None) -> str:
        password = f"pw-{name}-{random.getrandbits(48):x}"
        extra = [a for s in settings or [] for a in ("--set", s)]
        self.txmail(
            "accounts",
            "add",
            name,
            *[a for d in domains for a in ("--domain", d)],
            "--password-stdin",
            *extra,
            input=password + "\n",
        )
        self.wait_passwd(name)
        return password

    def wait_passwd(self, name: str, present: bool = True) -> None:
        passwd = self.state / "dovecot/users"

        def synced() -> bool:
            text = passwd.read_text() if passwd.exists() else ""
            return any(line.startswith(f"{name}:") for line in text.splitlines()) == present

        wait_for(synced, 15, what=f"passwd-file sync of {name}")

    def redis(self) -> redis.Redis:
        if self.redis_url:
            return redis.Redis.from_url(self.redis_url, decode_responses=True)
        return redis.Redis(
            unix_socket_path=str(self.state / "run/redis/redis.sock"), decode_responses=True
        )

    # SMTP
    def client(
        self, port: str = "submission", login: tuple[str, str] | None = None, timeout: float = 30.0
    ) -> smtplib.SMTP:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if port == "submissions":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                "127.0.0.1", self.submissions, context=context, timeout=timeout
            )
        else:
            smtp = smtplib.SMTP(
                "127.0.0.1", self.submission if port == "submission" else self.smtp, timeout=timeout
            )
            try:
                smtp.ehlo("client.test")
                smtp.starttls(context=context)
            except BaseException:
                smtp.close()
                raise
        try:
            smtp.ehlo("client.test")
            if login:
                smtp.login(*login)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(
        self,
        login: tuple[str, str],
        sender: str,
        recipients: list[str],
        message: bytes | str,
        port: str = "submission",
    ) -> str:
        """Submit one message; return the queue id from the 250 reply."""
        with contextlib.closing(self.client(port, login)) as smtp:
            smtp.mail(sender)
            for rcpt in recipients:
                code, text = smtp.rcpt(rcpt)
                if code >= 400:
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, text)})
            code, text = smtp.data(message)
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
            smtp.quit()
        return queue_id_of(text)


def queue_id_of(reply: bytes | str) -> str:
    text = reply.decode() if isinstance(reply, bytes) else reply
    marker = "queued as "
    if marker not in text:
        raise AssertionError(f"no queue id in {text!r}")
    return text.split(marker, 1)[1].split()[0]


def simple_message(
    sender: str,
    recipient: str,
    subject: str = "hello",
    body: str = "Hello from the txmail tests.\r\n",
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    headers = {
        "From": sender,
        "To": recipient,
        "Subject": subject,
        "Message-ID": f"<{random.getrandbits(64):x}@test.invalid>",
        "Date": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
    }
    headers.update(extra_headers or {})
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n" + body).encode()


@contextlib.contextmanager
def running(thing: Any) -> Iterator[Any]:
    try:
        yield thing.start()
    finally:
        thing.close() if hasattr(thing, "close") else thing.stop()
