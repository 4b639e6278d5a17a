"""`txmail up`: prepare the state directory, start every component of a node, keep them running.

Before anything starts, `txmail doctor`'s local checks run (stack/doctor.py): an error
(a key missing, a log the maillog follower cannot read, a socket a chrooted Postfix service
cannot reach) stops `up` with one line each; a warning is logged.
Order: Redis (unless redis.url is set), rspamd (when spam.enabled: stack/rspamd.py), the
passwd-file sync, Dovecot, the milter, the return-path socketmap, the policy daemon, the
maillog follower, the webhooks dispatcher, the tracker, the capture server (--dev) and finally
Postfix, so Postfix never accepts mail before its helpers listen.
Nothing but Redis starts on data of another schema version than this
code's (store/schema.py): `up` writes it when absent and stops with a sentence otherwise.
Prints `txmail ready: ...` once every component accepts connections. A component that dies is
logged and restarted with a growing delay. SIGINT/SIGTERM stop everything in reverse order and
remove the sockets, so nothing is left behind.

Reads:  the Settings and the templates (render.py).
Writes: STATE/{postfix,dovecot,redis,rspamd,run,log}; each component's output, named, to
        standard error (log.destination = "stderr") or STATE/log/NAME.log (0640, "files"):
        relay.py.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import txmail
from txmail import reach, store
from txmail.config import Settings
from txmail.errors import ConfigError, StoreUnavailable, TxmailError
from txmail.files import write_secret
from txmail.stack import components as components_mod
from txmail.stack import doctor, relay, render, rspamd, sdnotify
from txmail.stack.components import (
    Component,
    PostfixComponent,
    ProcessComponent,
    can_connect_unix,
)
from txmail.store import secrets

log = logging.getLogger("txmail.up")

READY_TIMEOUT = 60.0
# Components that need Redis (and rspamd, Dovecot) up but not one another: consecutive ones in
# build()'s order start together. Dovecot waits for authsync's file and authpolicy; Postfix,
# last, for the milter, policyd, the socketmap and Dovecot.
TOGETHER = frozenset(
    {"authsync", "authpolicy", "milter", "socketmap", "policyd", "bounce-pipe", "maillog",
     "webhooks", "tracker", "capture"}
)  # fmt: skip
MAX_BACKOFF = 30.0


def ensure_user(name: str) -> None:
    """Create an unprivileged system user (and group): settings.user, which runs Postfix's
    bounce pipe and the parser workers, or redis_user(), which runs the private Redis."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
            capture_output=True,
        )


def redis_user(settings: Settings) -> str:
    """The user of the private Redis: not settings.user, so a process that parses hostile
    mail can reach neither the socket nor the data."""
    return f"{settings.user}-redis"


def check_reach(settings: Settings, config_file: Path) -> None:
    """Refuse a state directory (or a configuration, or a socket's folder) that a component
    run as another user cannot reach: Postfix, Dovecot, the bounce pipe and the private Redis
    open their files and sockets by full path, so every folder on the way must let them pass
    (reach.py; not a checkout under /root). The socket folders themselves are left to
    prepare(), which sets their owners and modes."""
    pipe = (settings.user, "the bounce pipe")
    postfix = ("postfix", "Postfix")
    in_state = [postfix, ("dovecot", "Dovecot"), pipe]
    if not settings.redis.url:
        in_state.append((redis_user(settings), "the private Redis"))
    if settings.spam.enabled:  # its workers read STATE/rspamd as _rspamd
        in_state.append((rspamd.USER, "rspamd's workers"))
    state = settings.state_path
    needs = [
        (
            f"the state directory {state}",
            state,
            in_state,
            "choose a state directory every user may pass (`txmail init --state-dir "
            "/var/lib/txmail`)",
        ),
        (
            f"the configuration {config_file}",
            config_file,
            [pipe],
            "keep the configuration where every user may pass (in the state directory)",
        ),
    ]
    for socket, users in (
        (settings.bounce_pipe.socket, [pipe]),
        (settings.milter.socket, [postfix]),
        (settings.policyd.socket, [postfix]),
        (settings.domains.socketmap, [postfix]),
    ):
        path = settings.path(socket)
        elsewhere = "put the socket where every user may pass (in the state directory)"
        needs.append((f"the socket {path}", path.parent.parent, users, elsewhere))
    for what, path, users, elsewhere in needs:
        closed = [
            (folder, f"{name} ({runs})")
            for name, runs in users
            if (folder := reach.closed_folder(path, reach.passer(name))) is not None
        ]
        if closed:
            raise ConfigError(reach_sentence(what, closed, elsewhere))


