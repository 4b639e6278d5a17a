"""Where the operator's Postfix logs: main.cf's maillog_file, else the file the syslog daemon
writes mail to, else journald; detect() on text, gather() on a folder laid out like /."""

from __future__ import annotations

from pathlib import Path

import pytest

from txmail.errors import ConfigError
from txmail.stack.logsource import LogSource, detect, gather, rsyslogd_runs, syslog_mail_files

# Debian 12's /etc/rsyslog.conf, the rules part.
DEBIAN_RSYSLOG = """
#### RULES ####
*.*;auth,authpriv.none          -/var/log/syslog
auth,authpriv.*                 /var/log/auth.log
cron.*                          -/var/log/cron.log
kern.*                          -/var/log/kern.log
mail.*                          -/var/log/mail.log
user.*                          -/var/log/user.log
*.emerg                         :omusrmsg:*
"""


@pytest.mark.parametrize(
    ("text", "files"),
    [
        (DEBIAN_RSYSLOG, ["/var/log/mail.log", "/var/log/syslog"]),
        (
            "mail.info   -/var/log/mail.info\nmail.warn -/var/log/mail.warn\n",
            ["/var/log/mail.info"],
        ),
        ("mail.=info /var/log/mail.info\n", ["/var/log/mail.info"]),
        ("mail.info;mail.!err /var/log/mail.info\n", ["/var/log/mail.info"]),
        ("mail.err /var/log/mail.err\n", []),
        ("*.*;mail.none -/var/log/messages\n", []),
        ("# mail.* -/var/log/mail.log\n", []),
        ('action(type="omfile" file="/var/log/mail.log")\n', []),
    ],
)
def test_syslog_mail_files(text: str, files: list[str]) -> None:
    assert syslog_mail_files(text) == files


def test_maillog_file_comes_first() -> None:
    found = detect("/var/log/postfix.log", DEBIAN_RSYSLOG, True)
    assert found == LogSource("file", "/var/log/postfix.log", found.why)
    assert "maillog_file" in found.why


def test_then_the_syslog_file_then_journald() -> None:
    assert detect("", DEBIAN_RSYSLOG, True).settings() == {
        "source": "file",
        "path": "/var/log/mail.log",
    }
    assert detect("", "", True).settings() == {"source": "journald", "path": ""}
    assert detect("/dev/stdout", "", True).source == "journald"


def test_nothing_found_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match=r"set \[maillog\] source and path"):
        detect("/dev/stdout", "mail.err /var/log/mail.err\n", False)


def test_gather_reads_the_rsyslog_files(tmp_path: Path) -> None:
    (tmp_path / "etc/rsyslog.d").mkdir(parents=True)
    (tmp_path / "etc/rsyslog.conf").write_text("*.*;mail.none -/var/log/messages\n")
    (tmp_path / "etc/rsyslog.d/50-mail.conf").write_text("mail.* -/srv/log/mail.log\n")
    assert gather("", tmp_path, lambda: True).path == "/srv/log/mail.log"
    with pytest.raises(ConfigError):
        gather("", tmp_path, lambda: False)  # rsyslogd does not run: its files are not written
    (tmp_path / "etc/rsyslog.d/50-mail.conf").unlink()
    with pytest.raises(ConfigError):
        gather("", tmp_path, lambda: True)  # and no journald socket under tmp_path


def test_rsyslogd_runs(tmp_path: Path) -> None:
    (tmp_path / "12").mkdir()
    (tmp_path / "12/comm").write_text("bash\n")
    assert not rsyslogd_runs(tmp_path)
    (tmp_path / "34").mkdir()
    (tmp_path / "34/comm").write_text("rsyslogd\n")
    assert rsyslogd_runs(tmp_path)
