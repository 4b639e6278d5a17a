"""The command line loads a command's module only when that command runs."""

from __future__ import annotations

import json
import subprocess
import sys

TREE = """
import json, sys, click
from txmail.cli import main
if sys.argv[1] == "eager":  # every module of txmail/cli imported first, as before
    import pkgutil, importlib, txmail.cli
    for info in pkgutil.iter_modules(txmail.cli.__path__):
        importlib.import_module("txmail.cli." + info.name)

def tree(group, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield " ".join((*prefix, name))
        if isinstance(command, click.Group):
            yield from tree(command, (*prefix, name))

print(json.dumps(sorted(tree(main))))
"""


def commands(how: str) -> list[str]:
    shown = subprocess.run(
        [sys.executable, "-c", TREE, how], capture_output=True, text=True, check=True
    )
    return list(json.loads(shown.stdout))


def test_loading_on_demand_finds_every_command_and_subcommand() -> None:
    """Each command of every module of txmail/cli, also subcommands one module adds to
    another's group (bounces serve), is there when loaded on demand."""
    lazy = commands("lazy")
    assert "bounces serve" in lazy and "accounts login add" in lazy
    assert lazy == commands("eager")


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


def test_every_command_a_module_defines_is_in_the_mapping() -> None:
    """A command in a module's COMMANDS that COMMAND_MODULES does not name (or names with
    another module first) could never run: the CLI looks commands up by that mapping only."""
    import importlib
    import pkgutil

    import txmail.cli
    from txmail.cli import COMMAND_MODULES

    found = 0
    for info in pkgutil.iter_modules(txmail.cli.__path__):
        module = importlib.import_module(f"txmail.cli.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            names = COMMAND_MODULES.get(command.name)
            assert names is not None, f"{module.__name__}: {command.name} not in COMMAND_MODULES"
            first = names if isinstance(names, str) else names[0]
            assert first == module.__name__, (command.name, first, module.__name__)
            found += 1
    assert found == len(COMMAND_MODULES)
