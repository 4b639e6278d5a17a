"""`txmail postfix install` / `uninstall` against Debian's stock main.cf and master.cf, with
Postfix's own postconf reading the result (no Postfix runs)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from txmail.config import Settings
from txmail.errors import ConfigError
from txmail.stack import install, render


@pytest.fixture
def operator_dir(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy("/usr/share/postfix/main.cf.debian", etc / "main.cf")
    shutil.copy("/usr/share/postfix/master.cf.dist", etc / "master.cf")
    subprocess.run(
        [
            "postconf",
            "-c",
            str(etc),
            "-e",
            f"queue_directory = {tmp_path / 'spool'}",
            "myhostname = mx.operator.test",
        ],
        check=True,
    )
    return etc


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    state = tmp_path / "state"
    state.mkdir()
    return Settings(state_dir=str(state))


def test_installed_settings_read_the_operators_queue_directory(
    settings: Settings, operator_dir: Path
) -> None:
    installed = install.installed_settings(settings, operator_dir)
    queue = operator_dir.parent / "spool"
    assert installed.postfix.queue_directory == str(queue)
    assert installed.postfix_queue_path == queue
    assert installed.postfix.config_directory == str(operator_dir.resolve())
    assert installed.sasl_socket == queue / "txmail/auth"
    assert installed.policyd.socket == str(queue / "txmail/policyd.sock")
    # what main.cf says: relative to the queue directory, so chrooted daemons reach it
    assert render.postfix_socket(installed, Path(installed.milter.socket)) == "txmail/milter.sock"
    assert render.postfix_socket(settings, settings.path(settings.milter.socket)).startswith("/")
    assert install.own_settings(installed).milter.socket == settings.milter.socket


def test_plan_for_debians_master_cf(settings: Settings, operator_dir: Path) -> None:
    installed = install.installed_settings(settings, operator_dir)
    plan = install.plan(installed, Path(settings.state_dir) / "txmail.toml", operator_dir)
    services = {e.key: e for e in plan.master}
    reinject = services[f"127.0.0.1:{settings.listen.reinject}/inet"]
    submission = services[f"127.0.0.1:{settings.listen.submission}/inet"]
    for entry in (reinject, submission, services["txmail-api/unix"]):
        assert entry.fields[2] == "y"  # chrooted, as Debian's own smtpd
    assert services["bouncepipe/unix"].fields[2] == "n"
    assert "smtpd_milters=unix:txmail/milter.sock" in submission.args
    assert "smtpd_milters=" in reinject.args  # its own override wins
    assert "socketmap:unix:txmail/socketmap.sock:relay" in plan.main["relay_domains"]


def test_install_then_uninstall_is_byte_for_byte(settings: Settings, operator_dir: Path) -> None:
    before = {n: (operator_dir / n).read_bytes() for n in install.CONFIG_FILES}
    installed = install.installed_settings(settings, operator_dir)
    config_file = Path(settings.state_dir) / "txmail.toml"
    backup = install.apply(install.plan(installed, config_file, operator_dir), operator_dir)
    assert (operator_dir / "master.cf").read_bytes() != before["master.cf"]
    # installing again keeps the first backup: it holds the operator's files
    again = install.apply(install.plan(installed, config_file, operator_dir), operator_dir)
    assert again == backup and install.backups(operator_dir) == [backup]
    # a change of the operator's after the install is not undone without --force
    subprocess.run(["postconf", "-c", str(operator_dir), "-e", "biff = yes"], check=True)
    with pytest.raises(ConfigError, match="main.cf was changed after"):
        install.uninstall(operator_dir)
    assert install.uninstall(operator_dir, force=True) == backup
    assert {n: (operator_dir / n).read_bytes() for n in install.CONFIG_FILES} == before
    assert install.backups(operator_dir) == []
    with pytest.raises(ConfigError, match="not installed"):
        install.uninstall(operator_dir)


def test_an_earlier_installs_socketmap_outside_the_queue_is_replaced(
    settings: Settings, operator_dir: Path
) -> None:
    old = f"socketmap:unix:{settings.state_path}/run/socketmap/socketmap.sock:relay"
    subprocess.run(
        ["postconf", "-c", str(operator_dir), "-e", f"relay_domains = op.example, {old}"],
        check=True,
    )
    installed = install.installed_settings(settings, operator_dir)
    plan = install.plan(installed, Path(settings.state_dir) / "txmail.toml", operator_dir)
    assert plan.main["relay_domains"] == (
        "op.example, bounces.example.test, socketmap:unix:txmail/socketmap.sock:relay"
    )


# Debian's amavisd-new reinjection service (README.Debian), on txmail's default reinject port.
AMAVIS_REINJECT = (
    "127.0.0.1:10025 inet n - n - - smtpd -o content_filter= "
    "-o local_recipient_maps= -o smtpd_restriction_classes= -o mynetworks=127.0.0.0/8"
)


def test_an_operators_service_of_the_same_name_is_refused(
    settings: Settings, operator_dir: Path
) -> None:
    assert settings.listen.reinject == 10025
    with (operator_dir / "master.cf").open("a") as master:
        master.write(AMAVIS_REINJECT.replace(" -o", "\n  -o") + "\n")
    installed = install.installed_settings(settings, operator_dir)
    with pytest.raises(
        ConfigError,
        match=r"service 127\.0\.0\.1:10025 inet that txmail did not install \(smtpd -o "
        r"content_filter= .*set listen\.reinject in txmail\.toml to a free port",
    ):
        install.plan(installed, Path(settings.state_dir) / "txmail.toml", operator_dir)


def test_an_operators_transport_of_the_same_name_is_refused(
    settings: Settings, operator_dir: Path
) -> None:
    with (operator_dir / "master.cf").open("a") as master:
        master.write("priority unix - - n - - smtp\n  -o smtp_helo_name=op.example\n")
    installed = install.installed_settings(settings, operator_dir)
    with pytest.raises(ConfigError, match="service priority unix that txmail did not install"):
        install.plan(installed, Path(settings.state_dir) / "txmail.toml", operator_dir)


def test_a_reinstall_replaces_txmails_own_services(settings: Settings, operator_dir: Path) -> None:
    config_file = Path(settings.state_dir) / "txmail.toml"
    installed = install.installed_settings(settings, operator_dir)
    backup = install.apply(install.plan(installed, config_file, operator_dir), operator_dir)
    reinject = "127.0.0.1:10025/inet"
    assert reinject in install.previous_install(operator_dir)
    # marked (syslog_name=txmail/reinject): txmail's own
    assert install.plan(installed, config_file, operator_dir).master
    # another syslog_name since: the last install's copy says the service is txmail's
    renamed = dataclasses.replace(
        installed, postfix=dataclasses.replace(installed.postfix, syslog_name="relay")
    )
    plan = install.plan(renamed, config_file, operator_dir)
    assert "syslog_name=relay/reinject" in {e.key: e for e in plan.master}[reinject].args
    # without that copy (an install made before it was kept) only the mark tells
    (backup / "installed" / install.INSTALLED_SERVICES).unlink()
    with pytest.raises(ConfigError, match=":587 inet that txmail did not install"):
        install.plan(renamed, config_file, operator_dir)


def test_install_then_uninstall_without_force(settings: Settings, operator_dir: Path) -> None:
    before = {n: (operator_dir / n).read_bytes() for n in install.CONFIG_FILES}
    installed = install.installed_settings(settings, operator_dir)
    config_file = Path(settings.state_dir) / "txmail.toml"
    backup = install.apply(install.plan(installed, config_file, operator_dir), operator_dir)
    assert install.uninstall(operator_dir) == backup
    assert {n: (operator_dir / n).read_bytes() for n in install.CONFIG_FILES} == before
    assert install.backups(operator_dir) == []


def test_a_reinstall_over_the_operators_later_change_is_refused(
    settings: Settings, operator_dir: Path
) -> None:
    installed = install.installed_settings(settings, operator_dir)
    config_file = Path(settings.state_dir) / "txmail.toml"
    backup = install.apply(install.plan(installed, config_file, operator_dir), operator_dir)
    banner = "smtpd_banner = $myhostname ESMTP operator"
    subprocess.run(["postconf", "-c", str(operator_dir), "-e", banner], check=True)
    edited = (operator_dir / "main.cf").read_bytes()
    plan = install.plan(installed, config_file, operator_dir)
    with pytest.raises(
        ConfigError,
        match=r"main\.cf was changed after the last `txmail postfix install` .*run `txmail "
        r"postfix uninstall` first, or install with --force, knowing that uninstall then "
        r"restores .*/main\.cf from before txmail",
    ):
        install.apply(plan, operator_dir)
    assert (operator_dir / "main.cf").read_bytes() == edited  # nothing changed
    # uninstall first keeps the edit in view: it refuses without --force
    with pytest.raises(ConfigError, match="main.cf was changed after"):
        install.uninstall(operator_dir)
    # --force re-installs, as the error says
    assert install.apply(plan, operator_dir, force=True) == backup
    assert (backup / "installed" / "main.cf").read_bytes() == edited
