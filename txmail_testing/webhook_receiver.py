"""A webhook receiver for tests and benchmarks: a real HTTP server on a loopback port, in a
thread, that records every post (headers, body, arrival time) and can be told to answer with
an error status or to be down (connections refused) for a while."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from txmail_testing.harness import free_listening_port, wait_for


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        receiver = self.server.receiver
        status = receiver.status
        if status < 300:
            with receiver.lock:
                receiver.posts.append(
                    ({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                )
        if receiver.delay:
            time.sleep(receiver.delay)  # a slow endpoint: the post stays in flight
        self.send_response(status)
        self.send_header("content-length", str(len(receiver.answer)))
        self.end_headers()
        self.wfile.write(receiver.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class WebhookReceiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_listening_port()
        self.status = 200
        self.delay = 0.0
        self.answer = b""  # the body of every answer
        self.posts: list[tuple[dict[str, str], bytes, float]] = []
        self.lock = threading.Lock()
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        self.server = _Server(("127.0.0.1", self.port), _Handler)
        self.server.receiver = self
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Go down: the port refuses connections until start() again."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(10)
            self.thread = None

    close = stop

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for _, body, _ in self.posts for e in json.loads(body)["events"]]

    def wait_event(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events() if predicate(e)), None)

        return wait_for(found, timeout, what="a webhook event")

    def post_of(self, event_id: str) -> tuple[dict[str, str], bytes, float]:
        with self.lock:
            for headers, body, at in self.posts:
                if any(e["id"] == event_id for e in json.loads(body)["events"]):
                    return headers, body, at
        raise KeyError(event_id)
