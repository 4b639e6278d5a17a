"""txmail socketmap: serve the return-path domain tables to Postfix over a UNIX socket.

Postfix's main.cf names it in relay_domains and transport_maps as
`socketmap:unix:STATE/run/socketmap/socketmap.sock:relay` (and `:transport`), so every node
accepts bounces for every return-path domain in the shared Redis, including ones added while
it runs, without a reload.

The socket is made with the process's group (postfix, set by `txmail up`) and umask 007, so
only Postfix's daemons can ask. One thread per Postfix connection; Postfix keeps them open.

Fails: a malformed request closes that connection (Postfix reconnects); Redis trouble is a TEMP
answer (tables.py). SIGTERM stops the server and removes the socket.
"""

from __future__ import annotations

import logging
import signal
import socketserver
import threading
from pathlib import Path
from typing import Any

from txmail import store
from txmail.accounts.domains import Domains
from txmail.config import Settings
from txmail.socketmap.protocol import ProtocolError, netstring, parse_request, read_netstring
from txmail.socketmap.tables import ReturnPathTables

log = logging.getLogger("txmail.socketmap")


class _Handler(socketserver.StreamRequestHandler):
    server: SocketmapServer

    def handle(self) -> None:
        while True:
            try:
                payload = read_netstring(self.rfile)
                if payload is None:
                    return
                name, key = parse_request(payload)
            except (ProtocolError, OSError) as exc:
                log.warning("closing a connection: %s", exc)
                return
            reply = self.server.tables.lookup(name, key)
            if reply.status == "TEMP":
                log.warning("%s %s: %s", name, key[:100], reply.text)
            try:
                self.wfile.write(netstring(reply.encode()))
                self.wfile.flush()
            except OSError:
                return


class SocketmapServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: Path, tables: ReturnPathTables) -> None:
        self.tables = tables
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        super().__init__(str(path), _Handler)


def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    domains = Domains(store.connect(settings), store.Keys(settings.redis.prefix))
    tables = ReturnPathTables(settings.bounce_domain, domains.serves_return_path)
    path = settings.path(settings.domains.socketmap)
    server = SocketmapServer(path, tables)

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on unix:%s", path)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        path.unlink(missing_ok=True)
        log.info("stopped")
