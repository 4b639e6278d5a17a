"""[authpolicy] settings: loopback only, thresholds in order; the Dovecot configuration."""

from __future__ import annotations

import dataclasses
import stat
import subprocess
from pathlib import Path

import pytest

from txmail import config
from txmail.authpolicy import decide
from txmail.errors import ConfigError
from txmail.stack import render
from txmail.tokens import authpolicy as credentials


def with_policy(**values: object) -> config.Settings:
    settings = config.Settings()
    return dataclasses.replace(
        settings, authpolicy=dataclasses.replace(settings.authpolicy, **values)
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:10030", "[::1]:10030", "127.0.0.5:1"])
def test_loopback_listeners_are_taken(listen: str) -> None:
    config.validate(with_policy(listen=listen))


@pytest.mark.parametrize(
    "values,words",
    [
        ({"listen": "0.0.0.0:10030"}, "loopback"),
        ({"listen": "10.0.0.1:10030"}, "loopback"),
        ({"listen": "localhost:10030"}, "loopback"),
        ({"listen": "127.0.0.1:70000"}, "port"),
        ({"free_failures": 30}, "below"),
        ({"max_delay": 7}, "between 1 and 6"),
        ({"forgive_seconds": 0.0}, "positive"),
        ({"remember_max": 0}, "between 1 and 10000"),
    ],
)
def test_bad_values_are_refused(values: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        config.validate(with_policy(**values))


def test_the_defaults_are_the_documented_numbers() -> None:
    limits = decide.Limits.from_settings(config.Settings().authpolicy)
    assert limits == decide.Limits()
    assert (
        limits.free_failures,
        limits.reject_failures,
        limits.forgive_seconds,
        limits.max_delay,
    ) == (5, 30, 120.0, 5)


def test_dovecot_gets_the_policy_server_and_its_secrets_privately(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        config.Settings(state_dir=str(tmp_path)),
        authpolicy=with_policy(listen="127.0.0.1:41030").authpolicy,
    )
    conf = render.render_dovecot(settings, tmp_path / "txmail.toml")
    text = conf.read_text()
    key = credentials.read_key(settings)
    assert "auth_policy_server_url = http://127.0.0.1:41030/\n" in text
    assert "auth_policy_check_after_auth = no\n" in text
    assert credentials.header_value(key) not in text and key.decode() not in text
    private = conf.parent / "authpolicy.conf.ext"
    assert f"!include {private}\n" in text
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.path(settings.authpolicy.key_file).stat().st_mode) == 0o600
    assert (
        f"auth_policy_server_api_header = {credentials.HEADER}: {credentials.header_value(key)}\n"
    ) in private.read_text()
    assert (
        len(
            {
                credentials.header_value(key),
                credentials.hash_nonce(key),
                credentials.fingerprint_key(key).decode(),
            }
        )
        == 3
    )
    shown = subprocess.run(
        ["doveconf", "-c", str(conf), "-h", "auth_policy_server_url"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.stdout.strip() == "http://127.0.0.1:41030/", shown.stderr
