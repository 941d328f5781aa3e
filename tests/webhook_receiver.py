"""Webhook receivers on loopback for the alert tests: one that takes every POST, one that is
down (nothing listens on its port), one that accepts connections and never answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def took(self, path: str, body: dict[str, Any]) -> None:
        with self._changed:
            self.paths.append(path)
            self.bodies.append(body)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The bodies once at least ``count`` arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.bodies) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.bodies)} of {count} webhooks arrived")
                self._changed.wait(left)
            return list(self.bodies)


@contextmanager
def receiving() -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length))
            assert self.headers.get("content-type") == "application/json"
            receiver.took(self.path, body)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def down_url() -> str:
    """A loopback URL nothing listens on: every connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@contextmanager
def never_answering() -> Iterator[str]:
    """A URL whose server takes the connection and then says nothing: a client waits for its
    own timeout. Closing the socket at the end resets what is still waiting."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/hook"
