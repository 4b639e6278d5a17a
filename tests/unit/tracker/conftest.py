"""The key-prefix fixture, shared with tests/unit/events."""

from tests.unit.events.conftest import keys

__all__ = ["keys"]