def reach_sentence(what: str, closed: list[tuple[Path, str]], elsewhere: str) -> str:
    """One sentence: `what` is behind a folder these users may not pass, and the fix."""
    folder = closed[0][0]
    who = [shown for f, shown in closed if f == folder]
    names = ", ".join(who[:-1]) + (" and " if len(who) > 1 else "") + who[-1]
    if reach.holds(folder, Path(txmail.__file__).parent):  # `make run` in a checkout there
        elsewhere = (
            f"move the checkout, with its state and venv, out of {folder} (to /srv/txmail, say)"
        )
    return (
        f"{what} is behind {reach.describe(folder)}, which the "
        f"user{'s' if len(who) > 1 else ''} {names} may not pass: {elsewhere} or let them "
        f"pass with `chmod o+x {folder}`"
    )


def postfix_socket_dirs(settings: Settings) -> list[Path]:
    """The folders of the sockets Postfix connects to (milter, socketmap, policy service;
    Dovecot's SASL listener too when installed into an external Postfix): root and the
    mail_owner's group only.

    Fails: ConfigError when a socket setting names a folder that is not txmail's
    (socket_folder() says which are)."""
    sockets = {
        "milter.socket": settings.path(settings.milter.socket),
        "domains.socketmap": settings.path(settings.domains.socketmap),
        "policyd.socket": settings.path(settings.policyd.socket),
    }
    if settings.external_postfix:
        sockets["postfix.queue_directory (Dovecot's SASL listener)"] = settings.sasl_socket
    return list(dict.fromkeys(socket_folder(settings, k, p) for k, p in sockets.items()))


def socket_folder(settings: Settings, setting: str, socket: Path) -> Path:
    """The folder of `socket`, which prepare() creates and gives its own owner and mode: it
    must lie below the state directory's run/ or be (or lie below) the queue directory's
    txmail/ folder. Anything else may be somebody else's (`milter.socket =
    "/var/spool/postfix/milter.sock"` would close the queue directory to Postfix's own
    daemons), so it is refused rather than changed."""
    folder = socket.parent.resolve()
    run = (settings.state_path / "run").resolve()
    queue_folder = (settings.postfix_queue_path / "txmail").resolve()
    if folder.is_relative_to(queue_folder) or (folder != run and folder.is_relative_to(run)):
        return folder
    raise ConfigError(
        f"{setting} = {str(socket)!r} is in {folder}, a folder txmail does not manage; put "
        f"the socket in a folder below {run} or in {queue_folder}"
    )


def cache_shared_keys(settings: Settings) -> None:
    """A node with a configured Redis fetches the installation's keys into its cache files
    (0600) before they are checked: a node that joined while Redis was away has none yet, and
    a stale one is replaced. A Redis that does not answer leaves them as they are, and
    check_files() says whether the node can start without it."""
    if not settings.redis.url:
        # The private Redis starts later, and takes its keys from these files. A node made
        # before the console has no console key yet: a new one cuts off nothing that lived
        # (it signs console sessions and operator tokens alone).
        write_secret(settings.path(settings.secrets.console_key_file))
        return
    client = store.connect(settings)
    try:
        secrets.cache_keys(settings, client)
    except StoreUnavailable:
        pass
    finally:
        client.close()


