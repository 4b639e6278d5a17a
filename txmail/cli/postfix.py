"""`txmail postfix`: render txmail's Postfix configuration, or install it into an existing one."""

from __future__ import annotations

from pathlib import Path

import click

from txmail.stack import install, render


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
@click.pass_obj
def install_cmd(
    obj: object, postfix_config_dir: str, dry_run: bool, systemd_dir: str, no_systemd: bool
) -> None:
    """Merge txmail's listeners, milter, policy service and bounce transport into an existing
    Postfix without touching the operator's own settings (backed up first)."""
    settings = obj.settings  # type: ignore[attr-defined]
    config_file = Path(obj.config_path)  # type: ignore[attr-defined]
    operator_dir = Path(postfix_config_dir)
    plan = install.plan(settings, config_file, operator_dir)
    unit = install.systemd_unit(settings, config_file)
    if dry_run:
        click.echo("# main.cf and master.cf changes:")
        click.echo(plan.shell(operator_dir))
        for note in plan.notes:
            click.echo(f"# note: {note}")
        if not no_systemd:
            click.echo(f"# {Path(systemd_dir) / 'txmail.service'}:")
            click.echo(unit, nl=False)
        return
    backup = install.apply(plan, operator_dir)
    click.echo(
        f"txmail: {len(plan.main)} main.cf settings and {len(plan.master)} master.cf "
        f"services installed into {operator_dir} (backup in {backup})"
    )
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


COMMANDS = [postfix]
