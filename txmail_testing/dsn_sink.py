"""A test sink that speaks the DSN extension (RFC 3461), as most of the internet's MTAs do.

The plain Sink (aiosmtpd) advertises no DSN, so Postfix never tells it NOTIFY, ORCPT, RET or
ENVID and makes the "relayed" notices itself. DsnSink advertises DSN and keeps what Postfix
sent: CapturedMessage.mail_options (RET=, ENVID=) and rcpt_options per recipient (NOTIFY=,
ORCPT=), upper-cased as aiosmtpd keeps them. It only listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP

from txmail.stack.capture import CaptureHandler, CaptureServer
from txmail_testing.harness import Sink, free_listening_port, sink_verdict

DSN_PARAMS = ("NOTIFY", "ORCPT", "RET", "ENVID")


class DsnSMTP(SMTP):
    """aiosmtpd's server, taking the DSN parameters it would otherwise refuse (555)."""

    def _getparams(self, params: Any) -> Any:
        found = super()._getparams(params)
        if found is not None:
            for name in DSN_PARAMS:
                found.pop(name, None)
        return found


class DsnHandler(CaptureHandler):
    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-DSN", responses[-1]]


class DsnServer(CaptureServer):
    def start(self) -> DsnServer:
        handler = self.handler

        def make() -> SMTP:
            return DsnSMTP(
                handler,
                decode_data=False,
                enable_SMTPUTF8=True,
                hostname="dsn-sink.txmail.test",
                data_size_limit=100 * 1024 * 1024,
            )

        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(make, self.host, self.port), self.loop
        )
        self.server = future.result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


class DsnSink(Sink):
    def __init__(self, verdict: Callable[[str], str | None] = sink_verdict) -> None:
        self.handler = DsnHandler(verdict=verdict)
        self.server = DsnServer(self.handler, port=free_listening_port())

    def options_for(self, recipient: str) -> list[str]:
        """The RCPT options Postfix gave `recipient` in the newest message to it."""
        for message in reversed(self.messages):
            for address, options in zip(message.recipients, message.rcpt_options, strict=False):
                if address == recipient:
                    return list(options)
        return []