def check_files(settings: Settings) -> None:
    """The keys and the certificate are there (their modes are mended by prepare())."""
    stop_on([p for p in doctor.check_keys(settings) if not p.repaired_by_up])


def stop_on(problems: list[doctor.Problem]) -> None:
    """Log the warnings; raise ConfigError (exit 2) with one line per error, if any: the
    lines `txmail doctor` prints."""
    for problem in problems:
        if not problem.blocking:
            log.warning("%s", problem.line())
    errors = [f"{p.what}; {p.fix}" for p in problems if p.blocking]
    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigError(f"{len(errors)} problems stop the node:\n  " + "\n  ".join(errors))


def prepare(
    settings: Settings, config_file: Path, checks: Sequence[Callable[[Settings], None]] = ()
) -> None:
    """Create directories with the owners Postfix, Dovecot and Redis need; render configs.

    Who may read what: the keys are root's alone (0600). The private Redis runs as its own
    user (redis_user()), whose socket and data nobody else can enter. settings.user (Postfix's
    bounce pipe) may read the configuration and enter the folder of the recorder's socket;
    the parser workers run with its uid but group nogroup, so not even that. Logs, which name
    recipients and login names, are 0640 root:root."""
    check_reach(settings, config_file)
    cache_shared_keys(settings)
    check_files(settings)
    ensure_user(settings.user)
    user = pwd.getpwnam(settings.user)
    for check in checks:  # the daemons' own start-up checks (the CLI passes them)
        check(settings)
    owner = pwd.getpwnam(render.mail_owner(settings))
    postfix_uid, postfix_gid = owner.pw_uid, owner.pw_gid
    state = settings.state_path
    bounce_dir = socket_folder(
        settings, "bounce_pipe.socket", settings.path(settings.bounce_pipe.socket)
    )
    dirs = [
        ("log", 0o750, 0, 0),
        ("run", 0o755, 0, 0),
        *((str(folder), 0o750, 0, postfix_gid) for folder in postfix_socket_dirs(settings)),
        ("dovecot", 0o755, 0, 0),
        ("postfix", 0o755, 0, 0),
        ("postfix/spool", 0o755, 0, 0),
        ("postfix/data", 0o700, postfix_uid, postfix_gid),
    ]
    for sub, mode, uid, gid in dirs:
        path = state / sub
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
        path.chmod(mode)
    if not settings.redis.url:
        prepare_private_redis(settings)
    for key in secrets.NAMES:
        path = settings.path(getattr(settings.secrets, key))
        if path.exists():  # else a cache the daemons write from Redis (check_files)
            os.chown(path, 0, 0)
            path.chmod(0o600)
    if store.holds_password(settings.redis.url):
        # The bounce pipe runs as the txmail user and reads this file (for its socket's
        # path); the parser workers, of group nogroup, cannot.
        os.chown(config_file, 0, user.pw_gid)
        config_file.chmod(0o640)
    # Postfix's maillog_file: postlogd appends to it and keeps the mode of the file it finds.
    maillog = settings.path(settings.postfix.maillog)
    maillog.parent.mkdir(parents=True, exist_ok=True)
    for path in [maillog, *(state / "log").glob("*.log")]:
        path.touch(exist_ok=True)
        os.chown(path, 0, 0)
        path.chmod(0o640)
    # The recorder (`txmail bounces serve`, root) listens here for Postfix's pipe processes,
    # which run as the txmail user: only that group may enter.
    bounce_dir.mkdir(parents=True, exist_ok=True)
    os.chown(bounce_dir, 0, user.pw_gid)
    bounce_dir.chmod(0o750)
    config_dir = render.render_postfix(settings, config_file)
    render.check_postfix(config_dir)
    render.render_dovecot(settings, config_file)
    if not settings.redis.url:
        render.render_redis(settings, config_file)
    if settings.spam.enabled:
        stop_on(doctor.check_spam(settings))  # not installed: the line `txmail doctor` prints
        rspamd.render(settings)


