"""`txmail tracker`: the HTTP server of opens, clicks, the send API and /metrics."""

from __future__ import annotations

import click


@click.command("tracker")
@click.pass_obj
def tracker(obj: object) -> None:
    """Run the tracker and HTTP API on listen.http (normally started by `txmail up`)."""
    from txmail.cli.daemons import setup_logging
    from txmail.tracker import server

    setup_logging(obj.settings, "tracker")  # type: ignore[attr-defined]
    server.serve(obj.settings)  # type: ignore[attr-defined]


COMMANDS = [tracker]
