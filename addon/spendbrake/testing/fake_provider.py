"""A local HTTPS fake of the OpenAI API that replays real response shapes.

Server side is stdlib only so it behaves the same wherever the tests run. Run standalone with
`python -m spendbrake.testing.fake_provider --port 8443 --dir /tmp/x`.

Test controls (request headers, so SDK clients can send them via `extra_headers`):
  x-fake-delay-ms: N            sleep N ms before every SSE event except the first
  x-fake-status: N              answer status N with OpenAI's error shape
  x-fake-usage-prompt: N        override usage.prompt_tokens
  x-fake-usage-completion: N    override usage.completion_tokens

Out-of-band endpoints (never recorded): GET /_fake/requests, POST /_fake/reset, GET /_fake/hello.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from spendbrake.testing.tls import TestPKI, make_test_pki

NON_STREAM_TEXT = "Hello! How can I help you today?"
STREAM_DELTAS: tuple[str, ...] = ("Hello", "!", " How", " can", " I", " help?")
MAX_COMPLETION_TOKENS = 9
BASE_PROMPT_TOKENS = 7
SYSTEM_FINGERPRINT = "fp_fake0000"

# OpenAI answers with the dated snapshot the alias currently points at.
MODEL_SNAPSHOTS: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received (out-of-band /_fake/* requests excluded)."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "body": self.body.decode("utf-8", errors="replace"),
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], provider: FakeProvider) -> None:
        self.provider = provider
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) we neither need nor want.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up or rejecting our cert (e.g. a proxy that doesn't trust the CA) are
        # expected in tests; only print real bugs.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError | EOFError):
            return
        super().handle_error(request, client_address)


class FakeProvider:
    """HTTPS fake of api.openai.com, serving from a daemon thread."""

    def __init__(
        self, pki: TestPKI, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False
    ) -> None:
        self._pki = pki
        self._host = host
        self._requested_port = port
        self.verbose = verbose
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FakeProvider already started")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._pki.server_cert, self._pki.server_key)
        # HTTP/1.1 only: the fake must look like a plain keep-alive origin to the proxy.
        context.set_alpn_protocols(["http/1.1"])
        server = _Server((self._host, self._requested_port), self)
        # Defer the handshake to the handler thread (first read) instead of accept().
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-provider:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # Hang up kept-alive connections too, so clients see the provider go away.
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            # The plain-socket shutdown: SSLSocket.shutdown would drop the TLS object under the
            # handler thread's feet.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider is not running")
        return int(self._server.server_address[1])

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "spendbrake-fake-provider"
    sys_version = ""
    # Idle keep-alive connections give up eventually instead of pinning a thread forever.
    timeout = 60
    # SSE events are tiny; Nagle would hold them back and fake buffering that isn't there.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.provider._track(self.connection, alive=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.provider._track(self.connection, alive=False)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.provider.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        provider = self.server.provider

        if path.startswith("/_fake/"):
            self._out_of_band(path)
            return

        provider._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers=self._lowercased_headers(),
                body=body,
            )
        )

        status = _int_header(self.headers.get("x-fake-status"))
        if status is not None:
            self._send_json(
                status,
                {"error": {"message": "fake failure", "type": "server_error", "code": None}},
                extra_headers={"x-should-retry": "false"},
            )
            return

        if self.command == "POST" and path == "/v1/chat/completions":
            self._chat_completions(body)
            return

        self._send_json(
            404,
            _error(f"Invalid URL ({self.command} {path})", "invalid_request_error"),
        )

    def _out_of_band(self, path: str) -> None:
        provider = self.server.provider
        if self.command == "GET" and path == "/_fake/requests":
            self._send_json(200, [r.to_json() for r in provider.requests])
        elif self.command == "POST" and path == "/_fake/reset":
            provider.reset()
            self._send_json(200, {"ok": True})
        elif self.command == "GET" and path == "/_fake/hello":
            self._send_bytes(200, b"hello", "text/plain; charset=utf-8")
        else:
            self._send_json(404, _error(f"Invalid URL ({self.command} {path})", "not_found"))

    # -- chat completions ------------------------------------------------------------------

    def _chat_completions(self, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if not isinstance(payload, dict):
            self._send_json(
                400,
                _error(
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                ),
            )
            return

        usage = self._usage(payload)
        model = str(payload.get("model", ""))
        common: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
            "created": int(time.time()),
            "model": MODEL_SNAPSHOTS.get(model, model),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if payload.get("stream") is True:
            stream_options = payload.get("stream_options")
            include_usage = isinstance(stream_options, dict) and bool(
                stream_options.get("include_usage")
            )
            self._stream(common, usage if include_usage else None)
            return

        completion = {
            "id": common["id"],
            "object": "chat.completion",
            "created": common["created"],
            "model": common["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": NON_STREAM_TEXT,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "service_tier": common["service_tier"],
            "system_fingerprint": common["system_fingerprint"],
        }
        self._send_json(200, completion)

    def _usage(self, payload: dict[str, Any]) -> dict[str, Any]:
        prompt = BASE_PROMPT_TOKENS + _content_chars(payload.get("messages")) // 4
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens") or 9
        completion = min(limit, MAX_COMPLETION_TOKENS) if isinstance(limit, int) else 9
        prompt = _int_header_or(self.headers.get("x-fake-usage-prompt"), prompt)
        completion = _int_header_or(self.headers.get("x-fake-usage-completion"), completion)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _stream(self, common: dict[str, Any], usage: dict[str, Any] | None) -> None:
        include_usage = usage is not None

        def chunk(
            choices: list[dict[str, Any]], index: int, chunk_usage: dict[str, Any] | None = None
        ) -> bytes:
            obj: dict[str, Any] = {
                "id": common["id"],
                "object": "chat.completion.chunk",
                "created": common["created"],
                "model": common["model"],
                "service_tier": common["service_tier"],
                "system_fingerprint": common["system_fingerprint"],
                "choices": choices,
            }
            # OpenAI only sends these keys when the client asked for stream usage.
            if include_usage:
                obj["usage"] = chunk_usage
                # OpenAI pads chunks with a random-length string; vary the length likewise.
                obj["obfuscation"] = "kQ3xZp9LmW"[: (index * 3) % 10 + 1]
            return b"data: " + _dumps(obj) + b"\n\n"

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        events = [chunk([choice({"role": "assistant", "content": "", "refusal": None})], 0)]
        events += [chunk([choice({"content": d})], i + 1) for i, d in enumerate(STREAM_DELTAS)]
        events.append(chunk([choice({}, "stop")], len(events)))
        if usage is not None:
            events.append(chunk([], len(events), usage))
        events.append(b"data: [DONE]\n\n")

        delay = max(_int_header_or(self.headers.get("x-fake-delay-ms"), 0), 0) / 1000

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.end_headers()
        try:
            for i, event in enumerate(events):
                if i and delay:
                    time.sleep(delay)
                # One HTTP chunk per SSE event, written in one go and unbuffered (wbufsize=0).
                self.wfile.write(b"%X\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (ConnectionError, ssl.SSLError, TimeoutError):
            # The client (or proxy) cut the stream short; that's a scenario tests provoke.
            self.close_connection = True

    # -- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = _int_header_or(self.headers.get("Content-Length"), 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Skip trailers up to the blank line.
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(65537)  # CRLF after the chunk data

    def _lowercased_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _send_json(
        self, status: int, obj: Any, extra_headers: dict[str, str] | None = None
    ) -> None:
        self._send_bytes(status, _dumps(obj), "application/json", extra_headers)

    def _send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


def _content_chars(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    text = part.get("text")
                    total += len(text) if isinstance(text, str) else 0
    return total


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _int_header_or(value: str | None, default: int) -> int:
    parsed = _int_header(value)
    return default if parsed is None else parsed


def _error(message: str, type_: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}


def _dumps(obj: Any) -> bytes:
    # Compact separators, like OpenAI's streamed chunks.
    return json.dumps(obj, separators=(",", ":")).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local HTTPS fake of the OpenAI API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--dir", type=Path, help="where to write the test PKI (default: temp)")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    directory: Path = args.dir or Path(tempfile.mkdtemp(prefix="spendbrake-fake-"))
    pki = make_test_pki(directory)
    provider = FakeProvider(pki, host=args.host, port=args.port, verbose=args.verbose)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    provider.start()
    print(f"fake provider listening at {args.host}:{provider.port}")
    print(f"fake provider CA at {pki.ca_cert}")
    sys.stdout.flush()  # the parent test reads these lines through a pipe
    try:
        # Short waits keep the main thread responsive to signals.
        while not stopping.wait(0.2):
            pass
    finally:
        provider.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
