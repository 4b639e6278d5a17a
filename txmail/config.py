"""txmail settings: one TOML file parsed into one typed Settings object.

Every key, its type, its default and what it means is declared here and nowhere else; the README's
configuration reference is generated from these declarations (`txmail config reference`).

Reads:  the file named by --config, else $TXMAIL_CONFIG, else ./txmail.toml.
Fails:  ConfigError naming the file and the key for unknown keys, wrong types, bad values and
        missing files; the CLI prints it as one line and exits 2.

Relative paths in the file are taken relative to `state_dir`, which itself defaults to the folder
that holds the configuration file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txmail.errors import ConfigError

DEFAULT_CONFIG_NAME = "txmail.toml"


def _doc(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A field with its documentation attached (shown by `txmail config reference`)."""
    if isinstance(default, list | dict):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"doc": text}, **kw)
    return field(default=default, metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class ListenSettings:
    """Where the relay listens. Every listener binds `address`."""

    address: str = _doc("IP address every listener binds (SMTP and HTTP).", "127.0.0.1")
    smtp: int = _doc(
        "Port 25 style listener: takes bounces for the return-path domains "
        "without login; AUTH only after STARTTLS.",
        25,
    )
    submissions: int = _doc("Implicit-TLS submission port (465 style), AUTH required.", 465)
    submission: int = _doc("Submission port (587 style): STARTTLS required, then AUTH.", 587)
    http: int = _doc("HTTP port of the tracker and send API.", 8080)
    reinject: int = _doc(
        "Loopback-only port on which the bounce pipe hands forwarded bounces "
        "(null envelope sender) back to Postfix; never exposed.",
        10025,
    )


@dataclass(frozen=True)
class TrustedSettings:
    """An optional listener for applications on trusted networks that cannot log in.

    Mail on this port from `networks` is sent as `account` with every rule of that account
    applied (like an IP credential); nobody else may relay through it. Off unless `port` is set.
    """

    port: int = _doc("Port of the trusted listener; 0 turns it off.", 0)
    networks: list = _doc("Client networks (CIDR) allowed on the trusted listener.", [])
    account: str = _doc("Account the trusted listener's mail is sent as.", "")


@dataclass(frozen=True)
class PostfixSettings:
    """The Postfix instance txmail renders into the state directory."""

    relayhost: str = _doc(
        "Next hop for all outbound mail as HOST:PORT or [HOST]:PORT; empty "
        "means deliver to each recipient domain's MX hosts.",
        "",
    )
    syslog_name: str = _doc("Prefix of this instance's log lines.", "txmail")
    message_size_limit: int = _doc(
        "Largest message Postfix accepts, in bytes as the client "
        "sends it (main.cf adds room for what Postfix and txmail "
        "add). Accounts can only lower it.",
        52_428_800,
    )
    maillog: str = _doc(
        "Postfix's log file (maillog_file), relative to state_dir.", "log/postfix.log"
    )
    config_directory: str = _doc(
        "Configuration folder of the operator's Postfix txmail is installed into; empty: "
        "txmail's own instance (STATE/postfix/etc). `txmail postfix install` sets it.",
        "",
    )
    queue_directory: str = _doc(
        "Queue folder of the operator's Postfix txmail is installed into, as `postconf -h "
        "queue_directory` says (/v1/send, the copies of tracked mail and the queue gauges "
        "use it); empty: txmail's own instance (STATE/postfix/spool). `txmail postfix "
        "install` sets it.",
        "",
    )
    digest_rate_delay: str = _doc(
        "Pause between two deliveries of digest-class mail to one "
        "destination (Postfix time: 1s, 2m, ...); digest mail goes "
        "out one message at a time per destination.",
        "1s",
    )
    delay_warning_time: str = _doc(
        "How long a message waits in the queue before Postfix tells the sender it is delayed "
        "(Postfix time: 4h, 30m; 0: never). The client gets the notice when a recipient's "
        "NOTIFY asked for DELAY or gave no NOTIFY (Postfix's default, and what the bounce "
        "pipe forwards); with bounce tracking it reaches the bounce pipe whatever NOTIFY "
        "says. An operator's own Postfix keeps its value (`txmail postfix install`).",
        "4h",
    )
    smtp_recipient_rate: int = _doc(
        "Recipients one client address may name per minute on "
        "port 25 (Postfix anvil: smtpd_client_recipient_rate_limit), "
        "logged in or not; past it the client hears 450 4.7.1 and "
        "retries later. Loopback (mynetworks) is exempt. 0: no "
        "limit.",
        300,
    )


APPENDFSYNC = ("always", "everysec")


@dataclass(frozen=True)
class RedisSettings:
    """Where txmail keeps its state."""

    url: str = _doc(
        "Redis URL (redis://, rediss:// or unix://). Empty: `txmail up` runs a "
        "private redis-server in the state directory, with AOF on.",
        "",
    )
    cluster: bool = _doc("Treat `url` as one node of a Redis Cluster.", False)
    prefix: str = _doc("Prefix of every key txmail writes.", "txmail:")
    timeout: float = _doc("Seconds to wait for Redis before answering with a 4xx.", 2.0)
    appendfsync: str = _doc(
        'When the private Redis of `txmail up` fsyncs its append-only file: "always" '
        '(before it answers each write) or "everysec" (once a second; a machine crash can '
        "lose the last second or two, which the maillog follower reads again from its "
        'position kept in Redis). See the README, "Durability". A Redis of your own '
        "(redis.url) is configured there.",
        "always",
    )


@dataclass(frozen=True)
class TlsSettings:
    """The certificate Postfix presents on every listener."""

    cert_file: str = _doc("PEM certificate chain, relative to state_dir.", "tls/cert.pem")
    key_file: str = _doc("PEM private key (mode 0600), relative to state_dir.", "tls/key.pem")


@dataclass(frozen=True)
class SecretsSettings:
    """HMAC secrets. The keys themselves live in Redis (PREFIX secret:NAME), shared by every
    node; these files (mode 0600) are this node's caches of them, written from Redis by
    `txmail init` and `txmail up`, and seed Redis when a node that had them meets an
    installation without keys."""

    bounce_key_file: str = _doc(
        "Cache of the key that signs the TOKEN of bounce addresses (in Redis).",
        "secrets/bounce.key",
    )
    webhook_key_file: str = _doc(
        "Cache of the key each account's webhook secret is derived from (in Redis).",
        "secrets/webhook.key",
    )
    tracking_key_file: str = _doc(
        "Cache of the key that signs open and click tracking links (in Redis).",
        "secrets/tracking.key",
    )
    console_key_file: str = _doc(
        "Cache of the key that signs the console's session cookies and operator tokens (in Redis).",
        "secrets/console.key",
    )


@dataclass(frozen=True)
class DovecotSettings:
    """Dovecot, used only for SASL; it reads a passwd-file that txmail keeps in sync."""

    passwd_file: str = _doc(
        "The passwd-file Dovecot authenticates against, relative to state_dir.", "dovecot/users"
    )
    resync_interval: float = _doc(
        "Seconds between full resyncs of the passwd-file from Redis "
        "(changes are also pushed at once).",
        30.0,
    )


@dataclass(frozen=True)
class MilterSettings:
    """The txmail milter."""

    socket: str = _doc(
        "UNIX socket Postfix talks to the milter on, relative to state_dir.",
        "run/milter/milter.sock",
    )
    message_ttl_days: int = _doc("Days a message record is kept in Redis.", 30)


@dataclass(frozen=True)
class PolicydSettings:
    """The txmail policy daemon: rate limits, warm-up quotas and the reputation guard."""

    socket: str = _doc(
        "UNIX socket Postfix sends policy requests to, relative to state_dir.",
        "run/policyd/policyd.sock",
    )
    listen: str = _doc(
        "Also take policy requests on this TCP address (HOST:PORT, keep it on "
        "loopback); empty: the UNIX socket only.",
        "",
    )
    hold_seconds: int = _doc(
        "Seconds a message passed at end of data holds its share of the "
        "limits until the milter counts it; a message refused later "
        "gives its share back at the next request of the same Postfix "
        "process, at the latest after this time.",
        120,
    )
    settings_refresh: float = _doc(
        "Seconds between checks for changed accounts (policyd caches account settings in memory).",
        1.0,
    )
    idle_timeout: float = _doc(
        "Seconds a policy connection may stay silent before policyd "
        "closes it (Postfix closes idle ones after 300 s).",
        900.0,
    )
    workers: int = _doc(
        "Processes that serve the policy requests; 0: one per CPU core. One "
        "answers about 8,000 requests a second (two per message), more than "
        "the rest of a node sends; each one more costs the node wake-ups.",
        1,
    )
    metrics_interval: float = _doc(
        "Seconds between writes of the decision counts to Redis "
        "(/metrics: txmail_policy_decisions); at most 10, as policyd's heartbeat "
        "(txmail_component_last_seen_timestamp_seconds) goes with them.",
        1.0,
    )
    log_permits: bool = _doc(
        "Also log a line for each request policyd lets through (two a "
        "message); refusals, tempfails and given-back holds are always "
        "logged, and /metrics counts every decision.",
        False,
    )
    clock_offset: float = _doc(
        "Seconds added to the clock that policyd and the milter's "
        "count use (tests and drills only; 86400 makes it tomorrow).",
        0.0,
    )


@dataclass(frozen=True)
class DomainsSettings:
    """Sending domains: their DKIM keys and return-path subdomains (`txmail domains`)."""

    return_path_prefix: str = _doc(
        "Label put in front of a sending domain to name its "
        "return-path subdomain (`mta` gives mta.example.com); "
        "`domains add --return-path` overrides it per domain.",
        "mta",
    )
    dkim_key_dir: str = _doc(
        "Folder of the DKIM private keys (files mode 0600), relative to state_dir.", "dkim"
    )
    dkim_key_bits: int = _doc("Size in bits of new RSA DKIM keys (2048 or more).", 2048)
    dkim_ed25519: bool = _doc(
        "Give new domains an Ed25519 key too (RFC 8463): messages then "
        "carry an Ed25519 and an RSA signature.",
        False,
    )
    socketmap: str = _doc(
        "UNIX socket on which `txmail socketmap` tells Postfix the "
        "return-path domains, relative to state_dir.",
        "run/socketmap/socketmap.sock",
    )
    nameservers: list = _doc(
        "DNS servers `txmail domains verify` asks, as IP or IP:PORT; empty: the system's resolver.",
        [],
    )
    spf_include: str = _doc(
        "A domain whose SPF record lists every address this relay sends from "
        "(e.g. _spf.relay.example), for the bounce addresses' SPF record "
        "(include:DOMAIN); empty: a:HOSTNAME, the addresses of `hostname`.",
        "",
    )
    dmarc_rua: str = _doc(
        "Address for DMARC aggregate reports in the _dmarc record `domains dns` suggests "
        "(rua=mailto:ADDRESS); empty: no rua.",
        "",
    )


@dataclass(frozen=True)
class SpamSettings:
    """The spam check: rspamd's HTTP /checkv2, asked by the milter."""

    enabled: bool = _doc(
        "`txmail up` runs rspamd (Debian's package; config and state in STATE/rspamd) "
        "on spam.listen and the milter asks it, unless spam.rspamd_url names another.",
        False,
    )
    listen: str = _doc(
        "Address:port of the rspamd `txmail up` runs when spam.enabled: a loopback address "
        "(rspamd's worker asks no password).",
        "127.0.0.1:11336",
    )
    nameservers: list = _doc(
        "DNS servers (IP or IP:PORT) of the rspamd `txmail up` runs; empty: the system's. "
        "rspamd's DNS lists want a resolver of your own (public ones are refused).",
        [],
    )
    rspamd_url: str = _doc(
        "Base URL of rspamd's normal worker, e.g. http://127.0.0.1:11333. Empty: no spam "
        "check, or with spam.enabled the rspamd `txmail up` runs.",
        "",
    )

    @property
    def url(self) -> str:
        """Where the milter asks: rspamd_url, else the rspamd of spam.enabled, else ""."""
        if self.rspamd_url or not self.enabled:
            return self.rspamd_url
        return self.listen_url

    @property
    def listen_url(self) -> str:
        """The URL of the rspamd `txmail up` runs, seen from this machine."""
        host, _, port = self.listen.rpartition(":")
        if host.strip("[]") in ("0.0.0.0", "::", "*", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    timeout: float = _doc("Seconds to wait for rspamd's answer.", 10.0)
    on_failure: str = _doc(
        "When rspamd cannot be asked: `tempfail` (the client gets a 4xx and "
        "retries) or `skip` (the message goes on unchecked).",
        "tempfail",
    )


@dataclass(frozen=True)
class EventsSettings:
    """Events: one capped Redis Stream per account plus daily counters (txmail/events.py)."""

    stream_max: int = _doc(
        "Events kept per account once delivered to its webhook (history for "
        "`events tail` and `messages show`); events not yet delivered are "
        "never trimmed.",
        100_000,
    )
    counter_days: int = _doc(
        "Days the per-day counters (per account and kind, per tag and kind) are kept.", 400
    )
    tags_per_day: int = _doc(
        "Distinct tags counted per account and UTC day; the day's further tags are "
        'counted together as "(other, folded)" (txmail/stats.py).',
        100,
    )


@dataclass(frozen=True)
class BouncePipeSettings:
    """`txmail bounce-pipe`, the pipe(8) transport of the return-path domains."""

    max_message_bytes: int = _doc(
        "Most bytes of a returned mail that are read; the rest is read and ignored.",
        10 * 1024 * 1024,
    )
    unparsed_max: int = _doc(
        "Returned mails kept for `txmail bounces unparsed` (the oldest go "
        "first, with a warning in the pipe's log).",
        10_000,
    )
    unparsed_max_bytes: int = _doc(
        "Most bytes of one returned mail kept for inspection.", 256 * 1024
    )
    feedback_loops: list = _doc(
        "DKIM signing domains of mailbox providers' feedback loops: a "
        "complaint counts toward an account's suspension only when a "
        "signature of one of these exact domains verifies on the "
        "report (RFC 6449). List only domains that sign feedback "
        "reports alone, never a provider's main domain, which also "
        "signs its users' mail. Other complaints are recorded and "
        "suppress their recipient, but are not counted. Yahoo's "
        "reports are signed by arf.mail.yahoo.com.",
        ["arf.mail.yahoo.com"],
    )
    untrusted_events_per_report: int = _doc(
        "Most events one returned mail without a valid "
        "token (or about recipients its token does not "
        "vouch for) may record; the rest are logged, and "
        "the mail is kept for `txmail bounces unparsed`.",
        5,
    )
    untrusted_events_per_message: int = _doc(
        "Most untrusted events recorded for one message, whatever number of reports name it.", 20
    )
    forwards_per_message: int = _doc(
        "Most returned mails (DSNs, auto-replies, unclassified mail) forwarded to the envelope "
        "sender of one message (one queue file, so one recipient when bounce-tracked); later "
        "ones are recorded as usual and not forwarded, so whoever holds a bounce address "
        "cannot relay more mail to the client through it.",
        5,
    )
    socket: str = _doc(
        "UNIX socket of `txmail bounces serve`, the long-running recorder each "
        "pipe process hands its mail to, relative to state_dir; when nothing "
        "listens there the pipe exits 75 and Postfix retries later.",
        "run/bounce/bounce.sock",
    )
    parser_workers: int = _doc(
        "Parser processes `txmail bounces serve` keeps, as the "
        "unprivileged `user`, with no key and no Redis connection.",
        3,
    )
    parser_timeout: float = _doc(
        "Seconds one returned mail may take a parser worker (DKIM "
        "lookups of complaints included); then the worker is killed "
        "and the mail is kept for `txmail bounces unparsed`.",
        30.0,
    )
    parser_cpu_seconds: int = _doc(
        "CPU seconds one returned mail may take a parser worker "
        "(RLIMIT_CPU); then the kernel ends it and the mail is kept "
        "for `txmail bounces unparsed`.",
        10,
    )
    parser_memory_mb: int = _doc("Address space of one parser worker in MiB (RLIMIT_AS).", 512)


@dataclass(frozen=True)
class MaillogSettings:
    """`txmail maillog`: the follower of Postfix's log, wherever Postfix writes it.

    `txmail postfix install` detects the source of the operator's Postfix (its maillog_file,
    else the file rsyslog writes mail to, else journald) and writes it here."""

    source: str = _doc(
        'Where Postfix\'s log is read: "file" (a log file, followed across rotation) or '
        '"journald" (the systemd journal, read with journalctl).',
        "file",
    )
    path: str = _doc(
        'The log file when source = "file", e.g. /var/log/mail.log; empty: '
        "postfix.maillog (the maillog_file of txmail's own Postfix).",
        "",
    )
    journal_namespace: str = _doc(
        'The journald namespace when source = "journald" (journalctl --namespace); '
        "empty: the system journal.",
        "",
    )
    journal_match: list = _doc(
        'journalctl matches that select Postfix\'s entries when source = "journald" '
        "(FIELD=VALUE; several are ORed); the default is the mail facility.",
        ["SYSLOG_FACILITY=2"],
    )
    offset_file: str = _doc(
        "The follower's position file (a file's inode and byte offset, or the journal "
        "cursor), relative to state_dir: on a single Redis the position lives in Redis "
        "with the events, and this file is read only when Redis holds no position (a node "
        "upgrading, a Redis that lost its data), never removed and otherwise ignored; "
        "on a Redis Cluster it is saved here once the lines before it were recorded.",
        "run/maillog.offset",
    )
    rotate_grace: float = _doc(
        "Seconds a rotated log file must give nothing (after the new one appeared) before "
        "it is left, for the lines the logger writes into it until it reopens the log.",
        1.0,
    )
    poll_interval: float = _doc("Seconds between looks at the log when it has nothing new.", 0.2)


@dataclass(frozen=True)
class WebhooksSettings:
    """`txmail webhooks run`: the dispatcher that posts each account's events to its URL."""

    batch_size: int = _doc("Most events in one post.", 100)
    batch_wait: float = _doc("Seconds a batch may wait for more events before it is posted.", 1.0)
    batch_idle: float = _doc(
        "Post a batch sooner when no new event came for this many "
        "seconds (quiet streams get their events quickly).",
        0.25,
    )
    poll_interval: float = _doc("Seconds between looks at the event streams when idle.", 0.1)
    timeout: float = _doc("Seconds to wait for an endpoint's answer.", 10.0)
    retry_base: float = _doc(
        "First retry delay in seconds; it doubles with each failure "
        "(with jitter) up to retry_max_delay.",
        5.0,
    )
    retry_max_delay: float = _doc("Longest delay between two retries, in seconds.", 3600.0)
    retry_window: float = _doc(
        "Seconds an event is retried before it becomes a dead letter (at least 86400).", 86400.0
    )
    dead_letter_max: int = _doc(
        "Dead letters kept per account (the oldest go first, with a "
        "warning in the dispatcher's log).",
        100_000,
    )
    consumer: str = _doc(
        "This dispatcher's name in the consumer group; empty: the host name. "
        "Keep it stable so a restarted dispatcher resumes its own batches.",
        "",
    )
    claim_idle: float = _doc(
        "Seconds after which another dispatcher's unacknowledged events "
        "are taken over (a node that died); longer than retry_max_delay.",
        7200.0,
    )


@dataclass(frozen=True)
class TrackerSettings:
    """`txmail tracker`: opens, clicks, the HTTP send API and /metrics on listen.http."""

    base_url: str = _doc(
        "Public base URL of the tracker that tracked links and open pixels "
        "point at, e.g. https://track.example.com (TRACK_HOST); empty: "
        "https://HOSTNAME.",
        "",
    )
    machine_seconds: float = _doc(
        "Opens and clicks this many seconds or fewer after the "
        "message was accepted are marked as likely machine ones "
        "(link scanners, prefetching proxies).",
        5.0,
    )
    api_timeout: float = _doc(
        "Seconds the HTTP send API waits for each step of Postfix's answer (the whole "
        "dialogue of one send: 3 times this) before it answers 451.",
        60.0,
    )
    api_large_sends: int = _doc(
        "Sends of one account over 1 MiB (or of unknown length) the "
        "HTTP API reads at once; the others wait their turn unread. "
        "Bounds the memory large bodies take (each up to 3 times "
        "max_message_size).",
        2,
    )
    trust_forwarded: bool = _doc(
        "Take the client address from X-Forwarded-For (only behind a reverse proxy you run).", False
    )
    metrics_networks: list = _doc(
        "Client networks (CIDR) that may read /metrics.", ["127.0.0.0/8", "::1/128"]
    )


@dataclass(frozen=True)
class ConsoleSettings:
    """The web console at /console/ on the tracker's listen.http (txmail/tracker/console)."""

    enabled: bool = _doc("Serve the console at /console/.", True)
    session_hours: float = _doc(
        "Hours a console session lasts after its login; logout, a suspension, a revoked "
        "credential of the account or a rotation of the console key ends it sooner.",
        12.0,
    )
    token_hours: float = _doc(
        "Hours an operator token from `txmail console token` may be used to log in "
        "(default of its --hours).",
        1.0,
    )
    login_window: float = _doc("Seconds over which console login attempts are counted.", 900.0)
    login_attempts_per_address: int = _doc(
        "Console login attempts one client address may make per login_window.", 30
    )
    login_attempts_per_login: int = _doc(
        "Console login attempts naming one login (or API key, or token) per login_window.", 10
    )
    upload_max_bytes: int = _doc("Largest suppression CSV the console takes, in bytes.", 1048576)
    upload_max_rows: int = _doc("Most rows of one suppression CSV the console takes.", 10000)


# Postfix's Dovecot SASL client waits 10 s for an answer (measured: a held attempt of 8 s, plus
# Dovecot's 2 s auth_failure_delay, reaches the client as 454 4.7.0 "Connection lost to
# authentication server"), so authpolicy may hold an attempt for this long at most.
MAX_AUTH_DELAY = 6


@dataclass(frozen=True)
class AuthPolicySettings:
    """`txmail authpolicy`: a per-login limit on password guessing, asked by Dovecot.

    Dovecot's own penalty is per client address; this one counts the failed logins of each
    login name from every address. An attempt from a client address that has logged in with
    the same password before is never slowed or refused, so the real client keeps working
    during an attack; any other attempt counts as a failure until it succeeds.
    """

    listen: str = _doc(
        "Loopback HOST:PORT on which Dovecot's auth process asks; only Dovecot "
        "may use it (each request carries the key in key_file).",
        "127.0.0.1:10030",
    )
    key_file: str = _doc(
        "Secret shared with Dovecot (request header and password-hash "
        "nonce), relative to state_dir; `txmail init` creates it (mode 0600).",
        "secrets/authpolicy.key",
    )
    free_failures: int = _doc(
        "Recent failed logins of one login name that are answered "
        "without delay (typos, a client with an old password).",
        5,
    )
    reject_failures: int = _doc(
        "Recent failed logins from which attempts by unknown clients "
        "are refused without checking the password.",
        30,
    )
    forgive_seconds: float = _doc(
        "One recent failure is forgotten every this many seconds; "
        "past reject_failures, the sustained guessing rate of a "
        "login is one password per forgive_seconds.",
        120.0,
    )
    max_delay: int = _doc(
        "Longest delay, in seconds, Dovecot holds an attempt by an unknown "
        "client (it doubles per failure past free_failures, from 1 s). At "
        "most 6: Postfix gives up on Dovecot's answer after 10 s (the "
        "client then sees 454 4.7.0) and Dovecot adds its own 2 s to every "
        "failure.",
        5,
    )
    remember_days: float = _doc(
        "Days a client address (IPv6: its /64) that logged in with a "
        "password stays known for that login and password.",
        30.0,
    )
    remember_max: int = _doc("Client addresses remembered per login (the oldest go first).", 100)


@dataclass(frozen=True)
class LogSettings:
    """Where txmail's own processes log (txmail/logs.py). Postfix logs to postfix.maillog."""

    format: str = _doc(
        '"text" (`TIME LEVEL LOGGER: MESSAGE queue_id=... account=...`) or "json" (one '
        "object per line: time, level, component, logger, message, queue_id, account).",
        "text",
    )
    destination: str = _doc(
        '"stderr": `txmail up` passes every component\'s lines to its own standard error, '
        "each text line led by `NAME: `, for journald and `docker compose logs`; "
        '"files": STATE/log/NAME.log, reopened when moved away (contrib/logrotate/txmail).',
        "stderr",
    )


@dataclass(frozen=True)
class DevSettings:
    """`txmail up --dev` only."""

    capture_port: int = _doc(
        "Port of the local capture SMTP server that stands in for the internet in --dev mode.", 2525
    )
    capture_dir: str = _doc(
        "Where --dev stores every delivered message, relative to state_dir.", "captured"
    )


@dataclass(frozen=True)
class Settings:
    """All of txmail's settings. Top-level keys come first in the file."""

    state_dir: str = _doc(
        "Folder for the Postfix instance, Dovecot, Redis, keys and logs. "
        "Default: the folder of the configuration file.",
        "",
    )
    hostname: str = _doc(
        "This relay's host name: HELO name, certificate name, and the target "
        "of each sending domain's return-path CNAME.",
        "mta.example.test",
    )
    node_name: str = _doc(
        "This node's name in its per-node metrics (latency histograms, component heartbeats): "
        "every process of the node, in one container or several sharing the state directory, "
        "writes under it. Empty: `hostname`. Give each node of one Redis its own.",
        "",
    )
    bounce_domain: str = _doc(
        "Return-path domain used for sending domains that have no "
        "return-path subdomain of their own.",
        "bounces.example.test",
    )
    user: str = _doc(
        "Unprivileged system user that runs Postfix's bounce pipe and the parsers "
        "of returned mail; it can read no secret. The private Redis runs as "
        "USER-redis. `txmail up` creates both if they are missing.",
        "txmail",
    )
    listen: ListenSettings = field(default_factory=ListenSettings)
    trusted: TrustedSettings = field(default_factory=TrustedSettings)
    postfix: PostfixSettings = field(default_factory=PostfixSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    dovecot: DovecotSettings = field(default_factory=DovecotSettings)
    milter: MilterSettings = field(default_factory=MilterSettings)
    policyd: PolicydSettings = field(default_factory=PolicydSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    domains: DomainsSettings = field(default_factory=DomainsSettings)
    spam: SpamSettings = field(default_factory=SpamSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    bounce_pipe: BouncePipeSettings = field(default_factory=BouncePipeSettings)
    maillog: MaillogSettings = field(default_factory=MaillogSettings)
    webhooks: WebhooksSettings = field(default_factory=WebhooksSettings)
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    authpolicy: AuthPolicySettings = field(default_factory=AuthPolicySettings)
    log: LogSettings = field(default_factory=LogSettings)

    # -- derived values -------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    def path(self, relative: str) -> Path:
        """A path setting resolved against the state directory."""
        p = Path(relative)
        return p if p.is_absolute() else self.state_path / p

    @property
    def maillog_path(self) -> Path:
        """The log file the maillog follower reads when maillog.source is "file"."""
        return self.path(self.maillog.path or self.postfix.maillog)

    @property
    def external_postfix(self) -> bool:
        """Installed into the operator's Postfix (`txmail postfix install`), not running an
        instance of its own."""
        return bool(self.postfix.queue_directory)

    @property
    def postfix_queue_path(self) -> Path:
        """The queue directory of the Postfix txmail works with."""
        if self.postfix.queue_directory:
            return Path(self.postfix.queue_directory)
        return self.state_path / "postfix/spool"

    @property
    def sasl_socket(self) -> Path:
        """Dovecot's auth listener for Postfix's smtpd: in the state directory for txmail's
        own instance; inside the operator's queue directory (QUEUE/txmail/auth) when installed
        into an external Postfix, whose smtpd may run chrooted there (Debian's master.cf)."""
        if self.postfix.queue_directory:
            return Path(self.postfix.queue_directory) / "txmail/auth"
        return self.state_path / "run/dovecot/auth-postfix"

    def read_secret(self, name: str) -> bytes:
        """The bytes of one secrets.* key file, e.g. read_secret("bounce_key_file")."""
        return read_key_file(f"secrets.{name}", self.path(getattr(self.secrets, name)))


def read_key_file(key: str, path: Path, hint: str = "") -> bytes:
    """The bytes of the key file `path` (the setting `key`); ConfigError naming both when it
    cannot be read (`hint` says how to mend that) or holds fewer than 16 bytes."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}{hint}") from None
    if len(secret) < 16:
        raise ConfigError(f"{key}: {path} holds fewer than 16 bytes")
    return secret


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$|"
    r"^localhost$",
    re.I,
)
_RELAYHOST = re.compile(r"^(\[[^\]\s]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


def _check_port(key: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{key} = {value}: a port must be between 1 and 65535")


def with_port_offset(settings: Settings, offset: int) -> Settings:
    """`settings` with every port a node listens on moved up by `offset`, on 127.0.0.1: what
    `txmail init --port-offset` writes, so several nodes (or a test's) share one machine."""
    return dataclasses.replace(
        settings,
        listen=ListenSettings(
            address="127.0.0.1",
            smtp=25 + offset,
            submissions=465 + offset,
            submission=587 + offset,
            http=8080 + offset,
            reinject=10025 + offset,
        ),
        dev=dataclasses.replace(settings.dev, capture_port=2525 + offset),
        authpolicy=dataclasses.replace(settings.authpolicy, listen=f"127.0.0.1:{10030 + offset}"),
        spam=dataclasses.replace(settings.spam, listen=f"127.0.0.1:{11336 + offset}"),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def validate(settings: Settings) -> None:
    """Check values that a type alone cannot (ports, host names, relayhost syntax)."""
    for f in dataclasses.fields(ListenSettings):
        if f.type in ("int", int):
            _check_port(f"listen.{f.name}", getattr(settings.listen, f.name))
    _check_port("dev.capture_port", settings.dev.capture_port)
    trusted = settings.trusted
    if trusted.port:
        _check_port("trusted.port", trusted.port)
        if not trusted.networks or not trusted.account:
            raise ConfigError("trusted.port is set: give trusted.networks and trusted.account too")
        for network in trusted.networks:
            try:
                ipaddress.ip_network(str(network))
            except ValueError:
                raise ConfigError(
                    f"trusted.networks: {network!r} is not a network (write e.g. 10.0.0.0/24)"
                ) from None
    for key in ("hostname", "bounce_domain"):
        if not _HOSTNAME.match(getattr(settings, key)):
            raise ConfigError(f"{key} = {getattr(settings, key)!r} is not a valid domain name")
    relayhost = settings.postfix.relayhost
    if relayhost:
        m = _RELAYHOST.match(relayhost)
        if not m:
            raise ConfigError(f"postfix.relayhost = {relayhost!r}: write HOST:PORT or [HOST]:PORT")
        if m.group(2):
            _check_port("postfix.relayhost", int(m.group(2)[1:]))
    for key in ("config_directory", "queue_directory"):
        folder = getattr(settings.postfix, key)
        if folder and not Path(folder).is_absolute():
            raise ConfigError(f"postfix.{key} = {folder!r}: write an absolute path")
    if bool(settings.postfix.config_directory) != bool(settings.postfix.queue_directory):
        raise ConfigError(
            "postfix.config_directory and postfix.queue_directory go together: set both "
            "(`txmail postfix install` does) or neither"
        )
    if settings.postfix.message_size_limit < 1024:
        raise ConfigError("postfix.message_size_limit must be at least 1024 bytes")
    if settings.postfix.smtp_recipient_rate < 0:
        raise ConfigError("postfix.smtp_recipient_rate must be 0 (no limit) or more")
    if not re.match(r"^[0-9]+[smhdw]?$", settings.postfix.digest_rate_delay):
        raise ConfigError(
            f"postfix.digest_rate_delay = {settings.postfix.digest_rate_delay!r}: "
            "write a Postfix time such as 1s or 2m"
        )
    if not re.match(r"^[0-9]+[smhdw]?$", settings.postfix.delay_warning_time):
        raise ConfigError(
            f"postfix.delay_warning_time = {settings.postfix.delay_warning_time!r}: "
            "write a Postfix time such as 4h or 30m (0: no delay notices)"
        )
    if settings.redis.timeout <= 0:
        raise ConfigError("redis.timeout must be a positive number of seconds")
    if settings.redis.appendfsync not in APPENDFSYNC:
        raise ConfigError(
            f"redis.appendfsync = {settings.redis.appendfsync!r}: write one of "
            + ", ".join(f'"{choice}"' for choice in APPENDFSYNC)
        )
    if settings.dovecot.resync_interval <= 0:
        raise ConfigError("dovecot.resync_interval must be a positive number of seconds")
    if settings.policyd.hold_seconds < 10:
        raise ConfigError("policyd.hold_seconds must be at least 10")
    if not 0 <= settings.policyd.workers <= 64:
        raise ConfigError("policyd.workers must be between 0 (one per core) and 64")
    if (
        min(
            settings.policyd.settings_refresh,
            settings.policyd.idle_timeout,
            settings.policyd.metrics_interval,
        )
        <= 0
    ):
        raise ConfigError(
            "policyd.settings_refresh, policyd.idle_timeout and "
            "policyd.metrics_interval must be positive numbers of seconds"
        )
    if settings.policyd.metrics_interval > 10:
        raise ConfigError(
            "policyd.metrics_interval must be at most 10 seconds: policyd's heartbeat for "
            "/metrics goes with each write, and an alert takes a minute without one for a "
            "policyd that stopped"
        )
    if settings.policyd.listen:
        m = re.match(r"^(\[[^\]\s]+\]|[A-Za-z0-9.-]+):(\d{1,5})$", settings.policyd.listen)
        if not m:
            raise ConfigError(f"policyd.listen = {settings.policyd.listen!r}: write HOST:PORT")
        _check_port("policyd.listen", int(m.group(2)))
    if not settings.redis.prefix.endswith(":"):
        raise ConfigError(
            f"redis.prefix = {settings.redis.prefix!r}: use a name ending in a colon, such as "
            '"txmail:" (every key is PREFIX followed by its name; without the colon one '
            "installation's prefix would be the start of another's)"
        )
    if settings.redis.url and not re.match(r"^(redis|rediss|unix)://", settings.redis.url):
        raise ConfigError(f"redis.url = {settings.redis.url!r}: use redis://, rediss:// or unix://")
    if not re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", settings.domains.return_path_prefix):
        raise ConfigError(
            f"domains.return_path_prefix = {settings.domains.return_path_prefix!r}:"
            ' use one DNS label such as "mta"'
        )
    if settings.domains.dkim_key_bits < 2048:
        raise ConfigError("domains.dkim_key_bits must be 2048 or more")
    for key in ("domains.nameservers", "spam.nameservers"):
        section, name = key.split(".")
        for server in getattr(getattr(settings, section), name):
            if not isinstance(server, str) or not re.match(r"^[0-9a-fA-F.:]+(:\d{1,5})?$", server):
                raise ConfigError(f"{key}: {server!r} is not an IP address (optionally with :PORT)")
    if settings.spam.rspamd_url and not re.match(r"^https?://", settings.spam.rspamd_url):
        raise ConfigError(
            f"spam.rspamd_url = {settings.spam.rspamd_url!r}: use http:// or https://"
        )
    host, sep, port = settings.spam.listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"spam.listen = {settings.spam.listen!r}: write ADDRESS:PORT, e.g. 127.0.0.1:11336"
        )
    _check_port("spam.listen", int(port))
    if not _is_loopback(host):
        # rspamd's normal worker answers anyone who connects, and it has no password.
        raise ConfigError(
            f"spam.listen = {settings.spam.listen!r}: rspamd must listen on loopback "
            "(127.0.0.1:PORT or [::1]:PORT); to share one rspamd between nodes, run it "
            "yourself and set spam.rspamd_url"
        )
    if settings.domains.spf_include and not _HOSTNAME.match(settings.domains.spf_include):
        raise ConfigError(
            f"domains.spf_include = {settings.domains.spf_include!r} is not a domain name"
        )
    if settings.domains.dmarc_rua and not re.match(
        r"^(mailto:)?[^@\s;,]+@[^@\s;,]+$", settings.domains.dmarc_rua
    ):
        raise ConfigError(
            f"domains.dmarc_rua = {settings.domains.dmarc_rua!r}: write an address, "
            "e.g. dmarc@example.com"
        )
    if settings.spam.on_failure not in ("tempfail", "skip"):
        raise ConfigError(f"spam.on_failure = {settings.spam.on_failure!r}: use tempfail or skip")
    if settings.spam.timeout <= 0:
        raise ConfigError("spam.timeout must be a positive number of seconds")
    _validate_events(settings)
    _validate_log(settings.log)
    tracker = settings.tracker
    if tracker.base_url and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", tracker.base_url):
        raise ConfigError(
            f"tracker.base_url = {tracker.base_url!r}: write e.g. https://track.example.com"
        )
    if tracker.api_large_sends < 1:
        raise ConfigError("tracker.api_large_sends must be at least 1")
    if tracker.machine_seconds < 0 or tracker.api_timeout <= 0:
        raise ConfigError(
            "tracker.machine_seconds must not be negative and tracker.api_timeout "
            "must be a positive number of seconds"
        )
    for network in tracker.metrics_networks:
        try:
            ipaddress.ip_network(str(network), strict=False)
        except ValueError:
            raise ConfigError(
                f"tracker.metrics_networks: {network!r} is not a network (write e.g. 10.0.0.0/24)"
            ) from None
    _validate_authpolicy(settings.authpolicy)
    _validate_console(settings.console)


def _validate_console(console: ConsoleSettings) -> None:
    """[console]: positive durations and limits."""
    if console.session_hours <= 0 or console.token_hours <= 0 or console.login_window <= 0:
        raise ConfigError(
            "console.session_hours, console.token_hours and console.login_window must be positive"
        )
    if console.login_attempts_per_address < 1 or console.login_attempts_per_login < 1:
        raise ConfigError("console.login_attempts_per_address and _per_login must be at least 1")
    if console.upload_max_bytes < 1024 or console.upload_max_rows < 1:
        raise ConfigError(
            "console.upload_max_bytes must be at least 1024 and console.upload_max_rows at least 1"
        )


def _validate_authpolicy(authpolicy: AuthPolicySettings) -> None:
    """[authpolicy]: loopback only, thresholds in order, delays Dovecot and clients can wait."""
    m = re.match(r"^(\[([0-9a-fA-F:]+)\]|([0-9.]+)):(\d{1,5})$", authpolicy.listen)
    host = (m.group(2) or m.group(3)) if m else ""
    try:
        loopback = bool(m) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"authpolicy.listen = {authpolicy.listen!r}: write a loopback "
            "address and port such as 127.0.0.1:10030"
        )
    _check_port("authpolicy.listen", int(m.group(4)))  # type: ignore[union-attr]
    if not 0 <= authpolicy.free_failures < authpolicy.reject_failures:
        raise ConfigError(
            "authpolicy.free_failures must be 0 or more and below authpolicy.reject_failures"
        )
    if not 1 <= authpolicy.max_delay <= MAX_AUTH_DELAY:
        raise ConfigError(
            f"authpolicy.max_delay must be between 1 and {MAX_AUTH_DELAY} seconds: "
            "Postfix waits 10 s for Dovecot's answer, and Dovecot adds 2 s to "
            "every failed login"
        )
    if authpolicy.forgive_seconds <= 0 or authpolicy.remember_days <= 0:
        raise ConfigError(
            "authpolicy.forgive_seconds and authpolicy.remember_days must be positive"
        )
    if not 1 <= authpolicy.remember_max <= 10_000:
        raise ConfigError("authpolicy.remember_max must be between 1 and 10000")


def _validate_events(settings: Settings) -> None:
    """[events], [bounce_pipe], [maillog] and [webhooks]."""
    hooks = settings.webhooks
    if not 1 <= hooks.batch_size <= 1000:
        raise ConfigError("webhooks.batch_size must be between 1 and 1000")
    for key in (
        "batch_wait",
        "batch_idle",
        "poll_interval",
        "timeout",
        "retry_base",
        "retry_max_delay",
        "claim_idle",
    ):
        if getattr(hooks, key) <= 0:
            raise ConfigError(f"webhooks.{key} must be a positive number of seconds")
    if hooks.claim_idle <= hooks.retry_max_delay:
        raise ConfigError(
            "webhooks.claim_idle must be longer than webhooks.retry_max_delay, or "
            "a dispatcher would take over another's batch while it waits to retry"
        )
    if hooks.retry_window < 86400:
        raise ConfigError("webhooks.retry_window must be at least 86400 seconds (24 hours)")
    _validate_maillog(settings.maillog)
    for key, value in (
        ("events.stream_max", settings.events.stream_max),
        ("events.counter_days", settings.events.counter_days),
        ("events.tags_per_day", settings.events.tags_per_day),
        ("webhooks.dead_letter_max", hooks.dead_letter_max),
        ("bounce_pipe.unparsed_max", settings.bounce_pipe.unparsed_max),
        ("bounce_pipe.unparsed_max_bytes", settings.bounce_pipe.unparsed_max_bytes),
        ("bounce_pipe.max_message_bytes", settings.bounce_pipe.max_message_bytes),
        ("bounce_pipe.parser_workers", settings.bounce_pipe.parser_workers),
        ("bounce_pipe.parser_cpu_seconds", settings.bounce_pipe.parser_cpu_seconds),
        ("bounce_pipe.parser_memory_mb", settings.bounce_pipe.parser_memory_mb),
        (
            "bounce_pipe.untrusted_events_per_report",
            settings.bounce_pipe.untrusted_events_per_report,
        ),
        (
            "bounce_pipe.untrusted_events_per_message",
            settings.bounce_pipe.untrusted_events_per_message,
        ),
        ("bounce_pipe.forwards_per_message", settings.bounce_pipe.forwards_per_message),
    ):
        if value < 1:
            raise ConfigError(f"{key} must be at least 1")
    if settings.bounce_pipe.parser_timeout <= 0:
        raise ConfigError("bounce_pipe.parser_timeout must be a positive number of seconds")


def _validate_log(log: LogSettings) -> None:
    if log.format not in ("text", "json"):
        raise ConfigError(f'log.format = {log.format!r}: use "text" or "json"')
    if log.destination not in ("stderr", "files"):
        raise ConfigError(f'log.destination = {log.destination!r}: use "stderr" or "files"')


def _validate_maillog(maillog: MaillogSettings) -> None:
    if maillog.poll_interval <= 0:
        raise ConfigError("maillog.poll_interval must be a positive number of seconds")
    if maillog.rotate_grace < 0:
        raise ConfigError("maillog.rotate_grace must not be negative")
    if maillog.source not in ("file", "journald"):
        raise ConfigError(f'maillog.source = {maillog.source!r}: use "file" or "journald"')
    if maillog.journal_namespace and not re.match(
        r"^[A-Za-z0-9_.:-]{1,64}$", maillog.journal_namespace
    ):
        raise ConfigError(
            f"maillog.journal_namespace = {maillog.journal_namespace!r} is not a namespace name"
        )
    for match in maillog.journal_match:
        if not isinstance(match, str) or not re.match(r"^[A-Z0-9_]+=[^\s]*$", match):
            raise ConfigError(
                f"maillog.journal_match: {match!r}: write FIELD=VALUE, e.g. SYSLOG_FACILITY=2"
            )


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a settings dataclass from a TOML table, refusing unknown keys and bad types."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{where}{key}"
        f = known.get(key)
        if f is None:
            raise ConfigError(f"unknown key {name!r}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table ([{name}])")
            kwargs[key] = _build(type(default), value, f"{name}.")
            continue
        kwargs[key] = _coerce(name, default, value)
    return cls(**kwargs)


def _coerce(name: str, default: Any, value: Any) -> Any:
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name} must be a whole number, not {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{name} must be a {expected.__name__}, not {value!r}")
    return value


def from_dict(values: dict[str, Any]) -> Settings:
    """Settings from dataclasses.asdict(settings) (a process handed them rather than a file),
    checked as load() checks a file."""
    settings: Settings = _build(Settings, values, "")
    validate(settings)
    return settings


def find_config_file(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("TXMAIL_CONFIG")
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG_NAME)


def load(path: str | Path) -> Settings:
    """Read, check and return the settings in `path`."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file (create one with `txmail init --state-dir DIR`)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        settings = _build(Settings, raw, "")
        if not settings.state_dir:
            settings = dataclasses.replace(settings, state_dir=str(path.resolve().parent))
        elif not Path(settings.state_dir).is_absolute():
            resolved = (path.resolve().parent / settings.state_dir).resolve()
            settings = dataclasses.replace(settings, state_dir=str(resolved))
        validate(settings)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return settings


def to_toml(settings: Settings) -> str:
    """Render settings as TOML, every key present, each preceded by its documentation."""
    lines: list[str] = []

    def emit(obj: Any, section: str) -> None:
        nested = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                nested.append((f.name, value))
                continue
            lines.append(f"# {f.metadata.get('doc', '')}")
            lines.append(f"{f.name} = {_toml_value(value)}")
        for name, value in nested:
            lines.append("")
            lines.append(f"[{section}{name}]")
            emit(value, f"{section}{name}.")

    emit(settings, "")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def reference() -> str:
    """The configuration reference (Markdown table), generated from the declarations above."""
    rows = ["| key | default | meaning |", "|---|---|---|"]

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
                continue
            default = _toml_value(value)
            rows.append(f"| `{prefix}{f.name}` | `{default}` | {f.metadata.get('doc', '')} |")

    walk(Settings(), "")
    return "\n".join(rows) + "\n"
