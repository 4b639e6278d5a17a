"""`txmail postfix`: render txmail's Postfix configuration, or install it into an existing one."""

from __future__ import annotations

from pathlib import Path

import click

from txmail import config as config_mod
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
    "--maillog-source",
    type=click.Choice(["auto", "file", "journald"]),
    default="auto",
    show_default=True,
    help="Where the maillog follower reads Postfix's log; auto: maillog_file, else the "
    "file the syslog daemon writes mail to, else journald. Written to txmail.toml [maillog].",
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
    maillog_source: str,
    maillog_path: str,
) -> None:
    """Merge txmail's listeners, milter, policy service and bounce transport into an existing
    Postfix without touching the operator's own settings (backed up first), and tell the
    maillog follower where that Postfix logs."""
    settings = obj.settings  # type: ignore[attr-defined]
    config_file = Path(obj.config_path)  # type: ignore[attr-defined]
    operator_dir = Path(postfix_config_dir)
    plan = install.plan(settings, config_file, operator_dir)
    unit = install.systemd_unit(settings, config_file)
    source = _log_source(operator_dir, maillog_source, maillog_path)
    if dry_run:
        click.echo("# main.cf and master.cf changes:")
        click.echo(plan.shell(operator_dir))
        for note in plan.notes:
            click.echo(f"# note: {note}")
        click.echo(
            f"# {config_file} [maillog]: source = {source.source!r}, path = {source.path!r} "
            f"({source.why})"
        )
        if not no_systemd:
            click.echo(f"# {Path(systemd_dir) / 'txmail.service'}:")
            click.echo(unit, nl=False)
        return
    backup = install.apply(plan, operator_dir)
    click.echo(
        f"txmail: {len(plan.main)} main.cf settings and {len(plan.master)} master.cf "
        f"services installed into {operator_dir} (backup in {backup})"
    )
    config_mod.set_in_file(config_file, "maillog", source.settings())
    config_mod.set_in_file(
        config_file, "postfix", {"operator_config_dir": str(operator_dir.resolve())}
    )
    shown = source.path or "the journal"
    click.echo(f"txmail: the maillog follower reads {shown} ({source.why}); see {config_file}")
    if not no_systemd:
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
            f"--external-postfix; then: postfix -c {operator_dir} reload"
        )


def _log_source(operator_dir: Path, source: str, path: str) -> logsource.LogSource:
    """The operator's choice, or what is detected for the Postfix in `operator_dir`."""
    if source == "journald":
        return logsource.LogSource("journald", "", "--maillog-source journald")
    maillog_file = install.postconf(operator_dir, "-h", "maillog_file").strip()
    if source == "file" and path:
        return logsource.LogSource("file", path, "--maillog-path")
    found = logsource.gather(maillog_file)
    if source == "file" and found.source != "file":
        raise ConfigError("--maillog-source file: no log file was found; give --maillog-path")
    return found


COMMANDS = [postfix]
