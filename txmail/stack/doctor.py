"""txmail doctor: what on this node would stop a feature from working, one line each, with
the sentence that fixes it.

CHECKS
    keys         every secrets.* file and tls.key_file exists, holds a key and is mode 0600;
                 tls.cert_file exists. With redis.url set, a missing secrets.* file is a
                 cache `txmail up` writes from Redis (a warning), an error only when Redis
                 does not answer
    log          the maillog follower can read its source: maillog.path (or postfix.maillog)
                 for "file"; journalctl and a running systemd-journald for "journald"
    chroot       no master.cf service that runs chrooted (chroot column y, as in Debian's
                 stock master.cf) is pointed at one of txmail's sockets (milter, policy
                 service, return-path socketmap, Dovecot's auth) by an absolute path: inside
                 the jail that path names another file, so every message would be deferred
    redis        Redis answers (the private one only while `txmail up` runs)
    listening    txmail's daemons accept connections on their sockets (while `txmail up` runs)
    spam         with spam.enabled, rspamd is installed (an error: `up` could not run it); the
                 rspamd the milter asks answers its /ping (a warning)
    dns          every sending domain's DKIM and return-path records, and its bounce
                 address's SPF and MX, are published (dnspython, through txmail.dnscheck;
                 left out with --offline)

SEVERITY
    An error stops `txmail up` before it starts anything: the node could not do its job (a
    socket Postfix cannot reach, a log the follower cannot read, a key missing or readable by
    others). A warning does not: a DNS record not yet published, Redis not answering this
    moment (the daemons answer 4xx and wait for it). `txmail doctor` exits 1 on either.

Every check is a function of the settings and of its side effects (the file system, a
ping, Postfix's configuration as parsed values, a resolver, a command runner), so each runs
in a unit test; gather_postfix() and diagnose() read the machine.
"""

from __future__ import annotations

import dataclasses
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from txmail import dnscheck, store
from txmail.accounts.domains import Domain, Domains
from txmail.config import SecretsSettings, Settings
from txmail.errors import ConfigError, TemporaryFailure, TxmailError
from txmail.stack import install, render, rspamd
from txmail.stack.components import can_connect_unix
from txmail.store import secrets

KEY_BYTES = 16
# Postfix daemons, and the main.cf parameters (or prefixes) through which they use a socket.
USED_BY = {
    "smtpd": ("smtpd_", "milter_", "relay_domains"),
    "trivial-rewrite": ("transport_maps", "relay_domains"),
    "cleanup": ("non_smtpd_milters",),
}
Run = Callable[[list[str]], tuple[int, str]]


@dataclass(frozen=True)
class Problem:
    what: str  # what is wrong, naming the setting or file
    fix: str  # the sentence that mends it
    blocking: bool = True  # stops `txmail up`
    repaired_by_up: bool = False  # `txmail up` mends it itself (a key's mode)

    def line(self) -> str:
        return f"{'error' if self.blocking else 'warning'}: {self.what}; {self.fix}"


@dataclass(frozen=True)
class Service:
    """One master.cf service, with its -o overrides."""

    name: str
    kind: str
    chroot: str  # y, n or - (Postfix 3: n)
    command: str
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def chrooted(self) -> bool:
        return self.chroot == "y"


# -- keys --------------------------------------------------------------------------------


def key_in_redis(settings: Settings) -> Callable[[str], bool | None]:
    """Asks the configured Redis whether it holds a shared key (a secrets.* field name):
    True, False, or None when Redis does not answer (then it is not asked again)."""
    down = False

    def ask(name: str) -> bool | None:
        nonlocal down
        if down:
            return None
        try:
            client = store.connect(settings)
            try:
                key = store.Keys(settings.redis.prefix).secret(secrets.NAMES[name])
                return bool(client.hexists(key, "current"))
            finally:
                client.close()
        except (redis.RedisError, OSError, TxmailError):
            down = True
            return None

    return ask


def _missing_shared_key(
    settings: Settings, key: str, path: Path, in_redis: Callable[[str], bool | None]
) -> Problem:
    """A shared key's cache file is missing on a node with a configured Redis: the daemons
    fetch the key from Redis, so only a Redis that does not answer leaves the node keyless."""
    held = in_redis(key.removeprefix("secrets."))
    if held is None:
        return Problem(
            f"{key}: {path} does not exist and Redis at "
            f"{store.shown_url(settings.redis.url)} does not answer, so this node has no key",
            "start Redis or correct redis.url (a node fetches the installation's keys from "
            "Redis the first time it starts), or restore the file from another node",
        )
    return Problem(
        f"{key}: {path}, this node's cache of the key in Redis, does not exist",
        "`txmail up` writes it from Redis"
        if held
        else "`txmail up` creates the key in Redis, for every node, and writes it",
        blocking=False,
        repaired_by_up=True,
    )


