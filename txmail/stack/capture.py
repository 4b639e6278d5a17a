"""The capture SMTP server: stands in for the internet in `txmail up --dev` and in tests.

It accepts mail on 127.0.0.1 and keeps every message: in memory (`messages`) and, when given a
folder, as NNNN.eml plus NNNN.json (the envelope) there. A `verdict` function can refuse or defer
recipients by address, so tests can script 550 and 450 replies.

Never listens anywhere but the address it is given (127.0.0.1 by default).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("txmail.capture")

Verdict = Callable[[str], str | None]


def accept_all(_recipient: str) -> str | None:
    return None


@dataclass
class CapturedMessage:
    sender: str
    recipients: list[str]
    data: bytes
    mail_options: list[str]
    rcpt_options: list[list[str]]
    received_at: float = field(default_factory=time.time)


def _options_by_recipient(envelope: Envelope) -> list[list[str]]:
    """The envelope's RCPT options, one list per recipient as handle_RCPT keeps them (aiosmtpd
    declares, and by default keeps, one flat list of them all)."""
    return cast(list[list[str]], envelope.rcpt_options)


class CaptureHandler:
    def __init__(self, directory: Path | None = None, verdict: Verdict = accept_all) -> None:
        self.directory = directory
        self.verdict = verdict
        self.messages: list[CapturedMessage] = []
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            existing = [int(p.stem) for p in directory.glob("*.eml") if p.stem.isdigit()]
            self.counter = itertools.count(max(existing, default=0) + 1)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.verdict(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        _options_by_recipient(envelope).append(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        message = CapturedMessage(
            sender=envelope.mail_from or "",
            recipients=list(envelope.rcpt_tos),
            data=data,
            mail_options=list(envelope.mail_options),
            rcpt_options=[list(o) for o in _options_by_recipient(envelope)],
        )
        with self.lock:
            self.messages.append(message)
            number = next(self.counter)
        if self.directory is not None:
            stem = self.directory / f"{number:06d}"
            stem.with_suffix(".eml").write_bytes(data)
            stem.with_suffix(".json").write_text(
                json.dumps(
                    {
                        "from": message.sender,
                        "to": message.recipients,
                        "mail_options": message.mail_options,
                        "received_at": message.received_at,
                    }
                )
            )
        log.info(
            "captured from=<%s> to=%s size=%d",
            message.sender,
            ",".join(message.recipients),
            len(data),
        )
        return f"250 2.0.0 captured as {number}"


def _factory(handler: CaptureHandler) -> Callable[[], SMTP]:
    def make() -> SMTP:
        return SMTP(
            handler,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname="capture.txmail.test",
            data_size_limit=100 * 1024 * 1024,
        )

    return make


class CaptureServer:
    """A capture server on a background thread with its own event loop (for tests)."""

    def __init__(self, handler: CaptureHandler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Any = None

    def start(self) -> CaptureServer:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(_factory(self.handler), self.host, self.port), self.loop
        )
        self.server = future.result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def serve(directory: Path, host: str, port: int) -> None:
    """Run the capture server in the foreground (txmail capture)."""
    handler = CaptureHandler(directory)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_factory(handler), host, port)
        log.info("capturing on %s:%d into %s", host, port, directory)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
