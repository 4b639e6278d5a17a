"""txmail postfix install: merge what txmail needs into an operator's existing Postfix.

txmail normally renders a Postfix instance of its own (render.py). An operator who already runs
Postfix can instead install txmail into it. The configuration is derived from the same rendered
main.cf and master.cf, parameter by parameter:

  * smtpd_* and milter_* settings go on txmail's own listeners (587, 465, the trusted one) as
    `-o` overrides, so the operator's port 25 and other services are left exactly as they are;
  * list-valued settings txmail extends (relay_domains, transport_maps, milter_header_checks)
    are merged: the operator's entries are kept, txmail's are added once;
  * a few global settings are set (long queue ids, the bounce pipe's recipient limit, the
    priority/digest transports' pacing, VRFY off); message_size_limit only ever grows;
  * the operator's port 25 now takes txmail's bounces, so what must hold there is made global:
    VRFY is off (disable_vrfy_command) and, unless the operator restricts ETRN already
    (smtpd_etrn_restrictions), ETRN is refused. The recipient limits of txmail's own port 25
    (master.cf) are left to the operator, as a note in the plan;
  * the instance settings of txmail's own Postfix (queue and data directories, myhostname,
    relayhost, logging, TLS client policy, ...) are the operator's business and are skipped.

The result is a list of `postconf -e` and `postconf -M -e` commands. `--dry-run` prints them;
otherwise main.cf and master.cf are backed up, the commands are applied to a copy first and
checked with `postconf -n` and `postconf -M` (a warning is an error), then applied for real.
A txmail.service systemd unit runs `txmail up --external-postfix` (every txmail daemon, but
not Postfix, which the operator's postfix.service runs).

Fails: ConfigError naming the conflicting service or the parameter Postfix refused; nothing is
changed in that case.
"""

from __future__ import annotations

import dataclasses
import filecmp
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from txmail import config as config_mod
from txmail.config import Settings
from txmail.errors import ConfigError
from txmail.stack import render

# Parameters of txmail's own instance that an existing Postfix keeps as the operator set them.
INSTANCE_PARAMETERS = frozenset(
    {
        "compatibility_level",
        "queue_directory",
        "data_directory",
        "config_directory",
        "mail_owner",
        "setgid_group",
        "syslog_name",
        "maillog_file",
        "maillog_file_prefixes",
        "myhostname",
        "inet_interfaces",
        "inet_protocols",
        "mynetworks",
        "mydestination",
        "local_recipient_maps",
        "local_transport",
        "alias_maps",
        "alias_database",
        "biff",
        "relayhost",
        "recipient_delimiter",
        "non_smtpd_milters",
        "smtp_tls_security_level",
        "smtp_tls_loglevel",
        "smtp_dns_support_level",
        "smtp_host_lookup",
        "delay_warning_time",
    }
)
# smtpd(8) settings without the smtpd_ prefix: they go on txmail's listeners too.
LISTENER_PARAMETERS = frozenset({"broken_sasl_auth_clients"})
# Lists txmail adds its entries to, keeping the operator's.
MERGED_LISTS = frozenset(
    {"relay_domains", "transport_maps", "milter_header_checks", "smtp_header_checks"}
)
# Parameters that only ever grow.
AT_LEAST = frozenset({"message_size_limit"})
# Global parameters txmail sets (besides those of its own transports, `NAME_*`).
GLOBAL_PARAMETERS = frozenset({"enable_long_queue_ids", "disable_vrfy_command"})
# smtpd settings that go on txmail's listeners and also into main.cf when the operator has not
# set them, so that the operator's port 25, which takes txmail's bounces, refuses the same.
OPERATOR_DEFAULTS = frozenset({"smtpd_etrn_restrictions"})
# Postfix's own services in txmail's rendered master.cf: the operator has theirs.
POSTFIX_SERVICES = frozenset(
    {
        "pickup",
        "cleanup",
        "qmgr",
        "tlsmgr",
        "rewrite",
        "bounce",
        "defer",
        "trace",
        "verify",
        "flush",
        "proxymap",
        "proxywrite",
        "smtp",
        "relay",
        "showq",
        "error",
        "retry",
        "discard",
        "local",
        "virtual",
        "lmtp",
        "anvil",
        "scache",
        "postlog",
    }
)