def check_keys(
    settings: Settings, in_redis: Callable[[str], bool | None] | None = None
) -> list[Problem]:
    """The HMAC secrets and the TLS key: there, a key, 0600; the TLS certificate: there.
    With a configured Redis a missing secrets.* file is only a cache not written yet, unless
    Redis does not answer; `in_redis` (default: key_in_redis) says whether it holds a key."""
    files = [
        (f"secrets.{f.name}", settings.path(getattr(settings.secrets, f.name)))
        for f in dataclasses.fields(SecretsSettings)
    ]
    files.append(("tls.key_file", settings.path(settings.tls.key_file)))
    problems = []
    for key, path in files:
        try:
            st = path.stat()
            size = len(path.read_bytes().strip())
        except FileNotFoundError:
            if settings.redis.url and key.removeprefix("secrets.") in secrets.NAMES:
                in_redis = in_redis or key_in_redis(settings)
                problems.append(_missing_shared_key(settings, key, path, in_redis))
                continue
            problems.append(
                Problem(
                    f"{key}: {path} does not exist",
                    "restore it from a backup or from another node of this relay (a new "
                    "key would make what the old one signed invalid), or point "
                    f"{key} at it in txmail.toml",
                )
            )
            continue
        except OSError as exc:
            problems.append(
                Problem(f"{key}: cannot read {path} ({exc.strerror})", f"let root read {path}")
            )
            continue
        if size < KEY_BYTES and key.startswith("secrets."):
            problems.append(
                Problem(
                    f"{key}: {path} holds fewer than {KEY_BYTES} bytes",
                    "restore the key from a backup or from another node of this relay",
                )
            )
        if stat.S_IMODE(st.st_mode) & 0o077:
            problems.append(
                Problem(
                    f"{key}: {path} is mode {stat.S_IMODE(st.st_mode):04o}, others on this "
                    "machine can read it",
                    f"run `chmod 600 {path}` (and replace the key if someone may have read it)",
                    repaired_by_up=True,
                )
            )
    cert = settings.path(settings.tls.cert_file)
    if not cert.is_file():
        problems.append(
            Problem(
                f"tls.cert_file: {cert} does not exist",
                "point tls.cert_file at your certificate chain (or run `txmail init` for a "
                "self-signed one)",
            )
        )
    return problems


# -- the maillog follower's source -------------------------------------------------------


def _run(cmd: list[str]) -> tuple[int, str]:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return result.returncode, (result.stderr or result.stdout).strip()


def journald_socket(namespace: str) -> Path:
    return Path(f"/run/systemd/journal{f'.{namespace}' if namespace else ''}/socket")


def check_log(
    settings: Settings,
    which: Callable[[str], str | None] = shutil.which,
    run: Run = _run,
    exists: Callable[[Path], bool] = Path.exists,
) -> list[Problem]:
    """Whether the maillog follower can read where maillog.source points."""
    maillog = settings.maillog
    if maillog.source == "journald":
        journalctl = which("journalctl")
        if journalctl is None:
            return [
                Problem(
                    'maillog.source = "journald" but journalctl is not installed',
                    'install systemd\'s journalctl, or set maillog.source = "file" and '
                    "maillog.path to the file Postfix logs to",
                )
            ]
        socket = journald_socket(maillog.journal_namespace)
        if not exists(socket):
            return [
                Problem(
                    f"systemd-journald does not run here ({socket} is missing), so the "
                    "maillog follower gets no delivery lines",
                    "start systemd-journald (or its namespace), or set maillog.source = "
                    '"file" and maillog.path to the file Postfix logs to',
                )
            ]
        cmd = [journalctl, "--lines=0", "--quiet", "--no-pager"]
        if maillog.journal_namespace:
            cmd.append(f"--namespace={maillog.journal_namespace}")
        status, words = run(cmd)
        if status != 0:
            return [
                Problem(
                    f"journalctl cannot read the journal: {words[:200]}",
                    "run the follower as root or in group systemd-journal, or set "
                    'maillog.source = "file"',
                )
            ]
        return []
    path = settings.maillog_path
    if not path.parent.is_dir():
        return [
            Problem(
                f"the maillog follower's log {path} cannot exist: {path.parent} is no folder",
                "set maillog.path to the file Postfix logs to (`txmail postfix install` "
                'detects it), or maillog.source = "journald"',
            )
        ]
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        return [
            Problem(
                f"the maillog follower's log {path} does not exist yet",
                "check that Postfix logs there (its maillog_file, or the file the syslog "
                "daemon writes mail.* to) and set maillog.path if not; the follower waits "
                "for it",
                blocking=False,
            )
        ]
    except OSError as exc:
        return [
            Problem(
                f"the maillog follower cannot read {path} ({exc.strerror})",
                f"let root read {path}, or set maillog.path to the file Postfix logs to",
            )
        ]
    return []


