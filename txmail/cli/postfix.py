"""`txmail postfix`: render txmail's Postfix configuration, or install it into an existing one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from txmail.config import DEFAULT_CONFIG_NAME as CONFIG_NAME
from txmail.config import Settings
from txmail.errors import ConfigError
from txmail.stack import install, logsource, render


@click.group("postfix")
def postfix() -> None:
    """Render or install the Postfix configuration txmail needs."""


@postfix.command("render")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write main.cf, master.cf and their tables into.",
)
@click.pass_obj
def render_cmd(obj: object, out: str) -> None:
    """Write the configuration of txmail's own Postfix instance to a folder and check it."""
    settings = obj.settings  # type: ignore[attr-defined]
    folder = render.render_postfix(settings, obj.config_path, Path(out))  # type: ignore[attr-defined]
    render.check_postfix(folder)
    for name in render.POSTFIX_FILES:
        click.echo(str(folder / name))


@postfix.command("start-fg")
@click.pass_obj
def start_fg(obj: object) -> None:
    """Prepare the state directory as `txmail up` does, then run txmail's Postfix in the
    foreground (`postfix start-fg`) until SIGTERM or SIGINT, which stop it with `postfix
    stop`: a container's Postfix, under an init that reaps children (the image's tini). Its
    helpers run elsewhere."""
    import signal
    import subprocess
    import sys

    from txmail.stack import supervisor
    from txmail.stack.components import PostfixComponent

    settings = obj.settings  # type: ignore[attr-defined]
    if settings.external_postfix:
        raise ConfigError(
            "postfix start-fg runs txmail's own Postfix; this node is installed into the "
            f"operator's ({settings.postfix.config_directory}), which its own service starts"
        )
    supervisor.prepare(settings, Path(obj.config_path))  # type: ignore[attr-defined]
    supervisor.refuse_to_start(settings, external_postfix=False)
    config_dir = render.postfix_config_dir(settings)
    master = PostfixComponent(
        config_dir, settings.postfix_queue_path, [], settings.path(settings.postfix.maillog)
    )
    # Not exec: out of pid 1, start-fg runs `master -s`, which leads a session of its own, so
    # a signal to this process group would miss it. This process stays, and stops it.
    proc = subprocess.Popen(["postfix", "-c", str(config_dir), "start-fg"])
    stopped: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopped.append(signum)
        master.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = proc.wait()
    sys.exit(0 if stopped else code)


@postfix.command("install")
@click.option(
    "--postfix-config-dir",
    default="/etc/postfix",
    show_default=True,
    type=click.Path(file_okay=False, exists=True),
    help="The existing Postfix configuration to merge into.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print the postconf commands instead of running them."
)
@click.option(
    "--systemd-dir",
    default="/etc/systemd/system",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write txmail.service.",
)
@click.option("--no-systemd", is_flag=True, help="Do not write a systemd unit.")
@click.option(
    "--force",
    is_flag=True,
    help="Install again even if main.cf or master.cf changed since the last install "
    "(uninstall then restores the files from before txmail, without those changes).",
)
@click.option(
    "--maillog-source",
    type=click.Choice(["auto", "file", "journald"]),
    default="auto",
    show_default=True,
    help="Where the maillog follower reads Postfix's log; auto: what txmail.toml [maillog] "
    "says if it names a file or journald, else detected: maillog_file, else the file a "
    "running rsyslogd writes mail to, else journald. Written to txmail.toml [maillog].",
)
@click.option(
    "--maillog-path",
    default="",
    help="The log file with --maillog-source file (default: the one detected).",
)
@click.pass_obj
def install_cmd(
    obj: object,
    postfix_config_dir: str,
    dry_run: bool,
    systemd_dir: str,
    no_systemd: bool,
    force: bool,
    maillog_source: str,
    maillog_path: str,
) -> None:
    """Merge txmail's listeners, milter, policy service and bounce transport into an existing
    Postfix without touching the operator's own settings (backed up first), and tell the
    maillog follower where that Postfix logs."""
    settings = obj.settings  # type: ignore[attr-defined]
    config_file = Path(obj.config_path)  # type: ignore[attr-defined]
    operator_dir = Path(postfix_config_dir).resolve()
    install.check_reinstall(operator_dir, force)  # a dry run tells it too
    installed = install.installed_settings(settings, operator_dir)
    plan = install.plan(installed, config_file, operator_dir)
    unit = install.systemd_unit(installed, config_file)
    source = _log_source(settings, operator_dir, maillog_source, maillog_path)
    installed = dataclasses.replace(
        installed,
        maillog=dataclasses.replace(installed.maillog, source=source.source, path=source.path),
    )
    if dry_run:
        click.echo("# main.cf and master.cf changes:")
        click.echo(plan.shell(operator_dir))
        click.echo(f"# {config_file}: the operator's Postfix and the sockets it connects to:")
        for line in _changed_settings(settings, installed):
            click.echo(f"#   {line}")
        for note in plan.notes:
            click.echo(f"# note: {note}")
        click.echo(f"# the maillog follower: {source.why}")
        if not no_systemd:
            click.echo(f"# {Path(systemd_dir) / 'txmail.service'}:")
            click.echo(unit, nl=False)
        return
    backup = install.apply(plan, operator_dir, force=force)
    install.write_config(installed, config_file)
    click.echo(
        f"txmail: {len(plan.main)} main.cf settings and {len(plan.master)} master.cf "
        f"services installed into {operator_dir} (backup in {backup})"
    )
    click.echo(
        f"txmail: {config_file} now names the operator's Postfix "
        f"(queue directory {installed.postfix.queue_directory}; txmail's sockets in "
        f"{installed.postfix_queue_path / install.SOCKET_FOLDER})"
    )
    shown = source.path or "the journal"
    click.echo(f"txmail: the maillog follower reads {shown} ({source.why})")
    if not no_systemd:
        # The unit's sandbox keeps /etc and the queue directory read-only: what `up` would
        # create there (its users, the socket folder) is made now.
        from txmail.stack import supervisor

        supervisor.ensure_user(installed.user)
        if not installed.redis.url:
            supervisor.ensure_user(supervisor.redis_user(installed))
        (installed.postfix_queue_path / install.SOCKET_FOLDER).mkdir(mode=0o750, exist_ok=True)
        path = Path(systemd_dir) / "txmail.service"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(unit)
        click.echo(
            f"txmail: wrote {path}; run: systemctl daemon-reload && "
            "systemctl enable --now txmail && systemctl reload postfix"
        )
    else:
        click.echo(
            f"txmail: start the daemons with: txmail --config {config_file} up "
            f"--external-postfix; then: {install.command(operator_dir, 'postfix')} -c "
            f"{operator_dir} reload"
        )