@dataclass
class MasterEntry:
    name: str
    kind: str
    fields: list[str]  # private unpriv chroot wakeup maxproc command
    args: list[str] = field(default_factory=list)  # command arguments, -o pairs included

    @property
    def key(self) -> str:
        return f"{self.name}/{self.kind}"

    def text(self) -> str:
        return " ".join([self.name, self.kind, *self.fields, *self.args])


@dataclass
class Plan:
    main: dict[str, str]
    master: list[MasterEntry]
    notes: list[str] = field(default_factory=list)

    def commands(self, config_dir: Path) -> list[list[str]]:
        c = ["postconf", "-c", str(config_dir)]
        out = [[*c, "-e", f"{k} = {v}"] for k, v in self.main.items()]
        out += [[*c, "-M", "-e", f"{e.key}={e.text()}"] for e in self.master]
        return out

    def shell(self, config_dir: Path) -> str:
        return "\n".join(" ".join(_quote(a) for a in cmd) for cmd in self.commands(config_dir))


def _quote(arg: str) -> str:
    if arg and all(ch.isalnum() or ch in "-_./:=" for ch in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def postconf(config_dir: Path, *args: str) -> str:
    result = subprocess.run(
        ["postconf", "-c", str(config_dir), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or result.stderr.strip():
        raise ConfigError(
            f"postconf -c {config_dir} {' '.join(args)}: "
            f"{(result.stderr or result.stdout).strip()[:400]}"
        )
    return result.stdout


def command(config_dir: Path, name: str) -> str:
    """The path of Postfix command `name` in the operator's command_directory (read with
    `postconf -h`, never assumed)."""
    return str(Path(postconf(config_dir, "-h", "command_directory").strip()) / name)


def parameters(config_dir: Path) -> dict[str, str]:
    """The explicitly set main.cf parameters of a configuration directory."""
    values = {}
    for line in postconf(config_dir, "-n").splitlines():
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip()
    return values


def master_entries(config_dir: Path) -> list[MasterEntry]:
    entries = []
    for line in postconf(config_dir, "-M").splitlines():
        words = line.split()
        if len(words) >= 8:
            entries.append(MasterEntry(words[0], words[1], words[2:8], _join_braces(words[8:])))
    return entries


def _join_braces(words: list[str]) -> list[str]:
    """postconf -M prints `-o {name=a, b}` as several words; keep braces together."""
    out: list[str] = []
    depth = 0
    for word in words:
        if depth:
            out[-1] += " " + word
        else:
            out.append(word)
        depth += word.count("{") - word.count("}")
    return out


def listen_port(name: str) -> tuple[str, int] | None:
    host, _, port = name.rpartition(":")
    try:
        return host or "*", int(port) if port.isdigit() else socket.getservbyname(port, "tcp")
    except OSError:
        return None


def _o(name: str, value: str) -> list[str]:
    return ["-o", f"{{{name} = {value}}}" if (" " in value or "," in value) else f"{name}={value}"]


def _merge_list(existing: str, ours: str, stale: tuple[str, ...] = ()) -> str:
    """The operator's entries, then txmail's not there yet; entries naming one of the `stale`
    sockets (an earlier install's, before the sockets moved into the queue directory) go."""
    items = [
        i.strip()
        for i in existing.replace("\n", " ").split(",")
        if i.strip() and not any(f"unix:{path}:" in i for path in stale)
    ]
    for item in (i.strip() for i in ours.split(",")):
        if item and item not in items:
            items.append(item)
    return ", ".join(items)


# Where txmail puts the sockets the operator's Postfix connects to, inside its queue directory.
SOCKET_FOLDER = "txmail"
BACKUP_PREFIX = "txmail-backup-"


def installed_settings(settings: Settings, operator_dir: Path) -> Settings:
    """`settings` as they are once installed into the Postfix at `operator_dir`.

    The operator's queue_directory is read with `postconf -h`, never assumed. The sockets
    Postfix's daemons connect to (milter, policy service, return-path socketmap; Dovecot's SASL
    listener follows Settings.sasl_socket) move into QUEUE/txmail/: Debian's master.cf runs
    smtpd, cleanup, trivial-rewrite and smtp chrooted in the queue directory, where a socket
    under txmail's state directory cannot be reached (render.postfix_socket says why this
    and not proxy:socketmap)."""
    operator_dir = operator_dir.resolve()
    queue = Path(postconf(operator_dir, "-h", "queue_directory").strip())
    if not queue.is_absolute():
        raise ConfigError(f"{operator_dir}: queue_directory {queue} is not an absolute path")
    folder = queue / SOCKET_FOLDER
    return dataclasses.replace(
        settings,
        postfix=dataclasses.replace(
            settings.postfix, config_directory=str(operator_dir), queue_directory=str(queue)
        ),
        milter=dataclasses.replace(settings.milter, socket=str(folder / "milter.sock")),
        policyd=dataclasses.replace(settings.policyd, socket=str(folder / "policyd.sock")),
        domains=dataclasses.replace(settings.domains, socketmap=str(folder / "socketmap.sock")),
    )


def own_settings(settings: Settings) -> Settings:
    """`settings` back as for txmail's own instance (after `txmail postfix uninstall`)."""
    default = Settings()
    return dataclasses.replace(
        settings,
        postfix=dataclasses.replace(settings.postfix, config_directory="", queue_directory=""),
        maillog=dataclasses.replace(
            settings.maillog, source=default.maillog.source, path=default.maillog.path
        ),
        milter=dataclasses.replace(settings.milter, socket=default.milter.socket),
        policyd=dataclasses.replace(settings.policyd, socket=default.policyd.socket),
        domains=dataclasses.replace(settings.domains, socketmap=default.domains.socketmap),
    )


def write_config(settings: Settings, config_file: Path) -> None:
    """Rewrite txmail.toml with `settings`, keeping its mode and owner."""
    from txmail.files import replace_atomically

    stat = config_file.stat()
    data = config_mod.to_toml(settings).encode()
    replace_atomically(config_file, data, stat.st_mode & 0o777, stat.st_uid, stat.st_gid)


def plan(settings: Settings, config_file: Path, operator_dir: Path) -> Plan:
    """What to change in the operator's Postfix at `operator_dir` (with `settings` as
    installed_settings() gives them)."""
    rendered = render.render_postfix(settings, config_file)  # files stay in the state dir
    ours = parameters(rendered)
    theirs = parameters(operator_dir)
    own_transports = {
        e.name
        for e in master_entries(rendered)
        if e.kind == "unix" and e.name not in POSTFIX_SERVICES
    }
    main: dict[str, str] = {}
    # An install made before the sockets moved into the queue directory named this one.
    stale = (str(settings.state_path / Settings().domains.socketmap),)
    listener_options: list[str] = []
    for name, value in ours.items():
        if name in INSTANCE_PARAMETERS:
            continue
        if (name.startswith(("smtpd_", "milter_")) or name in LISTENER_PARAMETERS) and (
            name not in MERGED_LISTS
        ):
            listener_options += _o(name, value)
            if name in OPERATOR_DEFAULTS and not theirs.get(name):
                main[name] = value
        elif name in MERGED_LISTS:
            main[name] = _merge_list(theirs.get(name, ""), value, stale)
        elif name in AT_LEAST:
            current = int(postconf(operator_dir, "-h", name).strip() or 0)
            main[name] = str(max(current, int(value)))
        elif name in GLOBAL_PARAMETERS or name.split("_", 1)[0] in own_transports:
            main[name] = value
        else:
            raise ConfigError(
                f"main.cf parameter {name} is not classified for installation "
                "into an existing Postfix (txmail/stack/install.py)"
            )
    main = {k: v for k, v in main.items() if theirs.get(k) != v}

    master: list[MasterEntry] = []
    # txmail's listeners, and the loopback listener the bounce pipe hands forwarded bounces
    # to (without it they would sit in the deferred queue): all but txmail's own port 25,
    # whose job the operator's port 25 does; each with the txmail.toml setting that moves it.
    port_settings = {
        f"127.0.0.1:{settings.listen.reinject}": "listen.reinject",
        f"{settings.listen.address}:{settings.trusted.port}": "trusted.port",
        f"{settings.listen.address}:{settings.listen.submissions}": "listen.submissions",
        f"{settings.listen.address}:{settings.listen.submission}": "listen.submission",
    }
    listeners = set(port_settings)
    theirs_master = master_entries(operator_dir)
    chroot = _smtpd_chroot(theirs_master)
    for entry in master_entries(rendered):
        fields = entry.fields
        if fields[-1] == "smtpd":  # chrooted as the operator's own smtpd is (Debian: y)
            fields = [*fields[:2], chroot, *fields[3:]]
        if entry.kind == "inet" and entry.name in listeners:
            own = {a.split("=", 1)[0].strip("{ ") for a in entry.args if a != "-o"}
            inherited = [
                pair
                for pair in zip(listener_options[::2], listener_options[1::2], strict=True)
                if pair[1].split("=", 1)[0].strip("{ ") not in own
            ]
            args = [a for pair in inherited for a in pair]
            master.append(MasterEntry(entry.name, entry.kind, fields, args + entry.args))
        elif entry.kind != "inet" and entry.name not in POSTFIX_SERVICES:
            master.append(MasterEntry(entry.name, entry.kind, fields, entry.args))
    _check_conflicts(master, theirs_master, previous_install(operator_dir), port_settings)
    notes = [
        "the operator's port 25 service takes the bounces for the return-path domains "
        "(relay_domains and transport_maps now include txmail's socketmap)",
        *_port25_notes(settings, theirs),
    ]
    return Plan(main=main, master=master, notes=notes)


def _smtpd_chroot(theirs: list[MasterEntry]) -> str:
    """The chroot column of the operator's port 25 smtpd (Debian's master.cf: y), which
    txmail's smtpd services take too, so they run as the operator's own smtpd does."""
    for entry in theirs:
        if entry.kind == "inet" and entry.fields[-1] == "smtpd":
            return entry.fields[2]
    return "-"


def _port25_notes(settings: Settings, theirs: dict[str, str]) -> list[str]:
    """What txmail's own port 25 has and the operator's is left without (master.cf)."""
    notes = []
    if theirs.get("smtpd_etrn_restrictions"):
        notes.append(
            "smtpd_etrn_restrictions is the operator's and was kept: make sure it "
            "refuses ETRN from the internet on port 25"
        )
    rate = settings.postfix.smtp_recipient_rate
    notes.append(
        "to bound what one client can make the bounce pipe run, add to the operator's "
        "port 25 service in master.cf: -o smtpd_recipient_limit=100"
        + (f" -o smtpd_client_recipient_rate_limit={rate}" if rate else "")
    )
    return notes


# Words in the arguments of a master.cf service that only txmail's services have (besides
# their syslog_name option, `txmail/reinject`): the bounce pipe's module.
TXMAIL_MARKS = frozenset({"txmail.bounce_pipe"})
# In the backup's installed/ folder: the master.cf services the last install put in.
INSTALLED_SERVICES = "services"


def previous_install(operator_dir: Path) -> dict[str, str]:
    """The master.cf services the last install put in, `name/type` to text as in its
    installed/master.cf: what txmail may replace again without asking."""
    found = backups(operator_dir)
    installed = found[0] / "installed" if found else None
    if installed is None or not (installed / INSTALLED_SERVICES).is_file():
        return {}
    keys = set((installed / INSTALLED_SERVICES).read_text().split())
    return {e.key: e.text() for e in master_entries(installed) if e.key in keys}


def _provably_ours(entry: MasterEntry, own: MasterEntry, previous: dict[str, str]) -> bool:
    """An operator's service with the name of one of txmail's is txmail's own (from an
    earlier install) only when it carries txmail's mark (the same syslog_name option, or the
    bounce pipe's module), or is as the last install left it; anything else is the
    operator's (amavisd-new's reinjection service on 127.0.0.1:10025, say)."""
    marks = {a for a in own.args if a.startswith("syslog_name=") or a in TXMAIL_MARKS}
    return bool(marks & set(entry.args)) or previous.get(entry.key) == entry.text()


def _check_conflicts(
    ours: list[MasterEntry],
    theirs: list[MasterEntry],
    previous: dict[str, str],
    port_settings: dict[str, str],
) -> None:
    """Refuse when the operator already has a service of txmail's name, or listens where a
    txmail listener would."""
    by_key = {e.key: e for e in ours}
    for entry in theirs:
        same = by_key.get(entry.key)
        if same is not None:
            if _provably_ours(entry, same, previous):
                continue
            command = " ".join([entry.fields[-1], *entry.args])
            raise ConfigError(
                f"master.cf already has a service {entry.name} {entry.kind} that txmail did "
                f"not install ({command[:100]}); "
                + (
                    f"set {port_settings[entry.name]} in txmail.toml to a free port"
                    if entry.name in port_settings
                    else "rename or remove it, txmail needs that service name"
                )
                + " (txmail would replace it)"
            )
        if entry.kind != "inet":
            continue
        bound = listen_port(entry.name)
        for own in ours:
            mine = listen_port(own.name) if own.kind == "inet" else None
            if (
                bound
                and mine
                and bound[1] == mine[1]
                and (bound[0] == mine[0] or "*" in (bound[0], mine[0]))
            ):
                setting = port_settings.get(own.name, "[listen]")
                raise ConfigError(
                    f"master.cf already has a service on port {mine[1]} ({entry.name} "
                    f"{entry.kind}); remove or move it, or set {setting} in txmail.toml "
                    "to a free port"
                )


CONFIG_FILES = ("main.cf", "master.cf")


def backups(operator_dir: Path) -> list[Path]:
    """txmail's backups in `operator_dir`, oldest first."""
    return sorted(p for p in operator_dir.glob(f"{BACKUP_PREFIX}*") if p.is_dir())


def check_reinstall(operator_dir: Path, force: bool = False) -> None:
    """Refuse to install over an earlier install when main.cf or master.cf changed since it
    (they differ from the backup's installed/ copy): the re-install would refresh that copy,
    and `uninstall` would then restore the pre-txmail files without a word, dropping the
    operator's change (smtpd_banner set after the first install, say). `force` re-installs
    anyway."""
    found = backups(operator_dir)
    if force or not found:
        return
    backup = found[0]
    for name in CONFIG_FILES:
        installed = backup / "installed" / name
        if installed.is_file() and not filecmp.cmp(installed, operator_dir / name, shallow=False):
            raise ConfigError(
                f"{operator_dir / name} was changed after the last `txmail postfix install` "
                f"(compare {installed}); run `txmail postfix uninstall` first, or install "
                f"with --force, knowing that uninstall then restores {backup / name} from "
                "before txmail and drops that change"
            )


def apply(plan_: Plan, operator_dir: Path, force: bool = False) -> Path:
    """Back up, check on a copy, then change the operator's configuration. Returns the
    backup folder.

    The backup holds main.cf and master.cf as they were before txmail's first install (an
    install over an earlier one keeps that backup), and in `installed/` the files as this
    install left them, so `uninstall` can tell whether anybody changed them since.

    Fails: ConfigError as check_reinstall() says, unless `force`."""
    check_reinstall(operator_dir, force)
    with tempfile.TemporaryDirectory(prefix="txmail-postfix-check-") as tmp:
        trial = Path(tmp) / "etc"
        shutil.copytree(operator_dir, trial, symlinks=True)
        _run(plan_.commands(trial))
        postconf(trial, "-n")
        postconf(trial, "-M")
    earlier = backups(operator_dir)
    if earlier:
        backup = earlier[0]
    else:
        backup = operator_dir / f"{BACKUP_PREFIX}{time.strftime('%Y%m%d%H%M%S')}"
        backup.mkdir(mode=0o700)
        for name in CONFIG_FILES:
            shutil.copy2(operator_dir / name, backup / name)
    _run(plan_.commands(operator_dir))
    (backup / "installed").mkdir(exist_ok=True)
    for name in CONFIG_FILES:
        shutil.copy2(operator_dir / name, backup / "installed" / name)
    (backup / "installed" / INSTALLED_SERVICES).write_text(
        "".join(f"{e.key}\n" for e in plan_.master)
    )
    return backup


def uninstall(operator_dir: Path, force: bool = False) -> Path:
    """Put back main.cf and master.cf byte for byte as they were before txmail's first
    install (which removes txmail's services and settings) and remove the backup. Returns
    the backup folder it restored from.

    Fails: ConfigError when there is no backup, or when a file was changed after the install
    and `force` is not given (restoring would undo that change)."""
    found = backups(operator_dir)
    if not found:
        raise ConfigError(
            f"{operator_dir}: no {BACKUP_PREFIX}* folder: txmail is not installed into this "
            "Postfix (or its backup was removed)"
        )
    backup = found[0]
    for name in CONFIG_FILES:
        if not (backup / name).is_file():
            raise ConfigError(f"{backup / name}: missing; cannot restore {name}")
        installed = backup / "installed" / name
        if (
            not force
            and installed.is_file()
            and not filecmp.cmp(installed, operator_dir / name, shallow=False)
        ):
            raise ConfigError(
                f"{operator_dir / name} was changed after `txmail postfix install`; "
                f"restoring {backup / name} would undo that change: compare the two, then "
                "run uninstall with --force"
            )
    for name in CONFIG_FILES:
        shutil.copy2(backup / name, operator_dir / name)
    for folder in found:
        shutil.rmtree(folder)
    return backup


def _run(commands: list[list[str]]) -> None:
    for cmd in commands:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or result.stderr.strip():
            raise ConfigError(f"{' '.join(cmd[:4])}: {result.stderr.strip()[:400]}")


def systemd_unit(settings: Settings, config_file: Path) -> str:
    """txmail.service for a node installed into the operator's Postfix (`up --external-postfix`).

    Type=notify: `up` sends READY=1 when it prints its ready line (stack/sdnotify.py), so
    units ordered after it, Postfix's among them, start once the milter and the policy
    service listen. The sandbox leaves writable only what `up` writes: the state directory,
    the socket folder in the Postfix queue directory (created by `txmail postfix install`)
    and Dovecot's own state folder; the system users it runs components as exist before it
    starts (install creates them), so /etc stays read-only. NoNewPrivileges only stops gaining
    privileges through set-uid files: `up` (root) still drops to the users of Dovecot, Redis
    and the bounce parsers, and Postfix's postdrop is never run from this unit."""
    txmail = Path(sys.executable).with_name("txmail")
    state = settings.state_path.resolve()
    sockets = settings.postfix_queue_path / SOCKET_FOLDER
    private = [Path("/home"), Path("/root"), Path("/run/user")]
    # A state directory under /home (refused under /root by `up`) would vanish from view.
    home = "" if any(state.is_relative_to(p) for p in private) else "ProtectHome=yes\n"
    tmp = any(state.is_relative_to(p) for p in (Path("/tmp"), Path("/var/tmp")))
    private_tmp = "" if tmp else "PrivateTmp=yes\n"  # nor one under /tmp (a test's)
    return f"""[Unit]
Description=txmail daemons (milter, policy service, Dovecot for SASL, passwd-file sync, ...)
Documentation=file://{config_file.resolve()}
After=network-online.target redis-server.service
Wants=network-online.target
Before=postfix.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={txmail} --config {config_file.resolve()} up --external-postfix
Restart=on-failure
RestartSec=5
TimeoutStartSec=300
TimeoutStopSec=60
KillMode=mixed
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={state} {sockets} -/var/lib/dovecot
{home}{private_tmp}PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
"""
