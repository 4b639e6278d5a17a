"""The command line loads a command's module only when that command runs."""

from __future__ import annotations

import subprocess
import sys

import click

from txmail.cli import COMMAND_MODULES, main


def test_every_listed_command_is_defined_by_its_module() -> None:
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name, name
    assert main.get_command(ctx, "no-such-command") is None
    assert sorted(COMMAND_MODULES) == main.list_commands(ctx)


def test_parsing_bounces_does_not_load_redis_dns_or_crypto() -> None:
    """`txmail bounces parse` runs on many files at a time; its start-up should not pay for
    the libraries only the daemons use."""
    code = (
        "import sys\n"
        "from txmail.cli import main\n"
        "main.get_command(None, 'bounces')\n"
        "print(sorted(m for m in ('redis', 'dns', 'cryptography') if m in sys.modules))\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"
