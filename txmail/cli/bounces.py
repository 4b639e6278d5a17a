"""`txmail bounces`: read returned mail the way the bounce pipe does.

`bounces parse FILE...` prints one JSON line per file, in order:
{"file": ..., "events": [{"kind", "recipient", "status", "reason", "diagnostic"}]}
('-' reads standard input). --details adds every event field and what links
the report to the sent message (Message-ID, Original-Envelope-Id, Postfix
queue id, X- headers of the returned message).

A file that cannot be read gets one line on stderr and no JSON line; the
others are still parsed and the command exits 2. Nothing here needs Redis or
a configuration file.
"""

from __future__ import annotations

import sys

import click

from txmail.bounce_pipe.parse import report_files


@click.group()
def bounces() -> None:
    """Inspect returned mail (bounces, complaints, auto-replies)."""


@bounces.command("parse")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option(
    "--details", is_flag=True, help="Print every event field and the links to the sent message."
)
@click.pass_context
def parse_command(ctx: click.Context, files: tuple[str, ...], details: bool) -> None:
    """Print one JSON line of bounce events per FILE ('-' for stdin)."""
    out = sys.stdout

    def write_line(line: str) -> None:
        # Buffered, unlike click.echo (which flushes each line): a batch of files is one
        # stream of lines, flushed before an error line and at the end.
        out.write(line + "\n")

    def write_error(line: str) -> None:
        out.flush()
        click.echo(f"txmail: error: {line}", err=True)

    status = report_files(list(files), write_line, write_error, details=details)
    out.flush()
    if status:
        ctx.exit(status)


COMMANDS = [bounces]
