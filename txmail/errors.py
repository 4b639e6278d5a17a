"""txmail exception tree.

Every error txmail raises on purpose derives from TxmailError. Each process maps the tree to
the outcomes its caller understands:

    TxmailError
     ├── ConfigError          bad or missing settings       CLI: one line, exit 2
     ├── UsageError           a command was given bad input  CLI: one line, exit 2
     ├── NotFound             a named account, domain, ...   CLI: one line, exit 1
     ├── Conflict             it exists already / is owned   CLI: one line, exit 1
     └── TemporaryFailure     Redis down, a peer not ready   milter 4xx, policy DEFER, pipe exit 75
          └── StoreUnavailable

Anything else that escapes is a bug; the daemons treat it like TemporaryFailure (a 4xx), so
nothing is ever accepted unchecked.
"""

from __future__ import annotations


class TxmailError(Exception):
    """Base of every error txmail raises on purpose."""


class ConfigError(TxmailError):
    """The configuration is missing, malformed or names something that does not exist."""


class UsageError(TxmailError):
    """A command was given input it cannot use."""


class NotFound(TxmailError):
    """A named thing (account, domain, message) does not exist."""


class Conflict(TxmailError):
    """The thing exists already, or belongs to somebody else."""


class TemporaryFailure(TxmailError):
    """Trouble that may pass: the caller should try again later."""


class StoreUnavailable(TemporaryFailure):
    """Redis cannot be reached or did not answer."""
