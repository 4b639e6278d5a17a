"""What every handler of the tracker's HTTP server shares: its Services, the one error shape,
the client's address and who may read /metrics.

server.py (opens, clicks, the app), api.py (/v1) and metrics.py (/metrics) import this module
and nothing of each other's but what server.py assembles.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

from aiohttp import web

from txmail import store
from txmail.config import Settings
from txmail.tokens.links import LinkSigner
from txmail.tracker.recording import Recording


@dataclass
class Services:
    """What the handlers share; built once in serve(), passed in for tests."""

    settings: Settings
    signer: LinkSigner
    recording: Recording | None
    client: store.Client  # redis client of the API and /metrics (sync, used in threads)
    keys: store.Keys
    dropped: int = 0  # hits dropped because the queue was full
    # /v1/send bodies over api.LARGE_BODY read at once, per account
    large_sends: dict[str, asyncio.Semaphore] = field(default_factory=dict)


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def error_response(
    http_status: int,
    message: str,
    smtp_code: int | None = None,
    status: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The one error shape of every endpoint."""
    body = {"error": {"message": message, "smtp_code": smtp_code, "status": status}}
    return web.json_response(body, status=http_status, headers=headers)


def not_found() -> web.Response:
    return error_response(404, "No such page; check the link", 550, "5.1.0")


def client_address(request: web.Request, settings: Settings) -> str:
    if settings.tracker.trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    return (request.remote or "")[:64]


def metrics_allowed(remote: str, networks: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)
