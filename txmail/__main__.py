"""`python -m txmail` is the txmail command (used by pipe(8) and the supervisor)."""

from txmail.cli import main

main(prog_name="txmail")
