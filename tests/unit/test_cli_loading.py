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


def test_the_bounces_commands_defined_elsewhere_are_found() -> None:
    """`bounces serve` and `bounces unparsed` live in txmail/cli/bouncepipe.py; `txmail up`
    starts `txmail bounces serve`, so it must be found when only `bounces` was loaded (a
    fresh interpreter: in this one another test may have loaded bouncepipe already)."""
    code = (
        "import click\n"
        "from txmail.cli import main\n"
        "ctx = click.Context(main)\n"
        "group = main.get_command(ctx, 'bounces')\n"
        "print(group.list_commands(ctx))\n"
        "print([getattr(group.get_command(ctx, n), 'name', None) for n in ('serve', 'unparsed')])\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.split("\n")[:2] == [
        "['parse', 'serve', 'unparsed']",
        "['serve', 'unparsed']",
    ]
