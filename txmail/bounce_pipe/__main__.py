"""python -m txmail.bounce_pipe --config FILE -- SENDER RECIPIENT

The bounce pipe's own entry point, as master.cf runs it: the same as `txmail bounce-pipe`
(txmail/bounce_pipe/main.py) without importing every command of the CLI first, which costs
Postfix about half a second per returned mail. When `txmail bounces serve` listens on
bounce_pipe.socket, the mail is handed to it (txmail/bounce_pipe/handoff.py) and this process
never loads redis-py or the parser; otherwise it parses the mail itself. Exits 0 or 75 only,
even for bad arguments.
"""

from __future__ import annotations

import io
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
    config_path, args = _arguments(argv)
    if config_path is None:
        print("txmail bounce-pipe: no --config FILE; try again later", file=sys.stderr)
        return handoff.EX_TEMPFAIL
    stdin = sys.stdin.buffer
    try:
        settings = load(config_path)
        if len(args) == 2:
            raw = handoff.read_input(stdin, settings.bounce_pipe.max_message_bytes)
            stdin = io.BytesIO(raw)
            code, why = handoff.hand_off(str(settings.path(settings.bounce_pipe.socket)),
                                         args[0], args[1], raw)
            if code != handoff.EX_OK:
                print(f"txmail bounce-pipe: NOQUEUE: try again later (exit {code}): {why}",
                      file=sys.stderr)
            return code
    except handoff.Unavailable:
        pass  # nobody listens: parse it here
    except Exception:  # noqa: BLE001, S110 - run() below meets it again, logs it, exits 75
        pass
    from txmail.bounce_pipe.main import run

    return run(lambda: load(config_path), args, stdin)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
