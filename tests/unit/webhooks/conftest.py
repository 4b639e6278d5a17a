"""Redis client and key-prefix fixtures, shared with tests/unit/events."""

from tests.unit.events.conftest import client, keys

__all__ = ["client", "keys"]