# -- Postfix's services and txmail's sockets ---------------------------------------------


def txmail_sockets(settings: Settings) -> dict[str, Path]:
    """The sockets Postfix connects to, by what listens there (the paths render.py writes)."""
    return {
        "the milter": settings.path(settings.milter.socket),
        "the policy service": settings.path(settings.policyd.socket),
        "the return-path socketmap": settings.path(settings.domains.socketmap),
        "Dovecot's auth socket": settings.sasl_socket,
    }


def check_chroot(
    settings: Settings,
    main: dict[str, str],
    services: Iterable[Service],
    queue_directory: str,
    config_dir: Path,
) -> list[Problem]:
    """Chrooted services that are pointed at a txmail socket by its absolute path."""
    sockets = txmail_sockets(settings)
    problems = []
    for service in services:
        prefixes = USED_BY.get(service.command)
        if not service.chrooted or prefixes is None:
            continue
        params = {**main, **service.overrides}
        for label, path in sockets.items():
            used = sorted(
                name
                for name, value in params.items()
                if name.startswith(prefixes) and str(path) in value
            )
            if not used:
                continue
            key = f"{service.name}/{service.kind}"
            problems.append(
                Problem(
                    f"master.cf service {key} ({service.command}) runs chrooted in "
                    f"{queue_directory} and cannot reach {label} {path} ({', '.join(used)})",
                    f"run `postconf -c {config_dir} -F '{key}/chroot = n'` and `postfix reload`",
                )
            )
    return problems


def _overrides(args: list[str]) -> dict[str, str]:
    """The -o name=value (or -o {name = value}) pairs of a master.cf command."""
    found = {}
    for flag, pair in zip(args, args[1:], strict=False):
        if flag != "-o":
            continue
        name, _, value = pair.strip("{}").partition("=")
        found[name.strip()] = value.strip()
    return found


def gather_postfix(config_dir: Path) -> tuple[dict[str, str], list[Service], str]:
    """main.cf's parameters, master.cf's services and the queue directory of a Postfix."""
    main = install.parameters(config_dir)
    services = [
        Service(e.name, e.kind, e.fields[2], e.fields[5], _overrides(e.args))
        for e in install.master_entries(config_dir)
    ]
    queue = install.postconf(config_dir, "-h", "queue_directory").strip()
    return main, services, queue


def postfix_config_dir(settings: Settings) -> Path | None:
    """The Postfix that talks to this node: the operator's, else txmail's own (once rendered)."""
    if settings.postfix.config_directory:
        return Path(settings.postfix.config_directory)
    own = render.postfix_config_dir(settings)
    return own if (own / "main.cf").exists() else None


def check_postfix(settings: Settings, config_dir: Path | None) -> list[Problem]:
    if config_dir is None:
        return []
    try:
        main, services, queue = gather_postfix(config_dir)
    except ConfigError as exc:
        return [
            Problem(
                f"cannot read the Postfix configuration in {config_dir}: {exc}",
                "fix main.cf/master.cf there, or postfix.config_directory in txmail.toml",
            )
        ]
    return check_chroot(settings, main, services, queue, config_dir)


# -- the running node --------------------------------------------------------------------


def _ping(settings: Settings) -> None:
    client = store.connect(settings)
    try:
        client.ping()
    finally:
        client.close()


def check_redis(settings: Settings, ping: Callable[[], object]) -> list[Problem]:
    try:
        ping()
    except (redis.RedisError, OSError, TxmailError) as exc:
        url = store.shown_url(store.effective_url(settings))
        fix = (
            "start the node with `txmail up`, which runs this private Redis"
            if not settings.redis.url
            else "start that Redis, or correct redis.url"
        )
        return [Problem(f"Redis at {url} does not answer ({exc})", fix, blocking=False)]
    return []


def check_listening(
    settings: Settings, connect: Callable[[Path], bool] = can_connect_unix
) -> list[Problem]:
    """txmail's daemons accept connections where Postfix looks for them."""
    return [
        Problem(
            f"nothing accepts connections on {label} {path}, so Postfix defers mail",
            "start the node (`txmail up`, or systemctl start txmail) and see its log folder",
            blocking=False,
        )
        for label, path in txmail_sockets(settings).items()
        if not connect(path)
    ]


