"""The operator's pages: accounts, nodes, unparsed bounces."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Add the operator pages to the console."""
