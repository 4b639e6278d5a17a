"""txmail bounces serve: the long-running parser the bounce pipe hands returned mail to.

Listens on the UNIX socket bounce_pipe.socket (a folder only the txmail user can enter; the
supervisor runs this process as that user, like the pipe itself). Each connection carries one
returned mail (txmail/bounce_pipe/handoff.py) and gets one answer line once the mail has been
recorded, kept or forwarded exactly as `txmail bounce-pipe` would (main.handle). A thread per
connection: pipe(8) runs at most a few at once (master.cf maxproc), and most of the wait is
Redis and the forwarding SMTP session.

Logs:  the same lines the pipe logs, on standard error (STATE/log/bounce-pipe.log under
       `txmail up`), and a warning for anything on the socket that is not a request.
Fails: a request it cannot read gets 75 and a warning; a mail it cannot record gets 75 (Postfix
       keeps it and retries). Nothing a peer sends stops the server.
"""

from __future__ import annotations

import logging
import os
import signal
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from txmail import store
from txmail.bounce_pipe import handoff
from txmail.bounce_pipe.main import handle
from txmail.config import Settings

log = logging.getLogger("txmail.bounce_pipe")

READ_TIMEOUT = 60.0  # seconds a pipe process may take to send its request

Take = Callable[[bytes, str, str], tuple[int, str]]  # (mail, sender, recipient) -> exit, why


def socket_path(settings: Settings) -> Path:
    return settings.path(settings.bounce_pipe.socket)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, take: Take, max_bytes: int) -> None:
        self.take = take
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.unlink(missing_ok=True)
        super().__init__(str(path), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A bug in one request: logged; its pipe process sees the connection close and exits
        75 (Postfix retries), and the server goes on."""
        log.exception("NOQUEUE: internal error while taking a returned mail")


class Handler(socketserver.StreamRequestHandler):
    server: Server

    def setup(self) -> None:
        self.request.settimeout(READ_TIMEOUT)
        super().setup()

    def handle(self) -> None:
        try:
            sender, recipient, raw = handoff.read_request(self.rfile, self.server.max_bytes)
        except handoff.NoRequest:
            return  # `txmail up` checking that the socket answers
        except (handoff.BadRequest, OSError) as exc:
            log.warning("NOQUEUE: %s", exc)
            self._answer(handoff.EX_TEMPFAIL, str(exc))
            return
        self.request.settimeout(None)  # recording may wait on Redis or the forwarding SMTP
        code, why = self.server.take(raw, sender, recipient)
        self._answer(code, why)

    def _answer(self, code: int, why: str) -> None:
        try:
            self.wfile.write(handoff.answer(code, why))
        except OSError as exc:  # the pipe process went away: Postfix retries the mail
            log.warning("NOQUEUE: the pipe process left before its answer (%s)", exc)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    client = store.connect(settings)

    def take(raw: bytes, sender: str, recipient: str) -> tuple[int, str]:
        return handle(settings, client, raw, sender, recipient)

    path = socket_path(settings)
    server = Server(path, take, settings.bounce_pipe.max_message_bytes)

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening on unix:%s (pid %d)", path, os.getpid())
    try:
        server.serve_forever()
    finally:
        server.server_close()
        path.unlink(missing_ok=True)
        client.close()
        log.info("stopped")
