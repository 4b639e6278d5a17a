"""The house rule of DESIGN.md (Layout): daemons are peers over one shared core.

A daemon package imports the shared core and libraries, never another daemon; the core imports
no daemon at all; only the top (the CLI, `python -m txmail`, the README generator) may import
anything. Every import counts, including those inside functions and under TYPE_CHECKING: a
lazy import is still a dependency. When this fails, move what two daemons share into the core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "txmail"
DAEMONS = {
    "authpolicy",
    "authsync",
    "bounce_pipe",
    "maillog",
    "milter",
    "policyd",
    "socketmap",
    "stack",
    "tracker",
    "webhooks",
}
TOP = {"cli", "__main__", "docs"}


def part_of(path: Path) -> str:
    """The top-level part of txmail a file belongs to: a sub-package or a module's name."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_parts(module: str, source: str) -> list[tuple[int, str]]:
    """(line, part of txmail) for every import of txmail in `source`, the text of `module`
    ("txmail/milter/finish.py"), relative imports resolved against its package."""
    package = module.removesuffix(".py").split("/")[:-1]
    found = []
    for node in ast.walk(ast.parse(source, module)):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            elif node.module == "txmail":
                names = [f"txmail.{alias.name}" for alias in node.names]
            elif node.module:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            bits = name.split(".")
            if bits[0] == "txmail" and len(bits) > 1:
                found.append((node.lineno, bits[1]))
    return found


def crossings() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        home = part_of(path)
        if home in TOP:
            continue
        module = path.relative_to(PACKAGE.parent).as_posix()
        for line, part in imported_parts(module, path.read_text()):
            if part == home or part not in DAEMONS:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if home in DAEMONS:
                wrong.append(f"{where}: the daemon {home} imports the daemon {part}")
            else:
                wrong.append(f"{where}: the shared core ({home}) imports the daemon {part}")
    return wrong


def test_daemons_import_only_the_core() -> None:
    wrong = crossings()
    assert not wrong, "imports across the house (DESIGN.md, Layout):\n" + "\n".join(wrong)


def test_every_package_is_placed() -> None:
    """A new sub-package must be declared a daemon, the core or the top, so the rule covers it."""
    core = {"store", "accounts", "tokens", "outcomes", "reports"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages - DAEMONS - TOP - core == set()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from txmail.policyd import quota\n", "policyd"),
        ("import txmail.tracker.submit\n", "tracker"),
        ("from txmail import events\n", "events"),
        ("def f():\n    from ..tracker import api\n", "tracker"),
        ("from . import decide\n", "milter"),
    ],
)
def test_every_kind_of_import_is_seen(source: str, expected: str) -> None:
    """The walk sees plain, from, lazy and relative imports."""
    found = imported_parts("txmail/milter/probe.py", source)
    assert [part for _, part in found] == [expected]