def _log_source(
    settings: Settings, operator_dir: Path, source: str, path: str
) -> logsource.LogSource:
    """The operator's choice: the flags, else what txmail.toml says already (an earlier
    install, or the operator's edit); else what is detected for the Postfix in `operator_dir`."""
    current = settings.maillog
    if source == "auto" and (current.path or current.source == "journald"):
        return logsource.LogSource(current.source, current.path, f"as {CONFIG_NAME} says")
    if source == "journald":
        return logsource.LogSource("journald", "", "--maillog-source journald")
    maillog_file = install.postconf(operator_dir, "-h", "maillog_file").strip()
    if source == "file" and path:
        return logsource.LogSource("file", path, "--maillog-path")
    found = logsource.gather(maillog_file)
    if source == "file" and found.source != "file":
        raise ConfigError("--maillog-source file: no log file was found; give --maillog-path")
    return found


def _changed_settings(before: object, after: object, section: str = "") -> list[str]:
    lines = []
    for f in dataclasses.fields(after):  # type: ignore[arg-type]
        old, new = getattr(before, f.name), getattr(after, f.name)
        if dataclasses.is_dataclass(new):
            lines += _changed_settings(old, new, f"{section}{f.name}.")
        elif old != new:
            lines.append(f"{section}{f.name} = {new!r}")
    return lines


@postfix.command("uninstall")
@click.option(
    "--postfix-config-dir",
    default=None,
    type=click.Path(file_okay=False, exists=True),
    help="The Postfix configuration txmail was installed into "
    "(default: postfix.config_directory of txmail.toml, else /etc/postfix).",
)
@click.option(
    "--systemd-dir",
    default="/etc/systemd/system",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where install wrote txmail.service (removed if it is there).",
)
@click.option(
    "--force", is_flag=True, help="Restore even if main.cf or master.cf changed since install."
)
@click.pass_obj
def uninstall_cmd(
    obj: object, postfix_config_dir: str | None, systemd_dir: str, force: bool
) -> None:
    """Put main.cf and master.cf back byte for byte as they were before `install` (removing
    txmail's services), and point txmail.toml back at txmail's own instance."""
    settings = obj.settings  # type: ignore[attr-defined]
    config_file = Path(obj.config_path)  # type: ignore[attr-defined]
    operator_dir = Path(
        postfix_config_dir or settings.postfix.config_directory or "/etc/postfix"
    ).resolve()
    backup = install.uninstall(operator_dir, force=force)
    click.echo(
        f"txmail: restored main.cf and master.cf in {operator_dir} from {backup} (backup removed)"
    )
    reload = f"{install.command(operator_dir, 'postfix')} -c {operator_dir} reload"
    unit = Path(systemd_dir) / "txmail.service"
    if unit.is_file() and "up --external-postfix" in unit.read_text():
        unit.unlink()
        click.echo(f"txmail: removed {unit}")
    if settings.external_postfix:
        sockets = settings.postfix_queue_path / install.SOCKET_FOLDER
        install.write_config(install.own_settings(settings), config_file)
        click.echo(
            f"txmail: {config_file} points at txmail's own instance again; stop txmail's "
            f"daemons, remove {sockets}, and run: {reload}"
        )
    else:
        click.echo(f"txmail: run: {reload}")


COMMANDS = [postfix]
