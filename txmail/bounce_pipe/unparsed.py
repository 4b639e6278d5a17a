"""Returned mail the bounce pipe could not read or match, kept: the store of them moved to the
core (txmail/store/unparsed.py), which the CLI and the console's unparsed page read too."""

from txmail.store.unparsed import (  # noqa: F401 - re-exported
    MAX_REASON,
    UnparsedBounce,
    Unreadable,
    get,
    keep,
    newest,
)
