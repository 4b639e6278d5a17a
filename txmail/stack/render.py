"""Render the Postfix, Dovecot and Redis configuration of one txmail node.

Reads:  the templates in postfix-conf/ (shipped inside the wheel as txmail/_postfix_conf) and the
        Settings. Placeholders are `{{name}}`; a placeholder without a value is an error, so a
        typo cannot ship.
Writes: STATE/postfix/etc/{main.cf,master.cf,transport,reject_footer.regexp},
        STATE/dovecot/dovecot.conf (and authpolicy.conf.ext, 0600), STATE/redis/redis.conf.
"""

from __future__ import annotations

import grp
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

from txmail.config import Settings
from txmail.errors import ConfigError

PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# Postfix checks message_size_limit against its whole queue file, not against what the client
# sent: its Received header (up to about 1 KB with long names and the TLS line), txmail's
# headers and DKIM signatures (about 1 KB each), and the envelope records (sender, and per
# recipient the address twice plus DSN attributes: 364 bytes a recipient measured with
# 100-character addresses, up to 1 KB with 320-character ones). Without room for them a
# message of exactly the configured size (a 20,000-byte message with a limit of 20,000) was
# refused with "552 5.3.4 Error: message file too big". The room: 64 KiB for the headers plus
# 1 KiB for each of the 1,000 recipients smtpd takes in one transaction (smtpd_recipient_limit).
# The client's message itself is held to each account's max_message_size by the milter's size
# rule, which counts what the client sent (milter/rules/size.py).
QUEUE_FILE_ROOM = 64 * 1024 + 1000 * 1024
POSTFIX_FILES = (
    "main.cf",
    "master.cf",
    "transport",
    "reject_footer.regexp",
    "milter_header_checks.regexp",
    "smtp_header_checks.regexp",
)


def template_dir() -> Path:
    shipped = Path(__file__).resolve().parent.parent / "_postfix_conf"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[2] / "postfix-conf"


def substitute(text: str, values: dict[str, str], name: str) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"template {name}: no value for {{{{{key}}}}}")
        return values[key]

    return PLACEHOLDER.sub(one, text)


def values(settings: Settings, config_file: Path) -> dict[str, str]:
    state = settings.state_path
    return {
        "state_dir": str(state),
        "config_dir": str(postfix_config_dir(settings)),
        "config_file": str(config_file.resolve()),
        "instance": re.sub(r"[^a-z0-9]+", "-", str(state).lower()).strip("-")[-40:],
        "syslog_name": settings.postfix.syslog_name,
        "maillog": str(settings.path(settings.postfix.maillog)),
        "hostname": settings.hostname,
        "bounce_domain": settings.bounce_domain,
        "listen_address": settings.listen.address,
        "inet_interfaces": (
            "all" if settings.listen.address in ("0.0.0.0", "*") else settings.listen.address
        ),
        "port_smtp": str(settings.listen.smtp),
        "port_submission": str(settings.listen.submission),
        "port_submissions": str(settings.listen.submissions),
        "port_reinject": str(settings.listen.reinject),
        "relayhost": settings.postfix.relayhost,
        "route_nexthop": settings.postfix.relayhost,
        "digest_rate_delay": settings.postfix.digest_rate_delay,
        "delay_warning_time": settings.postfix.delay_warning_time,
        "message_size_limit": str(postfix_size_limit(settings)),
        "smtp_recipient_rate": str(settings.postfix.smtp_recipient_rate),
        "tls_cert": str(settings.path(settings.tls.cert_file)),
        "tls_key": str(settings.path(settings.tls.key_file)),
        "sasl_socket": postfix_socket(settings, settings.sasl_socket),
        "mail_owner": mail_owner(settings),
        "mail_owner_group": mail_owner_group(settings),
        "sasl_listener": (
            str(settings.sasl_socket) if settings.external_postfix else "auth-postfix"
        ),
        "milter_socket": postfix_socket(settings, settings.path(settings.milter.socket)),
        "passwd_file": str(settings.path(settings.dovecot.passwd_file)),
        "pipe_user": settings.user,
        "python": sys.executable,
        "socketmap_socket": postfix_socket(settings, settings.path(settings.domains.socketmap)),
        "policyd_socket": postfix_socket(settings, settings.path(settings.policyd.socket)),
        "trusted_listener": trusted_listener(settings),
        "appendfsync": settings.redis.appendfsync,
    }


def postfix_socket(settings: Settings, path: Path) -> str:
    """How main.cf names a UNIX socket of txmail's that Postfix's daemons connect to.

    A socket inside the queue directory is named relative to it (`txmail/milter.sock`):
    every Postfix daemon runs with the queue directory as its working directory, chrooted
    there or not, so the one name reaches the socket from smtpd, cleanup and trivial-rewrite
    whether master.cf runs them chrooted (Debian's stock master.cf) or not. That is why
    `txmail postfix install` puts the milter, policy, socketmap and SASL sockets in
    QUEUE/txmail/, as Debian does for OpenDKIM and spamass-milter; an absolute path outside
    the queue directory cannot be reached from the chroot jail. (proxy:socketmap through
    proxymap would reach the socketmap only, not the milter, policy and SASL sockets, and
    only while proxymap itself is not chrooted.)"""
    try:
        return str(path.relative_to(settings.postfix_queue_path))
    except ValueError:
        return str(path)


