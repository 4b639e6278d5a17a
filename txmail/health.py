"""`txmail health COMPONENT` and the console's nodes page: ask one running component whether
it answers, the way its own clients do (compose health checks, the image's HEALTHCHECK, an
operator's probe). Core (no daemon imports), so the tracker's console can ask too.

Each probe below is a plain function of an address: it returns nothing when the component gave
a protocol-level answer, and raises Unhealthy with a sentence saying what failed otherwise. It
changes nothing: the policy request is a CONNECT-stage one policyd answers without counting, the
socketmap query names the bounce domain (answered without Redis), the bounce recorder treats a
connection closed without a byte as a check, the milter and Dovecot only negotiate.

    milter       milter option negotiation (SMFIC_OPTNEG) on milter.socket, then quit
    policyd      a policy request on policyd.socket; the answer must start with action=
    socketmap    the netstring query "relay BOUNCE_DOMAIN" on domains.socketmap
    bounce-pipe  a connection to bounce_pipe.socket
    tracker      GET /healthz on listen.http, answered "ok"
    authpolicy   an HTTP request to authpolicy.listen, answered with any HTTP status line
    dovecot      the auth protocol's VERSION handshake on Dovecot's SASL socket
    redis        PING on the Redis txmail uses (redis.url, or the private one)
    postfix      the SMTP banner (220) on the submission port
    rspamd       GET /ping on spam.listen (when spam.enabled)
    authsync     Dovecot's passwd-file exists and Redis answers
    maillog      Postfix's maillog_file exists and Redis answers
    webhooks     Redis answers (the dispatcher's only peer besides the receivers)
    capture      the SMTP banner of the --dev capture server
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from txmail.config import Settings

TIMEOUT = 3.0
MAX_ANSWER = 4096

# Milter protocol (libmilter's mfdef.h): a packet is a 4-byte big-endian length, a command byte
# and its data. Option negotiation carries the version, the actions and the protocol steps.
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
MILTER_VERSION = 6
ALL_ACTIONS = 0x1FF
ALL_STEPS = 0x1FFFFF


class Unhealthy(Exception):
    """The component did not answer as it should; the message says what failed."""


def _unix(path: Path, what: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise Unhealthy(f"{what}: no socket at {path}; is it running?") from None
    except OSError as exc:
        sock.close()
        raise Unhealthy(f"{what}: cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


def _tcp(host: str, port: int, what: str, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise Unhealthy(f"{what}: cannot connect to {host}:{port}: {exc.strerror or exc}") from None


def _read(sock: socket.socket, what: str, until: Callable[[bytes], bool]) -> bytes:
    """Bytes until `until(data)` holds, the peer closes, or MAX_ANSWER; Unhealthy on a timeout."""
    data = b""
    try:
        while not until(data) and len(data) < MAX_ANSWER:
            chunk = sock.recv(MAX_ANSWER - len(data))
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise Unhealthy(f"{what}: no answer within {sock.gettimeout():g} s") from None
    except OSError as exc:
        raise Unhealthy(f"{what}: connection failed: {exc.strerror or exc}") from None
    return data


def milter(path: Path, timeout: float = TIMEOUT) -> None:
    what = "the milter"
    with _unix(path, what, timeout) as sock:
        body = SMFIC_OPTNEG + struct.pack(">III", MILTER_VERSION, ALL_ACTIONS, ALL_STEPS)
        sock.sendall(struct.pack(">I", len(body)) + body)
        data = _read(sock, what, lambda d: len(d) >= 5 and len(d) >= 4 + _length(d))
        if len(data) < 5 or data[4:5] != SMFIC_OPTNEG:
            raise Unhealthy(f"{what}: no option negotiation in its answer ({data[:20]!r})")
        sock.sendall(struct.pack(">I", 1) + SMFIC_QUIT)


def _length(data: bytes) -> int:
    return int(struct.unpack(">I", data[:4])[0])


def policyd(path: Path, timeout: float = TIMEOUT) -> None:
    what = "the policy service"
    with _unix(path, what, timeout) as sock:
        sock.sendall(
            b"request=smtpd_access_policy\nprotocol_state=CONNECT\nprotocol_name=SMTP\n"
            b"client_address=127.0.0.1\n\n"
        )
        data = _read(sock, what, lambda d: d.endswith(b"\n\n"))
        if not data.startswith(b"action="):
            raise Unhealthy(f"{what}: no action= in its answer ({data[:60]!r})")


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def socketmap(path: Path, domain: str, timeout: float = TIMEOUT) -> None:
    what = "the socketmap"
    with _unix(path, what, timeout) as sock:
        sock.sendall(netstring(b"relay " + domain.encode("ascii", "replace")))
        data = _read(sock, what, lambda d: d.endswith(b","))
        length, _, rest = data.partition(b":")
        reply = rest[:-1].decode("utf-8", "replace")
        if not length.isdigit() or not data.endswith(b","):
            raise Unhealthy(f"{what}: its answer is not a netstring ({data[:60]!r})")
        if not reply.startswith(("OK", "NOTFOUND")):
            raise Unhealthy(f"{what}: answered {reply[:200]!r} for the bounce domain {domain}")


def bounce_recorder(path: Path, timeout: float = TIMEOUT) -> None:
    # The recorder takes a connection closed without a byte for a check (handoff.NoRequest).
    _unix(path, "the bounce recorder", timeout).close()


def http(
    host: str,
    port: int,
    target: str,
    what: str,
    body: bytes | None = None,
    timeout: float = TIMEOUT,
) -> None:
    """An HTTP/1.0 GET of `target`; with `body`, the answer must be 200 with that body."""
    with _tcp(host, port, what, timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode("ascii"))
        data = _read(sock, what, lambda d: False)
    status, _, _ = data.partition(b"\r\n")
    if not status.startswith(b"HTTP/"):
        raise Unhealthy(f"{what}: no HTTP answer on {host}:{port} ({data[:60]!r})")
    if body is not None:
        words = status.split()
        if len(words) < 2 or words[1] != b"200" or not data.endswith(body):
            raise Unhealthy(f"{what}: GET {target} answered {status.decode('latin-1')!r}")


def dovecot_auth(path: Path, timeout: float = TIMEOUT) -> None:
    what = "Dovecot's auth socket"
    with _unix(path, what, timeout) as sock:
        sock.sendall(b"VERSION\t1\t2\nCPID\t%d\n" % os.getpid())
        data = _read(sock, what, lambda d: b"\n" in d)
        if not data.startswith(b"VERSION\t1\t"):
            raise Unhealthy(f"{what}: no auth protocol VERSION 1 in its answer ({data[:60]!r})")


def smtp_banner(host: str, port: int, what: str, timeout: float = TIMEOUT) -> None:
    with _tcp(host, port, what, timeout) as sock:
        data = _read(sock, what, lambda d: b"\r\n" in d or b"\n" in d)
        if not data.startswith(b"220"):
            raise Unhealthy(f"{what}: no 220 greeting on {host}:{port} ({data[:60]!r})")
        sock.sendall(b"QUIT\r\n")


def redis_ping(url: str, shown: str, timeout: float = TIMEOUT) -> None:
    import redis

    what = "Redis"
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except redis.AuthenticationError:
        raise Unhealthy(f"{what} at {shown} refused the password of redis.url") from None
    except redis.RedisError as exc:
        raise Unhealthy(f"{what} at {shown} did not answer PING: {exc}") from None


def rspamd_ping(url: str, timeout: float = TIMEOUT) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    http(parts.hostname or "127.0.0.1", parts.port or 11333, "/ping", "rspamd", b"pong\n", timeout)


def file_present(path: Path, what: str) -> None:
    if not path.exists():
        raise Unhealthy(f"{what}: {path} does not exist yet")


def _host(address: str) -> str:
    return (
        "127.0.0.1" if address in ("0.0.0.0", "*", "") else ("::1" if address == "::" else address)
    )


def probes(settings: Settings) -> dict[str, Callable[[], None]]:
    """Each component's probe with its addresses from `settings`."""
    from txmail import store

    url = store.effective_url(settings)

    def redis() -> None:
        redis_ping(url, store.shown_url(url))

    def after_redis(check: Callable[[], None]) -> Callable[[], None]:
        def both() -> None:
            check()
            redis()

        return both

    policy_host, _, policy_port = settings.authpolicy.listen.rpartition(":")
    address = _host(settings.listen.address)
    found: dict[str, Callable[[], None]] = {
        "redis": redis,
        "milter": lambda: milter(settings.path(settings.milter.socket)),
        "policyd": lambda: policyd(settings.path(settings.policyd.socket)),
        "socketmap": lambda: socketmap(
            settings.path(settings.domains.socketmap), settings.bounce_domain
        ),
        "bounce-pipe": lambda: bounce_recorder(settings.path(settings.bounce_pipe.socket)),
        "tracker": lambda: http(address, settings.listen.http, "/healthz", "the tracker", b"ok\n"),
        "authpolicy": lambda: http(
            _host(policy_host.strip("[]")), int(policy_port), "/", "the login policy service"
        ),
        "dovecot": lambda: dovecot_auth(settings.sasl_socket),
        "postfix": lambda: smtp_banner(address, settings.listen.submission, "Postfix"),
        "authsync": after_redis(
            lambda: file_present(
                settings.path(settings.dovecot.passwd_file), "the passwd-file sync"
            )
        ),
        "maillog": after_redis(
            lambda: file_present(settings.path(settings.postfix.maillog), "the maillog follower")
        ),
        "webhooks": redis,
        "capture": lambda: smtp_banner(
            "127.0.0.1", settings.dev.capture_port, "the capture server"
        ),
    }
    if settings.spam.enabled:
        found["rspamd"] = lambda: rspamd_ping(settings.spam.listen_url)
    return found


def check(settings: Settings, component: str) -> str | None:
    """None when `component` answers, else the sentence saying what failed."""
    found = probes(settings)
    if component not in found:
        names = ", ".join(sorted(found))
        return f"no component named {component!r} (there are: {names})"
    try:
        found[component]()
    except Unhealthy as exc:
        return str(exc)
    return None
