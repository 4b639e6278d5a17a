"""Per-account settings: every one declared here with its type, default and meaning.

Values live in the account's hash (PREFIX {ACCOUNT}:account) as fields named `set.NAME`, stored as
JSON; a setting that was never set takes its default from this table. `txmail accounts set NAME
KEY=VALUE` and `accounts add --set KEY=VALUE` write them; unknown keys and bad values are a
UsageError naming the key.

from_fields() reads them back as an AccountSettings: one typed attribute per setting (lists as
tuples), defaults filled in, what every daemon reads (`settings.max_recipients`).

To add a setting, add one AccountSetting to SETTINGS (in the section of the process that reads
it) and one attribute to AccountSettings, in the same order. The README's account-settings
reference is generated from this table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from txmail.errors import UsageError

FIELD_PREFIX = "set."


@dataclass(frozen=True)
class AccountSetting:
    name: str
    kind: type  # int, float, bool, str or list (of str)
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns a complaint, or None if fine

    def parse(self, text: str) -> Any:
        """A value from the command line (`KEY=VALUE`)."""
        try:
            if self.kind is bool:
                lowered = text.strip().lower()
                if lowered not in ("true", "false", "on", "off", "yes", "no", "1", "0"):
                    raise ValueError(text)
                value: Any = lowered in ("true", "on", "yes", "1")
            elif self.kind is int:
                value = int(text)
            elif self.kind is float:
                value = float(text)
            elif self.kind is list:
                value = [v.strip() for v in text.split(",") if v.strip()]
            else:
                value = text
        except ValueError:
            raise UsageError(f"{self.name}: {text!r} is not a {self.kind.__name__}") from None
        return self.validate(value)

    def validate(self, value: Any) -> Any:
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise UsageError(f"{self.name}: {value!r} is not a {self.kind.__name__}")
        if self.check is not None:
            complaint = self.check(value)
            if complaint:
                raise UsageError(f"{self.name}: {complaint}")
        return value


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must not be negative"


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


# The seed's list (vbs exe bin bat chm com hta pif reg vbe vba msc msi) plus the executable,
# script, shortcut and disk-image types that mail filters commonly refuse.
FORBIDDEN_EXTENSIONS = (
    "vbs",
    "exe",
    "bin",
    "bat",
    "chm",
    "com",
    "hta",
    "pif",
    "reg",
    "vbe",
    "vba",
    "msc",
    "msi",
    "scr",
    "cpl",
    "dll",
    "js",
    "jse",
    "wsf",
    "wsh",
    "wsc",
    "ws",
    "sct",
    "ps1",
    "psm1",
    "psd1",
    "ps1xml",
    "ps2",
    "msh",
    "cmd",
    "jar",
    "lnk",
    "scf",
    "url",
    "inf",
    "ins",
    "isp",
    "iso",
    "img",
    "vhd",
    "vhdx",
    "msp",
    "mst",
    "application",
    "gadget",
    "appx",
    "appxbundle",
    "msix",
    "msixbundle",
    "appref-ms",
    "settingcontent-ms",
    "hlp",
    "shb",
    "shs",
    "xbap",
    "xll",
    "cab",
    "one",
    "library-ms",
    "search-ms",
)


def _extensions(value: Any) -> str | None:
    for extension in value:
        if not extension or any(c in extension for c in " ,/\\\t") or extension.startswith("."):
            return f"{extension!r}: give extensions without the dot, e.g. exe,scr"
    return None


def _between(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return check


def _quotas(value: Any) -> str | None:
    if not value:
        return "give at least one daily quota, e.g. 50,100,200"
    for quota in value:
        if not (isinstance(quota, str) and quota.isdigit() and int(quota) > 0):
            return f"{quota!r}: each quota is a whole number of recipients above 0"
    return None


def _reasons(value: Any) -> str | None:
    from txmail.outcomes.reasons import REASONS

    for reason in value:
        if reason not in REASONS:
            return f"{reason!r} is not a bounce reason (e.g. userunknown, hostunknown, hasmoved)"
    return None


SETTINGS: list[AccountSetting] = [
    # -- milter (sending rules) -----------------------------------------------------------
    AccountSetting("max_recipients", int, 20, "Most recipients one message may have.", _positive),
    AccountSetting(
        "max_message_size",
        int,
        10 * 1024 * 1024,
        "Largest message in bytes (Postfix's message_size_limit caps it).",
        _positive,
    ),
    AccountSetting(
        "recipient_mode",
        str,
        "multi",
        "`multi` (any recipients) or `single` (one To recipient, BCC copies).",
        _one_of("multi", "single"),
    ),
    AccountSetting(
        "track_bounces", bool, True, "Rewrite the envelope sender to a signed bounce address."
    ),
    AccountSetting(
        "rewrite_from",
        str,
        "auto",
        "Rewrite the From header, whatever its domain, to the MAIL FROM address, "
        "keeping its display name: `on`, `off`, or `auto` (on in single recipient_mode, "
        "else off).",
        _one_of("auto", "on", "off"),
    ),
    AccountSetting(
        "forbidden_extensions",
        list,
        list(FORBIDDEN_EXTENSIONS),
        "Attachment file types refused (also inside zip archives), as extensions "
        "without the dot; Windows executables are refused whatever their name.",
        _extensions,
    ),
    AccountSetting(
        "encrypted_archives",
        str,
        "judge-names",
        "Encrypted archives: `judge-names` accepts an encrypted zip whose member "
        "names are all allowed (its contents cannot be seen) and refuses any "
        "archive whose names are encrypted too (zip, RAR, 7z); `refuse` also "
        "refuses every zip with an encrypted member.",
        _one_of("judge-names", "refuse"),
    ),
    AccountSetting(
        "spam_threshold",
        float,
        15.0,
        "Spam score (rspamd) at or above which a message is refused.",
        _positive,
    ),
    # -- policyd (rate limits, warm-up, reputation) -----------------------------------------
    AccountSetting(
        "messages_per_minute",
        int,
        100,
        "Messages accepted per clock minute (0: no limit).",
        _non_negative,
    ),
    AccountSetting(
        "messages_per_hour",
        int,
        3000,
        "Messages accepted per clock hour (0: no limit).",
        _non_negative,
    ),
    AccountSetting(
        "messages_per_day",
        int,
        50_000,
        "Messages accepted per UTC day (0: no limit).",
        _non_negative,
    ),
    AccountSetting(
        "recipients_per_minute",
        int,
        500,
        "Recipients accepted per clock minute (0: no limit).",
        _non_negative,
    ),
    AccountSetting(
        "recipients_per_hour",
        int,
        10_000,
        "Recipients accepted per clock hour (0: no limit).",
        _non_negative,
    ),
    AccountSetting(
        "recipients_per_day",
        int,
        100_000,
        "Recipients accepted per UTC day (0: no limit); also the cap the warm-up quota grows to.",
        _non_negative,
    ),
    AccountSetting(
        "bytes_per_day",
        int,
        5 * 1024**3,
        "Message bytes accepted per UTC day (0: no limit).",
        _non_negative,
    ),
    AccountSetting(
        "warmup",
        bool,
        True,
        "Warm up: a daily recipient quota that grows with each day the account "
        "actually sends (see warmup_schedule).",
    ),
    AccountSetting(
        "warmup_schedule",
        list,
        ["50"],
        "Daily recipient quotas of warm-up days 1, 2, ...; after the last one the "
        "quota doubles on each sending day until it reaches recipients_per_day "
        "(with no daily cap, warm-up ends after the list).",
        _quotas,
    ),
    AccountSetting(
        "reputation_window_days",
        int,
        7,
        "Days of delivery outcomes the reputation guard looks back over (1-30).",
        _between(1, 30),
    ),
    AccountSetting(
        "reputation_min_recipients",
        int,
        200,
        "Recipients with a final outcome (delivered or hard-bounced) in the window "
        "before the rates are judged.",
        _positive,
    ),
    AccountSetting(
        "max_bounce_rate",
        float,
        2.0,
        "Hard-bounce rate, in percent of recipients with a final outcome, above "
        "which the account is suspended (a warning at 80% of it).",
        _positive,
    ),
    AccountSetting(
        "max_complaint_rate",
        float,
        0.1,
        "Complaint rate, in percent of recipients with a final outcome, above which "
        "the account is suspended (a warning at 80% of it).",
        _positive,
    ),
    # -- bounce pipe and events (suppression, forwarding) ----------------------------------
    AccountSetting(
        "suppress_reasons",
        list,
        ["userunknown", "hostunknown", "hasmoved"],
        "Hard-bounce reasons (Sisimai's words) that put the recipient on the "
        "account's bounce list; soft bounces never do.",
        _reasons,
    ),
    AccountSetting(
        "suppress_guessed_reasons",
        bool,
        False,
        "suppress_reasons also acts on a reason the parser guessed (details.reason_source "
        '"guess"), not only on one a status code or a known MTA phrase named.',
    ),
    AccountSetting(
        "suppress_complaints",
        bool,
        True,
        "A complaint (ARF report) puts the recipient on the bounce list.",
    ),
    AccountSetting(
        "suppression_days",
        int,
        0,
        "Days a bounce-list entry made by a bounce or complaint lasts (0: until removed).",
        _non_negative,
    ),
    AccountSetting(
        "forward_auto_replies",
        bool,
        True,
        "Forward auto-replies and other returned mail that is no delivery notice to the "
        "envelope sender whatever its NOTIFY (SMTPeter's rule); false: never auto-replies, "
        "unclassified mail only under NOTIFY=FAILURE. DSNs always follow NOTIFY. At most "
        "bounce_pipe.forwards_per_message mails are forwarded per message.",
    ),
    # -- tracking (milter/tracking.py, tracker/) -------------------------------------------
    AccountSetting(
        "track_opens",
        bool,
        False,
        "Add an open-tracking pixel to HTML mail (X-Mxm-Flags bit 1 overrides).",
    ),
    AccountSetting(
        "track_clicks",
        bool,
        False,
        "Send the links of HTML mail through the tracker (X-Mxm-Flags bit 2 overrides).",
    ),
    AccountSetting(
        "webhook_every_open",
        bool,
        False,
        "Post every open and click to the webhook, not only the first of each per "
        "message and recipient (all are counted either way).",
    ),
]


BY_NAME: dict[str, AccountSetting] = {}


def _index() -> dict[str, AccountSetting]:
    if len(BY_NAME) != len(SETTINGS):
        BY_NAME.clear()
        BY_NAME.update((s.name, s) for s in SETTINGS)
    return BY_NAME


def spec(name: str) -> AccountSetting:
    found = _index().get(name)
    if found is None:
        raise UsageError(f"unknown account setting {name!r} (known: {', '.join(sorted(_index()))})")
    return found


def parse_assignment(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` from the command line -> (key, checked value)."""
    if "=" not in text:
        raise UsageError(f"{text!r}: write KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    return key, spec(key).parse(raw)


def to_fields(values: dict[str, Any]) -> dict[str, str]:
    return {FIELD_PREFIX + k: json.dumps(spec(k).validate(v)) for k, v in values.items()}


@dataclass(frozen=True)
class AccountSettings(Mapping[str, Any]):
    """Every setting of one account, typed, as SETTINGS declares them (see there for meanings).

    Read the attributes. It is also a read-only Mapping by setting name, for what shows every
    setting (`txmail accounts show`, JSON) and for readers not yet converted to attributes.
    """

    # -- milter (sending rules)
    max_recipients: int
    max_message_size: int
    recipient_mode: str
    track_bounces: bool
    rewrite_from: str
    forbidden_extensions: tuple[str, ...]
    encrypted_archives: str
    spam_threshold: float
    # -- policyd (rate limits, warm-up, reputation)
    messages_per_minute: int
    messages_per_hour: int
    messages_per_day: int
    recipients_per_minute: int
    recipients_per_hour: int
    recipients_per_day: int
    bytes_per_day: int
    warmup: bool
    warmup_schedule: tuple[str, ...]
    reputation_window_days: int
    reputation_min_recipients: int
    max_bounce_rate: float
    max_complaint_rate: float
    # -- bounce pipe and events (suppression, forwarding)
    suppress_reasons: tuple[str, ...]
    suppress_guessed_reasons: bool
    suppress_complaints: bool
    suppression_days: int
    forward_auto_replies: bool
    # -- tracking
    track_opens: bool
    track_clicks: bool
    webhook_every_open: bool

    def __getitem__(self, name: str) -> Any:
        if name not in _index():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return (setting.name for setting in SETTINGS)

    def __len__(self) -> int:
        return len(SETTINGS)

    def as_dict(self) -> dict[str, Any]:
        """Every setting by name, lists as lists: as stored, and as JSON shows them."""
        return {
            setting.name: list(value) if setting.kind is list else value
            for setting, value in zip(SETTINGS, self.values(), strict=True)
        }


def _check_attributes() -> None:
    """AccountSettings has exactly the settings SETTINGS declares, in the same order."""
    declared = [setting.name for setting in SETTINGS]
    attributes = [attribute.name for attribute in fields(AccountSettings)]
    if declared != attributes:
        raise TypeError(f"AccountSettings {attributes} does not match SETTINGS {declared}")


_check_attributes()


def from_fields(raw: dict[str, str]) -> AccountSettings:
    """Every setting, from the account hash, defaults filled in. Unknown stored keys are kept
    out; a stored value that no longer parses falls back to the default."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        stored = raw.get(FIELD_PREFIX + setting.name)
        if stored is None:
            value = setting.default
        else:
            try:
                value = setting.validate(json.loads(stored))
            except (ValueError, UsageError):
                value = setting.default
        values[setting.name] = tuple(value) if setting.kind is list else value
    return AccountSettings(**values)


def reference() -> str:
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = ",".join(s.default) if isinstance(s.default, list) else json.dumps(s.default)
        rows.append(f"| `{s.name}` | `{default}` | {s.doc} |")
    return "\n".join(rows) + "\n"
