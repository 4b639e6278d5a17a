"""Where an operator's Postfix writes its log, for the maillog follower (maillog.source).

`txmail postfix install` asks, in this order:

  1. main.cf's maillog_file (Postfix's own postlogd writes it): that file;
  2. the configuration of a running rsyslogd (/etc/rsyslog.conf, /etc/rsyslog.d/*.conf) that
     sends the mail facility to a file, e.g. Debian's `mail.*  -/var/log/mail.log`: that file
     (a selector that takes mail.info, where Postfix logs deliveries; mail.warn or mail.err
     would not have them);
  3. a running systemd-journald (its socket exists) and journalctl: the journal;

and writes the answer into txmail.toml [maillog] (source, path), where the operator can
change it. Everything read is an argument of detect(), so it is tested on text;
gather() reads the machine.

Fails: ConfigError when none of them is there, saying which setting to write by hand.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from txmail.errors import ConfigError

RSYSLOG_FILES = ("etc/rsyslog.conf", "etc/rsyslog.d/*.conf")
JOURNALD_SOCKET = "run/systemd/journal/socket"
# Syslog priorities that include info (where Postfix's status=sent lines are).
_INFO_OR_LOWER = {"*", "debug", "info"}


@dataclass(frozen=True)
class LogSource:
    source: str  # "file" or "journald"
    path: str  # the file for "file"; "" for journald
    why: str  # one sentence for the operator

    def settings(self) -> dict[str, str]:
        """The txmail.toml [maillog] keys that say so."""
        return {"source": self.source, "path": self.path}


def syslog_mail_files(config_text: str) -> list[str]:
    """Files a syslog configuration writes the mail facility's info lines to, in order.

    Understands the classic selector lines (`mail.*  -/var/log/mail.log`,
    `mail.info;mail.!err /var/log/mail.info`, `*.*;auth.none /var/log/all`); RainerScript
    `action()` blocks are not read (write maillog.path by hand then)."""
    found: list[str] = []
    for raw in config_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^(\S+)\s+-?(/\S+)$", line)
        if not m:
            continue
        selectors, target = m.group(1), m.group(2)
        takes_mail = False
        for selector in selectors.split(";"):
            facilities, _, priority = selector.partition(".")
            names = facilities.split(",")
            if "mail" not in names and "*" not in names:
                continue
            level = priority.lstrip("!=")
            if level == "none" or (priority.startswith("!") and level in _INFO_OR_LOWER):
                if "mail" in names:
                    takes_mail = False  # info excluded (mail.none, mail.!info)
            elif not priority.startswith("!") and level in _INFO_OR_LOWER:
                takes_mail = True
        if takes_mail and target not in found:
            found.append(target)
    # Prefer a file of mail alone (mail.log) over a catch-all (syslog, messages).
    return sorted(found, key=lambda path: 0 if "mail" in Path(path).name else 1)


def detect(maillog_file: str, syslog_config: str, journald: bool) -> LogSource:
    """The log source from what was found: main.cf's maillog_file, the configuration text of
    the syslog daemon that runs (empty: none runs) and whether journald runs."""
    if maillog_file and not maillog_file.startswith("/dev/"):
        return LogSource("file", maillog_file, f"main.cf sets maillog_file = {maillog_file}")
    files = syslog_mail_files(syslog_config)
    if files:
        return LogSource("file", files[0], f"the syslog daemon writes mail to {files[0]}")
    if journald:
        return LogSource("journald", "", "systemd-journald runs and no file has the mail log")
    where = f" (maillog_file = {maillog_file} cannot be followed)" if maillog_file else ""
    raise ConfigError(
        f"cannot tell where Postfix logs{where}: no maillog_file, no syslog daemon writing "
        "mail to a file, no systemd-journald; set [maillog] source and path in txmail.toml "
        "(or pass --maillog-source and --maillog-path)"
    )


def rsyslogd_runs(proc: Path = Path("/proc")) -> bool:
    """Whether an rsyslogd process runs (its configuration alone writes nothing)."""
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "rsyslogd":
                return True
        except OSError:
            continue
    return False


def gather(
    maillog_file: str, root: Path = Path("/"), syslog_runs: Callable[[], bool] = rsyslogd_runs
) -> LogSource:
    """detect() on this machine (`root` lets a test point it at a folder)."""
    text = []
    for pattern in RSYSLOG_FILES if syslog_runs() else ():
        for path in sorted(root.glob(pattern)):
            try:
                text.append(path.read_text(errors="replace"))
            except OSError:
                continue
    journald = (root / JOURNALD_SOCKET).exists() and shutil.which("journalctl") is not None
    return detect(maillog_file, "\n".join(text), journald)
