"""The account holder's pages: suppressions, domains, webhooks, SMTP settings."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Add the account pages to the console."""
