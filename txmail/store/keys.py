"""Every Redis key name txmail uses, built in one place.

Keys that belong to one account carry the hash tag `{account}`, so every Lua script touches a
single Redis Cluster slot. Keys that are global (the account index, domain ownership, the queue-id
pointer) are only ever used one key per command.

    PREFIX accounts                  set     names of all accounts
    PREFIX accounts:version          string  bumped on every account change
    PREFIX accounts:changed          channel a message on every account change
    PREFIX domains                   hash    sending domain -> owning account
    PREFIX queue:QID                 string  Postfix queue id -> account (TTL as the message)
    PREFIX domain:DOMAIN             hash    one sending domain: DKIM keys (private halves
                                             included), return-path subdomain
    PREFIX secret:NAME               hash    the installation's HMAC key NAME (bounce, tracking,
                                             webhook, console): current, previous, rotated_at
    PREFIX console:session:ID        hash    tracker console: one session (account, operator,
                                             expires); deleted at logout (TTL)
    PREFIX console:login:KIND:HASH   string  tracker console: login attempts of one client
                                             address (KIND addr) or login (login) (TTL)
    PREFIX return-paths              hash    return-path domain -> sending domain (Postfix relays)
    PREFIX schema                    string  the version of this layout of keys (store/schema.py)
    PREFIX {ACCOUNT}:account         hash    the account's settings and state
    PREFIX {ACCOUNT}:message:QID     hash    one accepted message (TTL)
    PREFIX {ACCOUNT}:usage:m:N       hash    policyd: messages (m), recipients (r), bytes (b)
                                             counted in minute N since 1970 (TTL); :usage:h:N
                                             an hour, :usage:d:N a UTC day
    PREFIX {ACCOUNT}:holds           hash    policyd: queue id -> "m r b" passed at end of data
                                             and not yet counted; their sums *m *r *b (TTL)
    PREFIX {ACCOUNT}:holds:expiry    zset    policyd: queue id by the time its hold lapses (TTL)
    PREFIX {ACCOUNT}:warmup          hash    policyd: days (sending days so far), last (UTC day of
                                             the last send), created (the account it belongs to)
    PREFIX {ACCOUNT}:outcomes:d:N    hash    policyd: delivered, bounced, complained recipients of
                                             UTC day N (TTL)
    PREFIX {ACCOUNT}:reputation      hash    policyd: guard state (warned.bounce, warned.complaint,
                                             suspended)
    PREFIX {ACCOUNT}:reputation:alerts stream policyd: reputation warnings and suspensions (capped)
    PREFIX {ACCOUNT}:suppressions    hash    "LIST:recipient" -> JSON suppression entry (capped)
    PREFIX {ACCOUNT}:suppressions:order   zset  "LIST:recipient" by creation time
    PREFIX {ACCOUNT}:suppressions:expiry  zset  "LIST:recipient" by expiry time (only expiring)
    PREFIX {ACCOUNT}:events          stream  the account's events, one JSON `event` field (capped)
    PREFIX {ACCOUNT}:tags            hash    tag -> number of accepted messages carrying it
    PREFIX {ACCOUNT}:seen:QID        hash    events: "KIND:recipient" -> event id, one per message,
                                             recipient and kind; "untrusted:KIND:recipient" and
                                             "untrusted" (their count) for forged-looking
                                             reports (TTL as the message)
    PREFIX {ACCOUNT}:counts:DAY      hash    events: KIND and "tag:TAG:KIND" -> count of UTC day
                                             DAY (YYYYMMDD), KIND "accepted" from the milter;
                                             "distinct:TAG" and "distinct": the day's tags
                                             counted apart (capped, txmail/stats.py) (TTL)
    PREFIX {ACCOUNT}:counts:all      hash    events: KIND -> count since the account began
                                             (event_record.lua; txmail_events_total);
                                             deleted with the account
    PREFIX {ACCOUNT}:message:QID:events list  events: the message's events as JSON, in the order
                                             recorded (capped; expires with the message record)
    PREFIX {ACCOUNT}:idempotency:HASH string  tracker: the answer to a POST /v1/send with an
                                             Idempotency-Key (HASH: SHA-256 of the key), or its
                                             pending marker (TTL)
    PREFIX {ACCOUNT}:webhook         hash    webhooks: endpoint state (disabled, failing_since,
                                             attempts, next_attempt)
    PREFIX {ACCOUNT}:webhook:secret  hash    webhooks: the account's own secret after a
                                             rotation: current, previous, previous_until
    PREFIX {ACCOUNT}:webhook:dead    stream  webhooks: dead letters, one `event` field (capped)
    PREFIX maillog:position:NODE     string  maillog follower: its position in the log (JSON: a
                                             file's device, inode and offset, or the journal
                                             cursor), written with the events of the lines
                                             before it (maillog_batch.lua)
    PREFIX {ACCOUNT}:webhook:posts   list    webhooks: the last posts and their answers, JSON,
                                             newest first (capped; txmail/webhook_posts.py);
                                             deleted with the account
    PREFIX bounces:unparsed          stream  bounce pipe: returned mail it could not read or
                                             match, kept for `txmail bounces unparsed` (capped)
    PREFIX msgid:MESSAGE-ID          string  Message-ID header -> queue id (TTL as the message)
    PREFIX apikeys                   hash    SHA-256 of an HTTP API key -> account (tracker)
    PREFIX {ACCOUNT}:apikeys         hash    key id -> JSON {created_at, hash} of the account's
                                             API keys (`txmail accounts apikey`)
    PREFIX logins                    hash    SASL login (an email address) -> account; claimed
                                             with HSETNX, so a login has one account
    PREFIX {ACCOUNT}:logins          hash    login -> JSON {password_hash, created_at} of the
                                             account's own logins (`txmail accounts login`)
    PREFIX stats:messages            hash    milter: "accepted", "refused:CODE:STATUS" -> count
    PREFIX stats:policy              hash    policyd: decision outcome -> count
    PREFIX stats:histograms:NODE     hash    latency histograms of one node's milter, policyd
                                             and webhooks (txmail/histograms.py) (TTL)
    PREFIX {LOGIN}:auth:failures     hash    authpolicy: recent failed logins of the login name
                                             LOGIN (an account's name or login, or a guess):
                                             score (forgiven over time), at (TTL)
    PREFIX {LOGIN}:auth:known        zset    authpolicy: keyed hash of (login, client network,
                                             password hash) -> time of its last login (TTL, capped)
"""