def prepare_private_redis(settings: Settings) -> None:
    """The folders of the private Redis (no redis.url), as its own user needs them: its
    socket's (0750) and its data's (0700), and the AOF and RDB files of a node whose Redis ran
    as another user given to it. `up` and `txmail backup`/`restore` both start it so."""
    ensure_user(redis_user(settings))
    owner = pwd.getpwnam(redis_user(settings))
    state = settings.state_path
    for sub, mode, uid, gid in (
        ("run", 0o755, 0, 0),
        ("log", 0o750, 0, 0),
        ("run/redis", 0o750, owner.pw_uid, owner.pw_gid),
        ("redis", 0o700, owner.pw_uid, owner.pw_gid),
    ):
        path = state / sub
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
        path.chmod(mode)
    for path in (state / "redis").rglob("*"):
        os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)


def private_redis(settings: Settings) -> ProcessComponent:
    """The private Redis as a component: run as redis_user(), ready when its socket answers."""
    state = settings.state_path
    socket = state / "run/redis/redis.sock"
    return ProcessComponent(
        "redis",
        ["redis-server", str(state / "redis/redis.conf")],
        state / "log",
        ready=lambda: can_connect_unix(socket),
        user=redis_user(settings),
    )


def refuse_to_start(settings: Settings, external_postfix: bool) -> None:
    """`txmail doctor`'s checks that need no running node: errors stop `up` before anything
    starts (ConfigError, exit 2, one line each), warnings are logged."""
    operator = settings.postfix.config_directory
    if external_postfix:  # the operator's, once `txmail postfix install` has recorded it
        config_dir = Path(operator) if operator else None
    else:
        config_dir = render.postfix_config_dir(settings)
    stop_on(doctor.startup_problems(settings, config_dir))


