"""txmail's state in Redis: one connection factory for a single Redis or a Redis Cluster.

Everything txmail shares between processes and nodes lives in Redis. Callers get a client from
`connect()` and key names from `keys.Keys`; the same code runs against one Redis and against a
Cluster because every multi-key operation stays inside one hash-tagged slot.

Replies: every client `connect()` makes decodes replies (decode_responses=True), so they are
str; redis-py's annotations say bytes | str. `decoded()`, `decoded_hash()` and the like give
callers the str types at the one place a reply comes back.

Fails: redis errors are turned into StoreUnavailable (a TemporaryFailure) by `guard()`.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from txmail.errors import StoreUnavailable
from txmail.store.keys import Keys

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

    from txmail.config import Settings

Client = redis.Redis | redis.cluster.RedisCluster

__all__ = [
    "Client",
    "Keys",
    "connect",
    "decoded",
    "decoded_entries",
    "decoded_hash",
    "decoded_or_none",
    "decoded_streams",
    "effective_url",
    "guard",
    "hash_mapping",
    "holds_password",
    "shown_url",
]


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


def connect(settings: Settings, url: str | None = None, decode: bool = True) -> Client:
    """A client for the configured Redis (or Cluster), with short timeouts so callers fail fast.

    One immediate retry, no backoff: it replaces a pooled connection that a Redis restart
    broke, while a Redis that is down fails the call at once (redis-py's default of ten retries
    with growing pauses kept an SMTP client waiting 4 s for its 451). Every caller has its own
    answer to an outage: the milter's 451, the pipe's exit 75, the followers' retry loops.
    Without `decode` replies are bytes (`txmail backup`: DUMP payloads are binary)."""
    url = url or effective_url(settings)
    timeout = settings.redis.timeout
    if settings.redis.cluster:
        return redis.cluster.RedisCluster.from_url(
            url, decode_responses=decode, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return redis.Redis.from_url(
        url,
        decode_responses=decode,
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


def decoded(reply: bytes | str) -> str:
    """A reply as str. From a client of connect() it is one already; bytes (from a client made
    without decode_responses) are decoded as redis-py would, UTF-8 strict."""
    return reply.decode() if isinstance(reply, bytes) else reply


def decoded_or_none(reply: bytes | str | None) -> str | None:
    """A reply that may be nil (GET of a missing key, HGET of a missing field)."""
    return None if reply is None else decoded(reply)


def decoded_hash(reply: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """HGETALL's reply: field names and values as str."""
    return {decoded(name): decoded(value) for name, value in reply.items()}


def decoded_entries(
    reply: Iterable[tuple[bytes | str | None, Mapping[bytes | str, bytes | str] | None]] | None,
) -> list[tuple[str, dict[str, str]]]:
    """XRANGE's or XREVRANGE's reply as (entry id, fields) pairs. redis-py allows a nil reply
    and nil parts, which XRANGE never sends; they read as empty."""
    return [
        (decoded(entry_id or ""), decoded_hash(fields or {})) for entry_id, fields in reply or ()
    ]


def decoded_streams(reply: object) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """XREAD's reply as (stream key, entries) pairs; nil (nothing came) is none. The clients of
    connect() speak RESP2, whose XREAD reply is a list of [stream key, entries]; redis-py's
    annotation also admits RESP3's dict."""
    return [
        (decoded(key), decoded_entries(entries))
        for key, entries in cast("list[list[Any]]", reply or [])
    ]


def hash_mapping(fields: Mapping[str, str]) -> Mapping[FieldT, EncodableT]:
    """`fields` as HSET's mapping= argument, unchanged. redis-py annotates that argument as
    Mapping[FieldT, EncodableT] and a Mapping's key type is invariant, so no dict[str, str]
    matches it although every one is a valid argument."""
    return cast("Mapping[FieldT, EncodableT]", fields)