def check_dns(
    settings: Settings, domains: Iterable[Domain], resolve: dnscheck.Resolve
) -> list[Problem]:
    """Every sending domain's DKIM keys, return-path subdomain, and its bounce address's SPF
    and MX are in DNS (the checks of `txmail domains verify`)."""
    problems = []
    for domain in domains:
        try:
            checks = [dnscheck.check_dkim(domain.name, k, resolve) for k in domain.dkim]
            if domain.return_path:
                checks.append(
                    dnscheck.check_return_path(domain.return_path, settings.hostname, resolve)
                )
            checks += dnscheck.check_bounce_host(domain, settings, resolve)
        except TemporaryFailure as exc:
            problems.append(
                Problem(
                    f"DNS did not answer ({exc})",
                    "check domains.nameservers and the network, or run with --offline",
                    blocking=False,
                )
            )
            break  # the next domains would wait for the same silent server
        except TxmailError as exc:  # one domain's trouble never hides the others'
            problems.append(
                Problem(
                    f"{domain.name}: its DNS records could not be checked ({exc})",
                    f"run `txmail domains verify {domain.name}` and correct what it names",
                    blocking=False,
                )
            )
            continue
        for check in checks:
            if check.ok:
                continue
            record = check.publish
            state = "is not published" if check.state == dnscheck.MISSING else "is wrong"
            problems.append(
                Problem(
                    f"{domain.name}: the {check.what} record {check.name} {state} "
                    f"(found {check.found})",
                    f'publish {record.name} {record.kind} "{record.value}", then run '
                    f"`txmail domains verify {domain.name}`",
                    blocking=False,
                )
            )
    return problems


# -- together ----------------------------------------------------------------------------


def check_spam(settings: Settings) -> list[Problem]:
    """With spam.enabled, `txmail up` runs Debian's rspamd: it must be installed."""
    why = rspamd.missing(settings)
    if not why:
        return []
    return [
        Problem(
            f"spam.enabled is on but {why}, so `txmail up` cannot run the spam check",
            "install it (`apt-get install rspamd`) or set spam.enabled = false",
        )
    ]


def check_spam_answers(
    settings: Settings, ping: Callable[[str], bool] = rspamd.ping
) -> list[Problem]:
    """The rspamd the milter asks answers (while the node runs)."""
    url = settings.spam.url
    if not url or ping(url):
        return []
    fix = (
        "start the node (`txmail up` runs it) and see its log folder (rspamd.log)"
        if settings.spam.enabled and not settings.spam.rspamd_url
        else "start that rspamd, or correct spam.rspamd_url"
    )
    return [
        Problem(
            f"rspamd at {url} does not answer, so the milter answers 4xx to every message"
            if settings.spam.on_failure == "tempfail"
            else f"rspamd at {url} does not answer, so mail goes on without a spam check",
            fix,
            blocking=False,
        )
    ]


def startup_problems(settings: Settings, config_dir: Path | None) -> list[Problem]:
    """What `txmail up` checks before it starts anything (after prepare() has made the state
    directory): the keys, the log source, Postfix's reach, rspamd when spam.enabled, and a
    Redis it does not run."""
    problems = [
        *check_keys(settings),
        *check_log(settings),
        *check_postfix(settings, config_dir),
        *check_spam(settings),
    ]
    if settings.redis.url:
        problems += check_redis(settings, lambda: _ping(settings))
    return problems


def diagnose(
    settings: Settings,
    offline: bool,
    list_domains: Callable[[], list[Domain]] | None = None,
    resolve: dnscheck.Resolve | None = None,
) -> list[Problem]:
    """Everything `txmail doctor` checks."""
    problems = [
        *check_keys(settings),
        *check_log(settings),
        *check_postfix(settings, postfix_config_dir(settings)),
        *check_spam(settings),
    ]
    if not check_spam(settings):
        problems += check_spam_answers(settings)
    redis_down = check_redis(settings, lambda: _ping(settings))
    problems += redis_down
    problems += check_listening(settings)
    if not offline and not redis_down:
        if list_domains is None:
            client = store.connect(settings)
            list_domains = Domains(client, store.Keys(settings.redis.prefix)).list
        resolve = resolve or dnscheck.resolver(list(settings.domains.nameservers))
        try:
            domains = list_domains()
        except TxmailError as exc:
            problems.append(Problem(f"cannot list the domains ({exc})", "see Redis", False))
            domains = []
        problems += check_dns(settings, domains, resolve)
    return problems