def build(
    settings: Settings, config_file: Path, dev: bool, external_postfix: bool = False
) -> list[Component]:
    state = settings.state_path
    log_dir = state / "log"
    python = sys.executable
    env = dict(os.environ, TXMAIL_CONFIG=str(config_file.resolve()), PYTHONUNBUFFERED="1")
    txmail = [python, "-m", "txmail", "--config", str(config_file.resolve())]
    components: list[Component] = []
    if not settings.redis.url:
        components.append(private_redis(settings))
    if settings.spam.enabled:
        # The spam check (stack/rspamd.py): up before the milter, which asks it at end of data.
        spam_url = settings.spam.listen_url
        components.append(
            ProcessComponent(
                "rspamd",
                rspamd.argv(rspamd.folder_of(settings)),
                log_dir,
                ready=lambda: rspamd.ping(spam_url),
            )
        )
    passwd_file = settings.path(settings.dovecot.passwd_file)
    components.append(
        ProcessComponent(
            "authsync", [*txmail, "authsync"], log_dir, ready=passwd_file.exists, env=env
        )
    )
    # Dovecot asks it before each password check (the per-login guessing limit); it starts
    # first so Dovecot's first logins find it (without it they go on unlimited).
    policy_host, _, policy_port = settings.authpolicy.listen.rpartition(":")
    components.append(
        ProcessComponent(
            "authpolicy",
            [*txmail, "authpolicy"],
            log_dir,
            ready=lambda: components_mod.can_connect_tcp(policy_host.strip("[]"), int(policy_port)),
            env=env,
        )
    )
    auth_sock = settings.sasl_socket
    components.append(
        ProcessComponent(
            "dovecot",
            ["dovecot", "-F", "-c", str(state / "dovecot/dovecot.conf")],
            log_dir,
            ready=lambda: can_connect_unix(auth_sock),
        )
    )
    postfix_group = render.mail_owner_group(settings)
    milter_sock = settings.path(settings.milter.socket)
    # The milter runs with Postfix's group (mail_owner's) and umask 007 so only Postfix can use
    # its socket.
    components.append(
        ProcessComponent(
            "milter",
            [*txmail, "milter"],
            log_dir,
            ready=lambda: can_connect_unix(milter_sock),
            env=env,
            group=postfix_group,
            umask=0o007,
        )
    )
    # Postfix asks it which domains are return-path domains (relay_domains, transport_maps).
    socketmap_sock = settings.path(settings.domains.socketmap)
    components.append(
        ProcessComponent(
            "socketmap",
            [*txmail, "socketmap"],
            log_dir,
            ready=lambda: can_connect_unix(socketmap_sock),
            env=env,
            group=postfix_group,
            umask=0o007,
        )
    )
    # Postfix asks it at RCPT and at end of data whether the account is within its limits.
    policyd_sock = settings.path(settings.policyd.socket)
    components.append(
        ProcessComponent(
            "policyd",
            [*txmail, "policyd"],
            log_dir,
            ready=lambda: can_connect_unix(policyd_sock),
            env=env,
            group=postfix_group,
            umask=0o007,
        )
    )
    # Returned mail: each pipe(8) process (settings.user) hands its mail to this recorder
    # (bounce_pipe/handoff.py). It runs as root with the group of the pipe's user, for its
    # socket, and has its parser workers, as settings.user, parse the mail (server.py).
    bounce_sock = settings.path(settings.bounce_pipe.socket)
    components.append(
        ProcessComponent(
            "bounce-pipe",
            [*txmail, "bounces", "serve"],
            log_dir,
            ready=lambda: can_connect_unix(bounce_sock),
            env=env,
            group=settings.user,
            umask=0o027,
        )
    )
    # Events: delivery and deferral lines of the maillog, and the webhook posts of every event.
    components.append(
        ProcessComponent("maillog", [*txmail, "maillog"], log_dir, ready=lambda: True, env=env)
    )
    components.append(
        ProcessComponent(
            "webhooks", [*txmail, "webhooks", "run"], log_dir, ready=lambda: True, env=env
        )
    )
    # Opens, clicks, the HTTP send API and /metrics; ready when its HTTP port accepts.
    http = (
        settings.listen.address if settings.listen.address not in ("0.0.0.0", "*") else "127.0.0.1",
        settings.listen.http,
    )
    components.append(
        ProcessComponent(
            "tracker",
            [*txmail, "tracker"],
            log_dir,
            ready=lambda: components_mod.can_connect_tcp(*http),
            env=env,
        )
    )
    if dev:
        port = settings.dev.capture_port
        from txmail.stack.components import can_connect_tcp

        components.append(
            ProcessComponent(
                "capture",
                [*txmail, "capture"],
                log_dir,
                ready=lambda: can_connect_tcp("127.0.0.1", port),
                env=env,
            )
        )
    if external_postfix:  # the operator's postfix.service runs it (txmail postfix install)
        return components
    listeners = [
        (settings.listen.address, p)
        for p in (settings.listen.smtp, settings.listen.submission, settings.listen.submissions)
    ]
    components.append(
        PostfixComponent(
            render.postfix_config_dir(settings),
            state / "postfix/spool",
            listeners,
            settings.path(settings.postfix.maillog),
        )
    )
    return components


def ready_line(settings: Settings, dev: bool, external_postfix: bool = False) -> str:
    a = settings.listen.address
    smtp = "the operator's Postfix" if external_postfix else f"{a}:{settings.listen.smtp}"
    parts = [
        f"smtp {smtp}",
        f"submission {a}:{settings.listen.submission} (STARTTLS+AUTH)",
        f"submissions {a}:{settings.listen.submissions} (TLS+AUTH)",
        f"redis {store.shown_url(store.effective_url(settings))}",
    ]
    if dev:
        parts.append(
            f"capture 127.0.0.1:{settings.dev.capture_port} -> "
            f"{settings.path(settings.dev.capture_dir)}"
        )
    return "txmail ready: " + ", ".join(parts)


