"""stack/rspamd.py: the configuration `txmail up` writes for its rspamd, where the milter asks
it, and doctor's word when it is missing."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from txmail import config
from txmail.config import Settings
from txmail.errors import ConfigError
from txmail.stack import doctor, rspamd
from txmail.stack.supervisor import build
from txmail_testing.harness import TXMAIL, state_dir


def spam_node(tmp_path: Path, **spam: object) -> Settings:
    base = Settings(state_dir=str(tmp_path))
    return dataclasses.replace(base, spam=dataclasses.replace(base.spam, enabled=True, **spam))


def test_the_stock_configuration(tmp_path: Path) -> None:
    settings = spam_node(tmp_path, nameservers=["127.0.0.1:5353"])
    conf = rspamd.render(settings)
    assert conf == tmp_path / "rspamd/rspamd.conf"
    text = conf.read_text()
    assert '.include "$CONFDIR/common.conf"' in text
    assert 'bind_socket = "127.0.0.1:11336";' in text and "controller" not in text
    assert 'type = "console";' in text
    options = (tmp_path / "rspamd/txmail.d/options.inc").read_text()
    assert 'nameserver = ["127.0.0.1:5353"];' in options
    assert f'"{tmp_path}/rspamd/txmail.d/options.inc"' in text
    assert (tmp_path / "rspamd/db").is_dir()
    argv = rspamd.argv(tmp_path / "rspamd")
    assert argv[:4] == ["rspamd", "-f", "-c", str(conf)]
    assert f"--var=LOCAL_CONFDIR={tmp_path / 'rspamd'}" in argv
    assert f"--var=DBDIR={tmp_path / 'rspamd/db'}" in argv
    # the system's resolver again: the override goes
    rspamd.render(
        dataclasses.replace(settings, spam=dataclasses.replace(settings.spam, nameservers=[]))
    )
    assert not (tmp_path / "rspamd/txmail.d/options.inc").exists()


def test_only_db_belongs_to_rspamd(tmp_path: Path) -> None:
    """rspamd reads Lua from its LOCAL_CONFDIR as root (rspamd.local.lua): a worker, which
    parses hostile mail, must not be able to write there. Also after an older txmail gave the
    whole folder to _rspamd."""
    worker = pwd.getpwnam(rspamd.USER)
    folder = tmp_path / "rspamd"
    for sub in ("", "db", "local.d", "override.d", "txmail.d"):
        (folder / sub).mkdir(exist_ok=True)
        os.chown(folder / sub, worker.pw_uid, worker.pw_gid)
    rspamd.render(spam_node(tmp_path, nameservers=["127.0.0.1:5353"]))
    owned = {
        str(path.relative_to(folder))
        for path in [folder, *folder.rglob("*")]
        if path.stat().st_uid == worker.pw_uid or path.stat().st_gid == worker.pw_gid
    }
    assert owned == {"db"}
    for path in [folder, *folder.rglob("*")]:
        if path.name != "db":
            want = 0o755 if path.is_dir() else 0o644
            assert stat.S_IMODE(path.stat().st_mode) == want, path


@pytest.mark.parametrize("listen", ["0.0.0.0:11336", "[::]:11336", "192.0.2.1:11336"])
def test_rspamd_listens_only_on_loopback(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match="spam.listen .*must listen on loopback"):
        config.validate(spam_node(tmp_path, listen=listen))
    for loopback in ("127.0.0.1:11336", "127.0.0.2:11336", "[::1]:11336", "localhost:11336"):
        config.validate(spam_node(tmp_path, listen=loopback))


def test_where_the_milter_asks() -> None:
    spam = config.SpamSettings()
    assert spam.url == ""
    assert dataclasses.replace(spam, enabled=True).url == "http://127.0.0.1:11336"
    everywhere = dataclasses.replace(spam, enabled=True, listen="0.0.0.0:11400")
    assert everywhere.url == "http://127.0.0.1:11400"
    other = dataclasses.replace(spam, enabled=True, rspamd_url="http://spam.internal:11333")
    assert other.url == "http://spam.internal:11333"
    assert config.with_port_offset(Settings(), 100).spam.listen == "127.0.0.1:11436"


@pytest.mark.parametrize("listen", ["11336", "localhost:", "127.0.0.1:70000"])
def test_a_bad_listen_is_refused(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match="spam.listen"):
        config.validate(spam_node(tmp_path, listen=listen))


def test_up_starts_rspamd_before_the_milter_only_when_enabled(tmp_path: Path) -> None:
    conf = tmp_path / "txmail.toml"
    names = [c.name for c in build(spam_node(tmp_path), conf, dev=False)]
    assert "rspamd" in names and names.index("rspamd") < names.index("milter")
    assert "rspamd" not in [c.name for c in build(Settings(state_dir=str(tmp_path)), conf, False)]


def test_doctor_says_rspamd_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = spam_node(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no rspamd on it
    [problem] = doctor.check_spam(settings)
    assert problem.blocking
    assert problem.line() == (
        "error: spam.enabled is on but the rspamd program is not installed, so `txmail up` "
        "cannot run the spam check; install it (`apt-get install rspamd`) or set "
        "spam.enabled = false"
    )
    assert doctor.check_spam(Settings(state_dir=str(tmp_path))) == []


def test_doctor_says_rspamd_does_not_answer(tmp_path: Path) -> None:
    settings = spam_node(tmp_path)
    [problem] = doctor.check_spam_answers(settings, ping=lambda url: False)
    assert not problem.blocking
    assert "rspamd at http://127.0.0.1:11336 does not answer" in problem.what
    assert doctor.check_spam_answers(settings, ping=lambda url: True) == []
    assert doctor.check_spam_answers(Settings(), ping=lambda url: False) == []


def test_init_spam_turns_the_check_on() -> None:
    state = state_dir("initspam")
    try:
        subprocess.run(
            [*TXMAIL, "init", "--state-dir", str(state), "--spam"], check=True, capture_output=True
        )
        assert config.load(state / "txmail.toml").spam.enabled
    finally:
        shutil.rmtree(state)
