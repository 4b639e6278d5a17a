"""A scripted stand-in for Postfix's private/txmail-api listener, on a UNIX socket, for unit
tests of txmail/submit.py and the send API: it says yes to every command and, after the
message's final ".", does what `after_dot` says.

    with FakePostfix(path, after_dot="silent") as fake: ...   # fake.commands, fake.messages
"""

from __future__ import annotations

import socketserver
import threading
import time
from types import TracebackType

AFTER_DOT = {
    "queued": b"250 2.0.0 Ok: queued as 4XyZ12AbCd\r\n",
    "no_id": b"250 2.0.0 Ok\r\n",
    "refused": b"554 5.7.1 Message refused by policy; remove the attachment\r\n",
}


class FakePostfix:
    def __init__(
        self, path: str, after_dot: str = "queued", rcpt_delay: float = 0.0, data_reply: str = ""
    ) -> None:
        """`after_dot`: a key of AFTER_DOT, "silent" (never answers) or "close" (hangs up);
        `rcpt_delay`: seconds before each RCPT's answer; `data_reply`: hang up at DATA
        ("close") instead of its 354."""
        self.path = path
        self.after_dot = after_dot
        self.rcpt_delay = rcpt_delay
        self.data_reply = data_reply
        self.commands: list[bytes] = []
        self.messages: list[bytes] = []
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    fake.converse(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a test of its deadline): nothing to answer

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakePostfix:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def converse(self, conn: socketserver.StreamRequestHandler) -> None:
        out = conn.wfile
        out.write(b"220 fake.test ESMTP\r\n")
        while line := conn.rfile.readline():
            self.commands.append(line.rstrip(b"\r\n"))
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.write(b"250-fake.test\r\n250-8BITMIME\r\n250 DSN\r\n")
            elif verb == b"XCLI":
                out.write(b"220 fake.test ESMTP\r\n")
            elif verb == b"RCPT":
                time.sleep(self.rcpt_delay)
                out.write(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                if self.data_reply == "close":
                    return
                out.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                message = bytearray()
                while (part := conn.rfile.readline()) not in (b".\r\n", b""):
                    message += part
                self.messages.append(bytes(message))
                if self.after_dot == "close":
                    return
                if self.after_dot == "silent":
                    while conn.rfile.readline():  # until the client hangs up
                        pass
                    return
                out.write(AFTER_DOT[self.after_dot])
            elif verb == b"QUIT":
                out.write(b"221 2.0.0 Bye\r\n")
                return
            else:
                out.write(b"250 2.0.0 Ok\r\n")
