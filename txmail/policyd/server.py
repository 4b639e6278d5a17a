"""txmail policyd: the asyncio server Postfix's check_policy_service talks to.

Listens on the UNIX socket policyd.socket (and on policyd.listen over TCP when set), bound once
and served by policyd.workers processes (workers.py), each on a uvloop event loop (one by
default: it answers thousands of requests a second, and on a 2-core node a second worker made
the stack slower, not faster). Each worker serves its connections with a PolicyServer
(connections.py), calls its Lua scripts through scripts.py, and writes its log lines once per
loop turn (log_buffer.py).

Fails: see connections.py; a worker that dies is replaced (workers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import uvloop

from txmail.accounts import usage
from txmail.config import Settings
from txmail.policyd.connections import PolicyServer
from txmail.policyd.log_buffer import turn_buffered_logs
from txmail.policyd.scripts import connect
from txmail.policyd.workers import supervise, workers
from txmail.store import Keys

log = logging.getLogger("txmail.policyd")


def socket_path(settings: Settings) -> Path:
    return settings.path(settings.policyd.socket)


def listen(settings: Settings) -> list[tuple[str, socket.socket]]:
    """The listening sockets, bound before any worker starts so that all of them share them."""
    path = socket_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    unix.listen(1024)
    sockets = [(f"unix:{path}", unix)]
    if settings.policyd.listen:
        host, _, port = settings.policyd.listen.rpartition(":")
        tcp = socket.create_server((host.strip("[]"), int(port)), backlog=1024)
        sockets.append((f"inet:{settings.policyd.listen}", tcp))
    return sockets


async def run(
    settings: Settings,
    sockets: list[tuple[str, socket.socket]],
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve on `sockets` until SIGTERM or SIGINT."""
    with turn_buffered_logs(asyncio.get_running_loop()):
        await _serve(settings, sockets, ready)


async def _serve(
    settings: Settings, sockets: list[tuple[str, socket.socket]], ready: Callable[[], None] | None
) -> None:
    client = connect(settings)
    server = PolicyServer(
        settings, client, Keys(settings.redis.prefix), clock=lambda: usage.clock(settings)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watchers = [
        loop.create_task(server.watch_accounts()),
        loop.create_task(server.close_idle()),
        loop.create_task(server.count_decisions()),
    ]
    watchers += [loop.create_task(server.accept(sock)) for _, sock in sockets]
    log.info("listening on %s (pid %d)", ", ".join(w for w, _ in sockets), os.getpid())
    if ready is not None:
        ready()
    await stop.wait()
    for watcher in watchers:
        watcher.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*server.background), 5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.flush_decisions(), 2)
    server.scripts.close()
    await client.aclose()


def serve(settings: Settings) -> None:
    """Bind the sockets, then serve them from policyd.workers processes until SIGTERM.

    With one worker the process serves itself. With more, this process forks them, restarts
    one that dies, and on SIGTERM stops them all. A connection stays with the worker that
    accepted it, so what policyd remembers per connection needs no sharing; each worker has
    its own Redis connections and account cache.
    """
    # Log lines can be thousands a second (policyd.log_permits): skip looking up the caller's
    # file and line, as the Logging HOWTO's "Optimization" section describes; the format never
    # shows it.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    sockets = listen(settings)
    try:
        if workers(settings) == 1:
            uvloop.run(run(settings, sockets))
        else:
            supervise(workers(settings), lambda: uvloop.run(run(settings, sockets)))
    finally:
        socket_path(settings).unlink(missing_ok=True)
        log.info("stopped")