from __future__ import annotations

import re

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# An account's extra SASL login: an email address in the characters Dovecot accepts in a
# username (auth_username_chars: letters, digits, '.', '-', '_', '@'), lowercase as Dovecot
# compares it (auth_username_format = %Lu). It contains '@', so it is never an account name.
LOGIN = re.compile(
    r"^(?=.{3,254}$)[a-z0-9._-]{1,64}@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z"
)


NODE_HISTOGRAMS = "stats:histograms:"  # + NODE
NODES_SEEN = "stats:nodes"


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str = "txmail:") -> None:
        self.prefix = prefix

    # global keys
    @property
    def accounts(self) -> str:
        return f"{self.prefix}accounts"

    @property
    def accounts_version(self) -> str:
        return f"{self.prefix}accounts:version"

    @property
    def accounts_changed(self) -> str:
        return f"{self.prefix}accounts:changed"

    @property
    def domains(self) -> str:
        return f"{self.prefix}domains"

    @property
    def logins(self) -> str:
        return f"{self.prefix}logins"

    def account_logins(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:logins"

    def queue(self, queue_id: str) -> str:
        return f"{self.prefix}queue:{queue_id}"

    def domain(self, domain: str) -> str:
        return f"{self.prefix}domain:{domain}"

    @property
    def schema(self) -> str:
        """The version of the layout of keys the data under this prefix has."""
        return f"{self.prefix}schema"

    @property
    def return_paths(self) -> str:
        return f"{self.prefix}return-paths"

    def secret(self, name: str) -> str:
        """One of the installation's HMAC keys: bounce, tracking, webhook or console."""
        return f"{self.prefix}secret:{name}"

    def console_session(self, session_id: str) -> str:
        return f"{self.prefix}console:session:{session_id}"

    def console_token_used(self, nonce: str) -> str:
        return f"{self.prefix}console:token-used:{nonce}"

    def account_credentials(self, account: str) -> str:
        """A counter that every revocation of one of the account's credentials bumps (API
        key revoked, login removed or its password changed, the account's password changed):
        a console session opened before the bump ends."""
        return f"{self.prefix}{{{account}}}:credentials"

    def console_login_attempts(self, kind: str, digest: str) -> str:
        """Console login attempts of one client address ("addr") or login ("login")."""
        return f"{self.prefix}console:login:{kind}:{digest}"

    # per-account keys
    def account(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:account"

    def message(self, account: str, queue_id: str) -> str:
        return f"{self.prefix}{{{account}}}:message:{queue_id}"

    def suppressions(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:suppressions"

    def suppressions_order(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:suppressions:order"

    def suppressions_expiry(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:suppressions:expiry"

    def events(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:events"

    def tag_counts(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:tags"

    # per-account keys of the policy daemon (txmail/policyd)
    def usage(self, account: str, window: str, number: int) -> str:
        """Counted usage of one minute ("m"), hour ("h") or UTC day ("d") since 1970."""
        return f"{self.prefix}{{{account}}}:usage:{window}:{number}"

    def holds(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:holds"

    def holds_expiry(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:holds:expiry"

    def warmup(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:warmup"

    def outcomes(self, account: str, day: int) -> str:
        return f"{self.prefix}{{{account}}}:outcomes:d:{day}"

    def reputation(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:reputation"

    def reputation_alerts(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:reputation:alerts"

    # keys of events, the bounce pipe and the webhooks dispatcher (txmail/events.py, webhooks/)
    def event_seen(self, account: str, queue_id: str) -> str:
        return f"{self.prefix}{{{account}}}:seen:{queue_id}"

    def message_events(self, account: str, queue_id: str) -> str:
        """The index of one message's events (the client's queue id) for GET /v1/messages."""
        return f"{self.prefix}{{{account}}}:message:{queue_id}:events"

    def event_counts(self, account: str, day: str) -> str:
        """Counters of one UTC day, DAY as YYYYMMDD."""
        return f"{self.prefix}{{{account}}}:counts:{day}"

    def webhook(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:webhook"

    def webhook_secret(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:webhook:secret"

    def dead_letters(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:webhook:dead"

    def webhook_posts(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:webhook:posts"

    @property
    def bounces_unparsed(self) -> str:
        return f"{self.prefix}bounces:unparsed"

    def header_message_id(self, message_id: str) -> str:
        return f"{self.prefix}msgid:{message_id}"

    # keys of the tracker and HTTP API (txmail/tracker/) and the counters /metrics reads
    @property
    def api_keys(self) -> str:
        return f"{self.prefix}apikeys"

    def account_api_keys(self, account: str) -> str:
        return f"{self.prefix}{{{account}}}:apikeys"

    def idempotency(self, account: str, key_hash: str) -> str:
        """One Idempotency-Key of POST /v1/send, by the SHA-256 of the key as sent."""
        return f"{self.prefix}{{{account}}}:idempotency:{key_hash}"

    @property
    def message_stats(self) -> str:
        return f"{self.prefix}stats:messages"

    @property
    def policy_stats(self) -> str:
        return f"{self.prefix}stats:policy"

    def node_histograms(self, node: str) -> str:
        """Latency histograms of one node (txmail/histograms.py)."""
        return f"{self.prefix}{NODE_HISTOGRAMS}{node}"

    @property
    def nodes_seen(self) -> str:
        """The nodes that wrote a heartbeat, scored by its time (txmail/histograms.py)."""
        return f"{self.prefix}{NODES_SEEN}"

    def maillog_position(self, node: str) -> str:
        """Where one node's maillog follower is in its log (maillog_batch.lua writes it)."""
        return f"{self.prefix}maillog:position:{node}"

    def event_totals(self, account: str) -> str:
        """Events of the account by kind since it began (never expires): /metrics' counter."""
        return f"{self.prefix}{{{account}}}:counts:all"

    # keys of the password-guessing limit (txmail/authpolicy/); LOGIN is the login name, which
    # is the account's name for real accounts, so they share the account's slot (an account's
    # own logins have slots of their own)
    def auth_failures(self, login: str) -> str:
        return f"{self.prefix}{{{login}}}:auth:failures"

    def auth_known(self, login: str) -> str:
        return f"{self.prefix}{{{login}}}:auth:known"
