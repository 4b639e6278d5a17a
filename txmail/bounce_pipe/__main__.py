"""python -m txmail.bounce_pipe --config FILE -- SENDER RECIPIENT

The bounce pipe, as master.cf runs it (as the unprivileged settings.user), and the one place
that hands a returned mail over and exits: `txmail bounce-pipe` (txmail/cli/bouncepipe.py)
calls run() here too, after the CLI has read the configuration. This entry point skips
importing every command of the CLI, which costs Postfix about half a second per returned mail.
It reads the configuration (for the socket's path and the size limit) and hands the mail to
`txmail bounces serve` (txmail/bounce_pipe/handoff.py), which parses and records it; it loads
the standard library only, never redis-py or the parser, and can read no key. When the server
does not answer it exits 75: Postfix keeps the mail and retries. Exits 0 or 75 only, even for
bad arguments or a configuration it cannot read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO

from txmail.bounce_pipe import handoff
from txmail.config import Settings, load


def _arguments(argv: list[str]) -> tuple[str | None, list[str]]:
    config_path = os.environ.get("TXMAIL_CONFIG")
    rest = list(argv)
    if len(rest) >= 2 and rest[0] == "--config":
        config_path, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return config_path, rest


def run(
    load_settings: Callable[[], Settings], args: list[str], stdin: IO[bytes] | None = None
) -> int:
    """Hand the mail on `stdin` for args[1] (from args[0]) to `txmail bounces serve` and
    return its answer: 0 or 75, whatever happens (a pipe command that dies makes Postfix
    discard a bounce, which has a null sender)."""
    try:
        if len(args) < 2:
            print(
                f"txmail bounce-pipe: NOQUEUE: want SENDER RECIPIENT as arguments, got "
                f"{len(args)}; try again later",
                file=sys.stderr,
            )
            return handoff.EX_TEMPFAIL
        settings = load_settings()
        return handoff.pipe(
            str(settings.path(settings.bounce_pipe.socket)),
            args[0],
            args[1],
            stdin or sys.stdin.buffer,
            settings.bounce_pipe.max_message_bytes,
        )
    except BaseException as exc:  # noqa: BLE001 - anything else would make Postfix drop it
        print(
            f"txmail bounce-pipe: NOQUEUE: try again later (exit 75): "
            f"{exc.__class__.__name__}: {str(exc)[:300]}",
            file=sys.stderr,
        )
        return handoff.EX_TEMPFAIL


def main(argv: list[str]) -> int:
    try:
        config_path, args = _arguments(argv)
    except BaseException:  # noqa: BLE001 - still 0 or 75
        return handoff.EX_TEMPFAIL
    if config_path is None:
        print(
            "txmail bounce-pipe: NOQUEUE: want --config FILE -- SENDER RECIPIENT; try again later",
            file=sys.stderr,
        )
        return handoff.EX_TEMPFAIL
    return run(lambda: load(config_path), args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
