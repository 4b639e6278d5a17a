"""python -m txmail.bounce_pipe --config FILE -- SENDER RECIPIENT

The bounce pipe's own entry point, as master.cf runs it: the same as `txmail bounce-pipe`
(txmail/bounce_pipe/main.py) without importing every command of the CLI first, which costs
Postfix about half a second per returned mail. Exits 0 or 75 only, even for bad arguments.
"""

from __future__ import annotations

import os
import sys

from txmail.bounce_pipe.main import EX_TEMPFAIL, run


def _arguments(argv: list[str]) -> tuple[str | None, list[str]]:
    config_path = os.environ.get("TXMAIL_CONFIG")
    rest = list(argv)
    if len(rest) >= 2 and rest[0] == "--config":
        config_path, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return config_path, rest


def main(argv: list[str]) -> int:
    config_path, args = _arguments(argv)
    if config_path is None:
        print("txmail bounce-pipe: no --config FILE; try again later", file=sys.stderr)
        return EX_TEMPFAIL

    def settings():  # type: ignore[no-untyped-def]
        from txmail.config import load

        return load(config_path)

    return run(settings, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
