"""python -m txmail.bounce_pipe --config FILE -- SENDER RECIPIENT

The bounce pipe's own entry point, as master.cf runs it (as the unprivileged settings.user):
the same as `txmail bounce-pipe` (txmail/bounce_pipe/main.py) without importing every command
of the CLI first, which costs Postfix about half a second per returned mail. It reads the
configuration (for the socket's path and the size limit) and hands the mail to `txmail bounces
serve` (txmail/bounce_pipe/handoff.py), which parses and records it; it loads the standard
library only, never redis-py or the parser, and can read no key. When the server does not
answer it exits 75: Postfix keeps the mail and retries. Exits 0 or 75 only, even for bad
arguments.
"""

from __future__ import annotations

import os
import sys

from txmail.bounce_pipe import handoff
from txmail.config import load


def _arguments(argv: list[str]) -> tuple[str | None, list[str]]:
    config_path = os.environ.get("TXMAIL_CONFIG")
    rest = list(argv)
    if len(rest) >= 2 and rest[0] == "--config":
        config_path, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return config_path, rest


def main(argv: list[str]) -> int:
    try:
        config_path, args = _arguments(argv)
        if config_path is None or len(args) < 2:
            print("txmail bounce-pipe: NOQUEUE: want --config FILE -- SENDER RECIPIENT; "
                  "try again later", file=sys.stderr)
            return handoff.EX_TEMPFAIL
        settings = load(config_path)
        return handoff.pipe(str(settings.path(settings.bounce_pipe.socket)), args[0], args[1],
                            sys.stdin.buffer, settings.bounce_pipe.max_message_bytes)
    except BaseException as exc:  # noqa: BLE001 - anything else would make Postfix drop it
        print(f"txmail bounce-pipe: NOQUEUE: try again later (exit 75): "
              f"{exc.__class__.__name__}: {str(exc)[:300]}", file=sys.stderr)
        return handoff.EX_TEMPFAIL


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