def announce_ready(line: str, notifier: sdnotify.Notifier) -> None:
    """Print the ready line, and tell systemd (READY=1) when it runs `up` as Type=notify."""
    print(line, flush=True)
    notifier.ready(line)


class Supervisor:
    def __init__(self, components: list[Component]) -> None:
        self.components = components
        self.stopping = False
        self.next_start: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        # component name -> a check to run once it is ready (before the next one starts)
        self.after_ready: dict[str, Callable[[], None]] = {}

    def request_stop(self, signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        self.stopping = True

    def start_all(self) -> None:
        """In order, each ready before the next starts; but a run of components that need
        only what came before them, not one another (TOGETHER), starts at once and is waited
        for together: each is a Python process with about a second of imports, so seven
        start in the time of two or three."""
        for wave in self.waves():
            if self.stopping:
                return
            for component in wave:
                log.info("starting %s", component.name)
                component.start()
            for component in wave:
                self.wait_ready(component)
                if not self.stopping and component.name in self.after_ready:
                    self.after_ready[component.name]()

    def waves(self) -> list[list[Component]]:
        made: list[list[Component]] = []
        for component in self.components:
            if made and component.name in TOGETHER and made[-1][-1].name in TOGETHER:
                made[-1].append(component)
            else:
                made.append([component])
        return made

    def wait_ready(self, component: Component) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not component.ready():
            if self.stopping:
                return
            if not component.alive():
                raise TxmailError(
                    f"{component.name} {component.exit_status()} while starting; "
                    f"see {component.where_logged()}"
                )
            if time.monotonic() > deadline:
                raise TxmailError(
                    f"{component.name} did not accept connections within "
                    f"{READY_TIMEOUT:.0f} s; see {component.where_logged()}"
                )
            time.sleep(0.05)

    def watch(self) -> None:
        """Restart components that die, until a stop is requested."""
        while not self.stopping:
            now = time.monotonic()
            for component in self.components:
                if self.stopping or component.alive():
                    continue
                name = component.name
                if name not in self.next_start:
                    delay = self.backoff.get(name, 0.5)
                    log.warning("%s %s; restarting in %.1f s", name, component.exit_status(), delay)
                    self.next_start[name] = now + delay
                    self.backoff[name] = min(delay * 2, MAX_BACKOFF)
                elif now >= self.next_start[name]:
                    del self.next_start[name]
                    try:
                        component.start()
                        component.restarts += 1
                    except (OSError, RuntimeError) as exc:
                        log.error("%s could not be restarted: %s", name, exc)
            for component in self.components:
                if component.alive() and component.name in self.backoff and component.ready():
                    # Healthy again: the next failure starts with a short delay.
                    self.backoff.pop(component.name, None)
            time.sleep(0.2)

    def stop_all(self) -> None:
        """Postfix first (no new mail, nothing in flight through the milter or policyd), then
        every other component at once, Redis last (the others write what they hold to it as
        they stop). One after another, a node took about a second a component to stop."""
        ordered = list(reversed(self.components))
        first = [c for c in ordered if c.name == "postfix"]
        last = [c for c in ordered if c.name == "redis"]
        middle = [c for c in ordered if c not in first and c not in last]
        for group in (first, middle, last):
            stoppers = [
                threading.Thread(target=self._stop_one, args=(c,), name=f"stop-{c.name}")
                for c in group
            ]
            for thread in stoppers:
                thread.start()
            for thread in stoppers:
                thread.join()

    @staticmethod
    def _stop_one(component: Component) -> None:
        try:
            component.stop()
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            log.error("stopping %s: %s", component.name, exc)


def check_schema(
    settings: Settings,
    connect: Callable[[Settings], Any] = store.connect,
    sleep: Callable[[float], None] = time.sleep,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Write the schema version when absent; ConfigError (stop) when this code cannot run on
    the data's. Nothing else starts before the check is done: a Redis that does not answer
    yet is asked again, 1 s, 2 s, 4 s ... up to MAX_BACKOFF apart, with a log line each time,
    until it answers or `stopping()` says `up` is being stopped."""
    from txmail.store import schema

    delay = 1.0
    while True:
        client = connect(settings)
        try:
            schema.ensure(client, store.Keys(settings.redis.prefix))
            return
        except StoreUnavailable as exc:
            log.warning(
                "schema version not checked yet, nothing else starts before it is: %s; "
                "asking again in %.0f s",
                exc,
                delay,
            )
        finally:
            client.close()
        if stopping():
            return
        sleep(delay)
        if stopping():
            return
        delay = min(delay * 2, MAX_BACKOFF)


def cleanup_sockets(settings: Settings) -> None:
    run = settings.state_path / "run"
    for path in (
        settings.path(settings.milter.socket),
        run / "redis/redis.sock",
        settings.path(settings.domains.socketmap),
        settings.path(settings.policyd.socket),
        settings.sasl_socket,
    ):
        path.unlink(missing_ok=True)
    shutil.rmtree(run / "dovecot", ignore_errors=True)


def up(
    settings: Settings,
    config_file: Path,
    dev: bool,
    external_postfix: bool = False,
    only: tuple[str, ...] = (),
    checks: Sequence[Callable[[Settings], None]] = (),
) -> int:
    notifier = sdnotify.Notifier.from_environ()  # systemd Type=notify; no child inherits it
    # Installed into the operator's Postfix (postfix.queue_directory is set): never start an
    # instance of txmail's own beside it.
    external_postfix = external_postfix or settings.external_postfix
    routing = relay.Routing(
        settings.log.format, settings.log.destination, settings.state_path / "log"
    )
    routing.take_over_logging()
    prepare(settings, config_file, checks)
    refuse_to_start(settings, external_postfix)
    if dev and not external_postfix:
        settings_dev_relay(settings)
    components = build(settings, config_file, dev, external_postfix)
    for component in components:
        if isinstance(component, ProcessComponent):
            component.routing = routing
    if only:  # one component per container (compose.yaml); they meet in the state volume
        unknown = set(only) - {c.name for c in components}
        if unknown:
            raise ConfigError(
                f"--only: no component named {', '.join(sorted(unknown))} "
                f"(there are: {', '.join(c.name for c in components)})"
            )
        components = [c for c in components if c.name in only]
    if settings.log.destination == "stderr" and any(c.name == "postfix" for c in components):
        # Postfix logs into its maillog_file (the maillog follower reads it): its new lines
        # are passed on too, so journald and `docker compose logs` show all of the node.
        routing.tail_file("postfix", settings.path(settings.postfix.maillog))
    supervisor = Supervisor(components)
    if any(c.name == "redis" for c in components):  # the private Redis: once it answers
        supervisor.after_ready["redis"] = lambda: check_schema(
            settings, stopping=lambda: supervisor.stopping
        )
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    if not any(c.name == "redis" for c in components):
        check_schema(settings, stopping=lambda: supervisor.stopping)
    try:
        supervisor.start_all()
        if not supervisor.stopping:
            if dev:
                from txmail.stack.demo import ensure_demo_account

                print(ensure_demo_account(settings), flush=True)
            announce_ready(ready_line(settings, dev, external_postfix), notifier)
            supervisor.watch()
    finally:
        notifier.stopping()
        supervisor.stop_all()
        cleanup_sockets(settings)
        routing.drain()
        log.info("stopped")
    return 0


def settings_dev_relay(settings: Settings) -> None:
    """In --dev mode without a relayhost, mail goes to the capture server, never the internet."""
    if settings.postfix.relayhost:
        return
    config_dir = render.postfix_config_dir(settings)
    subprocess.run(
        [
            "postconf",
            "-c",
            str(config_dir),
            "-e",
            f"relayhost = [127.0.0.1]:{settings.dev.capture_port}",
        ],
        check=True,
    )
    render.render_routes(config_dir, f"[127.0.0.1]:{settings.dev.capture_port}")
