"""The console's data pages: overview, messages, a message's timeline, tags (insight branch).

add_routes(app) adds them to the console's sub-application (txmail/tracker/console).
"""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Add the overview, messages and tags pages (filled in by the insight branch)."""
