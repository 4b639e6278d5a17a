"""txmail's state in Redis: one connection factory for a single Redis or a Redis Cluster.

Everything txmail shares between processes and nodes lives in Redis. Callers get a client from
`connect()` and key names from `keys.Keys`; the same code runs against one Redis and against a
Cluster because every multi-key operation stays inside one hash-tagged slot.

Fails: redis errors are turned into StoreUnavailable (a TemporaryFailure) by `guard()`.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from txmail.errors import StoreUnavailable
from txmail.store.keys import Keys

if TYPE_CHECKING:
    from txmail.config import Settings

Client = redis.Redis | redis.cluster.RedisCluster

__all__ = ["Client", "Keys", "connect", "effective_url", "guard", "holds_password", "shown_url"]


def effective_url(settings: Settings) -> str:
    """The configured Redis URL, or the socket of the private redis-server `txmail up` runs."""
    if settings.redis.url:
        return settings.redis.url
    return f"unix://{settings.path('run/redis/redis.sock')}"


def holds_password(url: str) -> bool:
    """True when a Redis URL carries a password (redis://:PASSWORD@host, user:PASSWORD, or a
    password= query option)."""
    parts = urllib.parse.urlsplit(url)
    return bool(parts.password) or any(
        name.lower() == "password" and value
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )


def shown_url(url: str) -> str:
    """The URL as it may be printed or logged: a password becomes ***, whether it is given
    before the host (redis://:SECRET@host) or as a query option (redis://host?password=SECRET,
    which redis-py also reads)."""
    if not holds_password(url):
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    if parts.query:
        query = [
            (name, "***" if name.lower() == "password" else value)
            for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urllib.parse.urlencode(query, safe="*"))
    # Joined by hand: urlunsplit() writes unix:///path as unix:/path.
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + (
        f"?{parts.query}" if parts.query else ""
    )


def connect(settings: Settings, url: str | None = None) -> Client:
    """A client for the configured Redis (or Cluster), with short timeouts so callers fail fast.

    One immediate retry, no backoff: it replaces a pooled connection that a Redis restart
    broke, while a Redis that is down fails the call at once (redis-py's default of ten retries
    with growing pauses kept an SMTP client waiting 4 s for its 451). Every caller has its own
    answer to an outage: the milter's 451, the pipe's exit 75, the followers' retry loops."""
    url = url or effective_url(settings)
    timeout = settings.redis.timeout
    if settings.redis.cluster:
        return redis.cluster.RedisCluster.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
    )


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn any Redis failure inside the block into StoreUnavailable naming what was tried."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailable(f"{what}: Redis unavailable ({exc.__class__.__name__})") from exc
