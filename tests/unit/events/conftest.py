"""Fixtures of the event tests (also imported by tests/unit/maillog and tests/unit/webhooks):
a fresh key prefix. The Redis client fixture is tests/conftest.py's."""

from __future__ import annotations

import uuid

import pytest

from txmail.store import Keys


@pytest.fixture
def keys() -> Keys:
    return Keys(f"t{uuid.uuid4().hex[:8]}:")
