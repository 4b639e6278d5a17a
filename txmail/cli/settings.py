"""`txmail config`: check the configuration and print its reference."""

from __future__ import annotations

import click

from txmail import config as config_mod


@click.group("config")
def config_group() -> None:
    """Check and document the configuration file."""


@config_group.command("check")
@click.pass_obj
def check(obj: object) -> None:
    """Load the configuration and report the first problem, if any."""
    settings = obj.settings  # type: ignore[attr-defined]
    click.echo(f"{obj.config_path}: ok (state_dir {settings.state_dir})")  # type: ignore[attr-defined]


@config_group.command("show")
@click.pass_obj
def show(obj: object) -> None:
    """Print the effective configuration, every key with its documentation."""
    click.echo(config_mod.to_toml(obj.settings), nl=False)  # type: ignore[attr-defined]


@config_group.command("reference")
def reference() -> None:
    """Print every configuration key with its default and meaning (Markdown)."""
    click.echo(config_mod.reference(), nl=False)


COMMANDS = [config_group]
