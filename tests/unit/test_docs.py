"""Guardrails: the README's generated parts are current, every command documents itself."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from txmail import docs
from txmail.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_generated_sections_are_current() -> None:
    text = README.read_text()
    assert docs.render(text) == text, "run: .venv/bin/python -m txmail.docs README.md"


def all_commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # txmail's own group loads its commands on demand
        command = group.get_command(ctx, name)
        assert command is not None, f"txmail {' '.join((*prefix, name))} cannot be found"
        found.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, (*prefix, name)))
    return found


def test_every_command_has_help() -> None:
    runner = CliRunner()
    commands = all_commands(main)
    assert len(commands) > 10
    for path, command in commands:
        assert command.help and command.help.strip(), f"txmail {' '.join(path)} has no help"
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