def mail_owner(settings: Settings) -> str:
    """The user Postfix's daemons run as: `postconf -h mail_owner` of the operator's Postfix
    when txmail is installed into one (never assumed), `postfix` for txmail's own instance.
    The sockets Postfix connects to belong to this user's group."""
    if not settings.external_postfix:
        return "postfix"
    return postconf_value(Path(settings.postfix.config_directory), "mail_owner")


def mail_owner_group(settings: Settings) -> str:
    """The primary group of mail_owner: the group of txmail's sockets for Postfix."""
    if not settings.external_postfix:
        return "postfix"
    return grp.getgrgid(pwd.getpwnam(mail_owner(settings)).pw_gid).gr_name


def postconf_value(config_dir: Path, name: str) -> str:
    """One main.cf parameter of the Postfix configuration in `config_dir`, as Postfix sees it."""
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    result = subprocess.run(
        [postconf, "-c", str(config_dir), "-h", name], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise ConfigError(
            f"postconf -c {config_dir} -h {name}: "
            f"{(result.stderr or 'no value').strip()[:300]} (postfix.config_directory)"
        )
    return result.stdout.strip()


def postfix_size_limit(settings: Settings) -> int:
    """Postfix's message_size_limit: postfix.message_size_limit (the largest message a client
    may send) plus the room Postfix's queue file needs around it."""
    return settings.postfix.message_size_limit + QUEUE_FILE_ROOM


def trusted_listener(settings: Settings) -> str:
    """The master.cf lines of the trusted listener, or nothing when it is off."""
    trusted = settings.trusted
    if not trusted.port:
        return ""
    networks = " ".join(str(n) for n in trusted.networks)
    return (
        f"{settings.listen.address}:{trusted.port} inet n - n - - smtpd\n"
        f"  -o syslog_name={settings.postfix.syslog_name}/trusted\n"
        f"  -o mynetworks={networks}\n"
        f"  -o smtpd_sasl_auth_enable=no\n"
        f"  -o smtpd_relay_restrictions=permit_mynetworks,reject\n"
        f"  -o milter_macro_daemon_name=trusted\n"
    )


def render_routes(config_dir: Path, nexthop: str) -> None:
    """Point the priority and digest FILTERs at `nexthop` (FILTER ignores relayhost)."""
    name = "milter_header_checks.regexp"
    text = (template_dir() / name).read_text()
    (config_dir / name).write_text(substitute(text, {"route_nexthop": nexthop}, name))


def postfix_config_dir(settings: Settings) -> Path:
    return settings.state_path / "postfix/etc"


def render_file(template: str, settings: Settings, config_file: Path) -> str:
    text = (template_dir() / template).read_text()
    return substitute(text, values(settings, config_file), template)


def render_postfix(settings: Settings, config_file: Path, out: Path | None = None) -> Path:
    """Write the Postfix configuration; return its directory."""
    out = out or postfix_config_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    for name in POSTFIX_FILES:
        (out / name).write_text(render_file(name, settings, config_file))
    return out


def check_postfix(config_dir: Path) -> None:
    """Let Postfix itself read the rendered main.cf and master.cf; refuse what it warns about."""
    postconf = shutil.which("postconf") or "/usr/sbin/postconf"
    for args in (["-n"], ["-M"]):
        result = subprocess.run(
            [postconf, "-c", str(config_dir), *args], capture_output=True, text=True, check=False
        )
        problems = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode != 0 or problems:
            raise ConfigError(f"postconf rejects {config_dir}: {'; '.join(problems)[:500]}")


def render_dovecot(settings: Settings, config_file: Path) -> Path:
    """Write dovecot.conf, and beside it, readable by root only, the settings that hold the
    authpolicy secret (the header and the hash nonce); dovecot.conf includes them."""
    from txmail.files import write_private
    from txmail.tokens import authpolicy as credentials

    path = settings.state_path / "dovecot/dovecot.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    credentials.ensure_key(settings)  # a state directory made before authpolicy existed
    key = credentials.read_key(settings)
    private = path.parent / "authpolicy.conf.ext"
    write_private(
        private,
        (
            "# Rendered by txmail from authpolicy.key_file: keep it private.\n"
            f"auth_policy_hash_nonce = {credentials.hash_nonce(key)}\n"
            f"auth_policy_server_api_header = {credentials.HEADER}: "
            f"{credentials.header_value(key)}\n"
        ).encode(),
    )
    extra = {
        "authpolicy_url": f"http://{settings.authpolicy.listen}/",
        "authpolicy_secrets": str(private),
    }
    text = (template_dir() / "dovecot.conf").read_text()
    path.write_text(substitute(text, {**values(settings, config_file), **extra}, "dovecot.conf"))
    return path


def render_redis(settings: Settings, config_file: Path) -> Path:
    path = settings.state_path / "redis/redis.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_file("redis.conf", settings, config_file))
    return path
