"""Settings: defaults round-trip through TOML; every bad value names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from txmail import config
from txmail.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "txmail.toml"
    path.write_text(text)
    return path


def test_defaults_round_trip(tmp_path: Path) -> None:
    settings = config.Settings(state_dir=str(tmp_path))
    loaded = config.load(write(tmp_path, config.to_toml(settings)))
    assert loaded == settings


def test_state_dir_defaults_to_the_config_folder(tmp_path: Path) -> None:
    assert config.load(write(tmp_path, "")).state_dir == str(tmp_path.resolve())


@pytest.mark.parametrize(
    "text,message",
    [
        ("colour = 1", "unknown key 'colour'"),
        ("[listen]\nsmtp = 0", "listen.smtp = 0: a port must be between 1 and 65535"),
        ("[listen]\nsmtp = true", "listen.smtp must be a whole number"),
        ("[redis]\ncluster = 'yes'", "redis.cluster must be true or false"),
        ("[redis]\nurl = 'http://x'", "redis.url"),
        ("hostname = 'not a host'", "hostname = 'not a host' is not a valid domain name"),
        ("[postfix]\nrelayhost = 'a b'", "postfix.relayhost"),
        ("[postfix]\nrelayhost = '[127.0.0.1]:99999'", "postfix.relayhost = 99999"),
        ("[trusted]\nport = 2600", "trusted.networks and trusted.account"),
        ("[trusted]\nport = 2600\nnetworks = ['x']\naccount = 'a'", "'x' is not a network"),
        ("listen = 3", "listen must be a table"),
        ("[listen", "not valid TOML"),
        ("[maillog]\nsource = 'syslog'", 'maillog.source = \'syslog\': use "file" or "journald"'),
        ("[maillog]\njournal_match = ['postfix']", "maillog.journal_match: 'postfix'"),
        ("[maillog]\njournal_namespace = 'a b'", "maillog.journal_namespace"),
        ("[maillog]\nrotate_grace = -1", "maillog.rotate_grace must not be negative"),
        # policyd's heartbeat goes with each write: an alert waits a minute for one
        ("[policyd]\nmetrics_interval = 61", "policyd.metrics_interval must be at most 10"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        config.load("/nonexistent/txmail.toml")


def test_reference_lists_every_key() -> None:
    reference = config.reference()
    for key in ("listen.submission", "redis.url", "trusted.networks", "dovecot.passwd_file"):
        assert f"`{key}`" in reference


def test_maillog_path_defaults_to_postfix_maillog(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, ""))
    assert settings.maillog_path == tmp_path.resolve() / "log/postfix.log"
    settings = config.load(write(tmp_path, "[maillog]\npath = '/var/log/mail.log'"))
    assert settings.maillog_path == Path("/var/log/mail.log")
