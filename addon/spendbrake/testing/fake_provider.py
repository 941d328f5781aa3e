"""A local HTTPS fake of the OpenAI, Anthropic and Gemini APIs, of the OpenAI-compatible hosts
and of Azure OpenAI, that replays real response shapes.

Server side is stdlib only so it behaves the same wherever the tests run. Run standalone with
`python -m spendbrake.testing.fake_provider --port 8443 --dir /tmp/x`.

Routes:
  POST /v1/chat/completions          OpenAI Chat Completions (stream and non-stream)
  POST /v1/completions               OpenAI legacy Completions (stream and non-stream)
  POST /v1/responses                 OpenAI Responses (stream and non-stream)
  POST /v1/embeddings                OpenAI Embeddings (float or base64 vectors)
  POST /v1/messages                  Anthropic Messages (stream and non-stream)
  POST /v1/messages/count_tokens     Anthropic token counting (free at Anthropic)
  POST /v1beta/models/{model}:generateContent
                                     Gemini (also under /v1/models/...)
  POST /v1beta/models/{model}:streamGenerateContent
                                     Gemini stream: with ?alt=sse SSE events framed with CRLF,
                                     without it a streamed JSON array `[{..}\r\n,\r\n{..}]`
  POST /v1beta/models/{model}:countTokens
                                     Gemini token counting (free): {"totalTokens": N}
Requests whose Host header names an OpenAI-compatible host (reference §3.6) are answered in
that host's dialect of Chat Completions on its own path, and only there:
  api.mistral.ai     /v1/chat/completions            usage on the finish chunk, always
  api.groq.com       /openai/v1/chat/completions     usage timings, x_groq.usage on the finish
                                                     chunk, a usage chunk when asked
  api.deepseek.com   /chat/completions (also /v1/)   prompt_cache_hit/miss_tokens, a usage chunk
                                                     when asked
  api.x.ai           /v1/chat/completions            reasoning outside completion_tokens, a usage
                                                     chunk when asked and an empty chunk after it
  openrouter.ai      /api/v1/chat/completions        `: OPENROUTER PROCESSING` first, a usage
                                                     chunk always
  api.together.xyz   /v1/chat/completions            usage on the finish chunk, always
  api.fireworks.ai   /inference/v1/chat/completions  a usage chunk when asked
  api.perplexity.ai  /chat/completions (also /v1/)   citations, usage on the finish chunk, always
  *.openai.azure.com /openai/deployments/{deployment}/chat/completions?api-version=...
                                                     model AZURE_MODEL whatever the deployment,
                                                     content filter results, a first chunk with
                                                     no choices, a usage chunk when asked
"When asked" is `stream_options.include_usage`; those hosts then put `"usage": null` on the other
chunks, as OpenAI does. Their usage follows the OpenAI rule below.
Anything else answers 404 (Anthropic's error shape under /v1/messages, Google's under /v1beta/
and for Gemini routes, Azure's on Azure, OpenAI's elsewhere). Gemini's API key (x-goog-api-key
or ?key=) is ignored.

Usage is deterministic. OpenAI: prompt_tokens = 7 + chars(message text) // 4, completion_tokens =
min(max_completion_tokens or max_tokens, 9). Legacy Completions: prompt_tokens = 7 + chars(prompt
texts + suffix) // 4 + the number of token ids, completion_tokens = min(max_tokens (default 16), 9)
per choice, a choice being one of the n answers to each prompt of a list (best_of is not billed);
a stream ends with a usage chunk only when asked, as Chat Completions'. Anthropic: input_tokens =
7 + chars(system + message text) // 4, output_tokens = min(max_tokens, 9), cache fields 0.
Responses: input_tokens = 7 + chars(instructions + input text) // 4, output_tokens =
min(max_output_tokens or 9, 9), cached and reasoning tokens 0. Embeddings: prompt_tokens = sum
over inputs of 1 + chars // 4. Gemini:
promptTokenCount = 7 + chars(systemInstruction + contents text parts) // 4, candidatesTokenCount =
min(generationConfig.maxOutputTokens or 9, 9) per candidate (times generationConfig.candidateCount),
totalTokenCount = prompt + candidates + thoughts; streams carry a partial usage snapshot (prompt and
total = prompt only) on every event but the last, which has the complete usage.

Test controls (request headers, so SDK clients can send them via `extra_headers`):
  x-fake-delay-ms: N            sleep N ms before every SSE event except the first
  x-fake-status: N              answer status N with the provider's error shape (type api_error
                                for Anthropic, server_error for OpenAI, status INTERNAL for
                                Gemini) and x-should-retry: false
  x-fake-usage-prompt: N        override prompt_tokens / input_tokens / promptTokenCount (also
                                for count_tokens, countTokens and embeddings)
  x-fake-usage-completion: N    override completion_tokens / output_tokens / candidatesTokenCount
  x-fake-usage-cache-read: N    Anthropic: cache_read_input_tokens; Responses:
                                input_tokens_details.cached_tokens (a part of input_tokens);
                                compatible hosts and Azure: cached_tokens (DeepSeek also
                                prompt_cache_hit_tokens), a part of prompt_tokens;
                                Gemini: cachedContentTokenCount (a part of promptTokenCount)
  x-fake-usage-thoughts: N      Gemini: thoughtsTokenCount (on top of candidatesTokenCount, and
                                counted in totalTokenCount); absent unless given
  x-fake-usage-reasoning: N     Responses: output_tokens_details.reasoning_tokens (a part of
                                output_tokens); compatible hosts and Azure: N more tokens
                                thought, in completion_tokens (xAI: only in total_tokens), and
                                reported as reasoning_tokens where the host does
  x-fake-usage-cost: USD        OpenRouter: usage.cost (and cost_details.upstream_inference_cost,
                                the same); xAI: usage.cost_in_usd_ticks (1e10 to the dollar);
                                absent unless given
  x-fake-usage-upstream-cost: USD
                                OpenRouter: the call ran on the caller's own provider key
                                (is_byok true): usage.cost is OpenRouter's fee and
                                cost_details.upstream_inference_cost this
  x-fake-usage-cache-write: N   Anthropic: cache_creation_input_tokens (all of it 5-minute cache)
  x-fake-anthropic-delta-usage: full
                                Anthropic stream: message_delta.usage also carries the cumulative
                                input_tokens and cache_* fields, as newer API versions send
  x-fake-stream-error: overloaded
                                Anthropic stream: after the second text delta, send an
                                `event: error` (overloaded_error) and end the stream there
  x-fake-responses-end: incomplete | failed
                                Responses: end with status "incomplete" (incomplete_details.reason
                                max_output_tokens) or "failed" (error server_error) instead of
                                "completed"; streams then end with response.incomplete or
                                response.failed (still carrying usage)

Faults (request headers too; a header an SDK cannot keep from retrying is the test's to use):
  x-fake-silence-ms: N          say nothing for N ms before the response headers, as a reasoning
                                model thinks before its first byte
  x-fake-reset: before-headers | mid-stream
                                reset the connection (TCP RST, no TLS close) instead of answering,
                                or after half of a stream's events
  x-fake-stall-ms: N            stream: stop for N ms after half of the events, then go on (a
                                write to a peer that went away in the meantime ends the stream)

Out-of-band endpoints (never recorded): GET /_fake/requests, POST /_fake/reset, GET /_fake/hello.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import signal
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, TypeGuard
from urllib.parse import parse_qs, urlsplit

from spendbrake.testing.tls import TestPKI, make_test_pki

NON_STREAM_TEXT = "Hello! How can I help you today?"
STREAM_DELTAS: tuple[str, ...] = ("Hello", "!", " How", " can", " I", " help?")
MAX_COMPLETION_TOKENS = 9
BASE_PROMPT_TOKENS = 7
SYSTEM_FINGERPRINT = "fp_fake0000"

ANTHROPIC_TEXT = "".join(STREAM_DELTAS)
ANTHROPIC_MESSAGES_PATH = "/v1/messages"
ANTHROPIC_COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# Values of x-fake-stream-error: the Anthropic error event each one sends mid-stream.
ANTHROPIC_STREAM_ERRORS: dict[str, tuple[str, str]] = {
    "overloaded": ("overloaded_error", "Overloaded"),
}
# The stream error is sent after this many text deltas.
ANTHROPIC_STREAM_ERROR_AFTER = 2

# Values of x-fake-reset ("" for none): where the connection is reset.
RESET_POINTS = ("", "before-headers", "mid-stream")

# Responses API: the text of every answer, and how a stream splits it.
RESPONSES_DELTAS: tuple[str, ...] = ("Hi", " there!")
RESPONSES_TEXT = "".join(RESPONSES_DELTAS)
# Values of x-fake-responses-end: the terminal status (and event suffix) each one gives.
RESPONSES_ENDS = ("completed", "incomplete", "failed")

# Legacy Completions: the text of every answer, and how a stream splits it.
COMPLETIONS_DELTAS: tuple[str, ...] = ("\n\n", "Scoops", " of", " happiness", ".")
COMPLETIONS_TEXT = "".join(COMPLETIONS_DELTAS)

# Embeddings: every input gets this vector (float32-exact enough for the SDK's base64 decoding).
EMBEDDING_VECTOR: tuple[float, ...] = (0.0023064255, -0.009327292, 0.015797377)

# Gemini: the non-streaming answer, and the text of each streamed event (the last one, carrying
# finishReason and the complete usage, has an empty text part as Google's do).
GEMINI_TEXT = "The sky looks blue because of Rayleigh scattering."
GEMINI_STREAM_TEXTS: tuple[str, ...] = ("The", " sky is blue.", "")
# Gemini routes: /{version}/models/{model}:{method}. `/v1/models` alone is OpenAI's (a colon-less
# path), so only a `model:method` final segment makes a /v1 path Gemini's.
GEMINI_ROUTE = re.compile(
    r"^/(?P<version>v1beta|v1)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens")

# OpenAI answers with the dated snapshot the alias currently points at.
MODEL_SNAPSHOTS: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-3.5-turbo-instruct": "gpt-3.5-turbo-instruct:20230824-v2",
}

# OpenAI-compatible hosts (reference §3.6), told apart by the Host header: the dialect each
# speaks and the Chat Completions paths it serves (anything else on them answers 404).
COMPATIBLE_HOSTS: dict[str, tuple[str, frozenset[str]]] = {
    "api.mistral.ai": ("mistral", frozenset({"/v1/chat/completions"})),
    "api.groq.com": ("groq", frozenset({"/openai/v1/chat/completions"})),
    "api.deepseek.com": ("deepseek", frozenset({"/chat/completions", "/v1/chat/completions"})),
    "api.x.ai": ("x-ai", frozenset({"/v1/chat/completions"})),
    "openrouter.ai": ("openrouter", frozenset({"/api/v1/chat/completions"})),
    "api.together.xyz": ("together", frozenset({"/v1/chat/completions"})),
    "api.fireworks.ai": ("fireworks", frozenset({"/inference/v1/chat/completions"})),
    "api.perplexity.ai": ("perplexity", frozenset({"/chat/completions", "/v1/chat/completions"})),
}
# Azure OpenAI: any resource under this suffix (the test certificate covers AZURE_TEST_HOST).
AZURE = "azure"
AZURE_HOST_SUFFIX = ".openai.azure.com"
AZURE_CHAT_ROUTE = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)/chat/completions$")
# The model behind every deployment of the fake resource, as Azure names it in responses.
AZURE_MODEL = "gpt-4o-2024-11-20"
# Hosts that put usage on the chunk with finish_reason, asked or not.
USAGE_ON_FINISH_CHUNK = frozenset({"mistral", "together", "perplexity"})
# Hosts that end a stream with a usage-only chunk (empty choices) only when asked, as OpenAI.
USAGE_CHUNK_WHEN_ASKED = frozenset({"groq", "deepseek", "x-ai", "fireworks", AZURE})


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
        self._resets: set[socket.socket] = set()
        self._resets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def reset_on_close(self, conn: socket.socket) -> None:
        """Close ``conn`` with an RST when its handler is done, without a FIN first."""
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._resets_lock:
            self._resets.add(conn)

    def shutdown_request(self, request: Any) -> None:
        with self._resets_lock:
            reset = request in self._resets
            self._resets.discard(request)
        if reset:
            self.close_request(request)  # no shutdown(SHUT_WR): that would send a FIN
            return
        super().shutdown_request(request)

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
    """HTTPS fake of api.openai.com, api.anthropic.com, generativelanguage.googleapis.com, the
    OpenAI-compatible hosts and Azure OpenAI.

    Serves from a daemon thread.
    """

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
    # Anthropic names it `request-id`, OpenAI `x-request-id`; set per request by _dispatch.
    _request_id_header = "x-request-id"

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
        anthropic = _is_anthropic_path(path)
        google = _is_google_path(path)
        self._request_id_header = "request-id" if anthropic else "x-request-id"

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

        silence = _int_header_or(self.headers.get("x-fake-silence-ms"), 0)
        if silence > 0:
            time.sleep(silence / 1000)
        reset = (self.headers.get("x-fake-reset") or "").strip().lower()
        if reset not in RESET_POINTS:
            self._send_json(
                400,
                _error(
                    f"x-fake-reset: unknown value {reset!r}; use one of {RESET_POINTS[1:]}",
                    "invalid_request_error",
                ),
            )
            return
        if reset == "before-headers":
            self._reset()
            return

        status = _int_header(self.headers.get("x-fake-status"))
        if status is not None:
            if anthropic:
                failure = _anthropic_error("api_error", "fake failure")
            elif google:
                failure = _google_error(status, "fake failure", "INTERNAL")
            else:
                failure = {
                    "error": {"message": "fake failure", "type": "server_error", "code": None}
                }
            self._send_json(status, failure, extra_headers={"x-should-retry": "false"})
            return

        dialect = _dialect_of(self.headers.get("Host"))
        if dialect is not None:
            self._compatible_route(dialect, body, path)
            return
        if self.command == "POST" and path == "/v1/chat/completions":
            self._chat_completions(body)
            return
        if self.command == "POST" and path == "/v1/completions":
            self._completions(body)
            return
        if self.command == "POST" and path == "/v1/responses":
            self._responses(body)
            return
        if self.command == "POST" and path == "/v1/embeddings":
            self._embeddings(body)
            return
        if self.command == "POST" and path == ANTHROPIC_MESSAGES_PATH:
            self._messages(body)
            return
        if self.command == "POST" and path == ANTHROPIC_COUNT_TOKENS_PATH:
            self._count_tokens(body)
            return
        gemini = GEMINI_ROUTE.match(path)
        if self.command == "POST" and gemini and gemini["method"] in GEMINI_METHODS:
            self._gemini(body, gemini["model"], gemini["method"])
            return
        if anthropic:
            self._send_json(404, _anthropic_error("not_found_error", "Not Found"))
            return
        if google:
            self._send_json(
                404,
                _google_error(404, f"Method not found ({self.command} {path}).", "NOT_FOUND"),
            )
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

    def _openai_payload(self, body: bytes) -> dict[str, Any] | None:
        """The request's JSON object, or None after answering 400 the way OpenAI does."""
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
            return None
        return payload

    def _chat_completions(self, body: bytes) -> None:
        payload = self._openai_payload(body)
        if payload is None:
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
        self._send_sse(events)

    # -- legacy completions ----------------------------------------------------------------

    def _completions(self, body: bytes) -> None:
        payload = self._openai_payload(body)
        if payload is None:
            return
        prompts = _completion_prompts(payload.get("prompt"))
        if prompts is None:
            error = _error(
                "'prompt' must be a string, a list of strings, a list of token ids or a list "
                "of token id lists (fake provider)",
                "invalid_request_error",
            )
            error["error"]["param"] = "prompt"
            self._send_json(400, error)
            return
        n = payload.get("n")
        # The answers come prompt by prompt, n to each: choice i*n+j is prompt i's j-th.
        choices = len(prompts) * (n if _is_int(n) and n > 0 else 1)
        max_tokens = payload.get("max_tokens")
        limit = max_tokens if _is_int(max_tokens) and max_tokens >= 0 else 16  # the API's default
        per_choice = min(limit, MAX_COMPLETION_TOKENS)
        usage = self._completions_usage(payload, prompts, per_choice * choices)
        finish_reason = "length" if per_choice == limit else "stop"
        model = str(payload.get("model", ""))
        model = MODEL_SNAPSHOTS.get(model, model)
        ident = f"cmpl-{uuid.uuid4().hex[:29]}"
        created = int(time.time())

        def choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
            return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}

        if payload.get("stream") is not True:
            # Key order as OpenAI sends it.
            completion_object = {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [choice(i, COMPLETIONS_TEXT, finish_reason) for i in range(choices)],
                "usage": usage,
            }
            self._send_json(200, completion_object)
            return

        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

        def chunk(chunk_choices: list[dict[str, Any]], **extra: Any) -> bytes:
            # A streamed chunk: the model after the choices, as OpenAI sends it.
            obj: dict[str, Any] = {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "choices": chunk_choices,
                "model": model,
            }
            if include_usage:
                obj["usage"] = None  # every chunk but the last, once the client asked
            obj.update(extra)
            return b"data: " + _dumps(obj) + b"\n\n"

        events = [
            chunk([choice(i, delta, None)]) for delta in COMPLETIONS_DELTAS for i in range(choices)
        ]
        events += [chunk([choice(i, "", finish_reason)]) for i in range(choices)]
        if include_usage:
            events.append(chunk([], usage=usage))
        events.append(b"data: [DONE]\n\n")
        self._send_sse(events)

    def _completions_usage(
        self, payload: dict[str, Any], prompts: list[str | list[int]], completion: int
    ) -> dict[str, int]:
        suffix = payload.get("suffix")
        chars = sum(len(p) for p in prompts if isinstance(p, str))
        chars += len(suffix) if isinstance(suffix, str) else 0
        ids = sum(len(p) for p in prompts if isinstance(p, list))
        prompt = _int_header_or(
            self.headers.get("x-fake-usage-prompt"), BASE_PROMPT_TOKENS + chars // 4 + ids
        )
        completion = _int_header_or(self.headers.get("x-fake-usage-completion"), completion)
        # OpenAI's legacy usage: the three counts, no details.
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    # -- OpenAI-compatible hosts and Azure OpenAI ------------------------------------------

    def _compatible_route(self, dialect: str, body: bytes, path: str) -> None:
        """A request to a host that speaks Chat Completions in its own dialect (by Host)."""
        if dialect == AZURE:
            route = AZURE_CHAT_ROUTE.match(path)
            if self.command != "POST" or route is None or not self._query("api-version"):
                # What Azure answers for a wrong route or a missing api-version.
                self._send_json(404, {"error": {"code": "404", "message": "Resource not found"}})
                return
        elif self.command != "POST" or path not in COMPATIBLE_HOSTS[self._host()][1]:
            self._send_json(
                404, _error(f"Invalid URL ({self.command} {path})", "invalid_request_error")
            )
            return
        payload = self._openai_payload(body)
        if payload is None:
            return
        costs: dict[str, Decimal | None] = {}
        for name in ("x-fake-usage-cost", "x-fake-usage-upstream-cost"):
            value = self.headers.get(name)
            try:
                costs[name] = None if value is None else Decimal(value.strip())
            except InvalidOperation:
                # A typo in a test's control header should fail loudly, not pass silently.
                message = f"{name}: {value!r} is not a dollar amount"
                self._send_json(400, _error(message, "invalid_request_error"))
                return
        counts = self._usage(payload)
        reasoning = _int_header_or(self.headers.get("x-fake-usage-reasoning"), 0)
        usage = _compatible_usage(
            dialect,
            prompt=counts["prompt_tokens"],
            completion=counts["completion_tokens"],
            cached=_int_header_or(self.headers.get("x-fake-usage-cache-read"), 0),
            reasoning=reasoning,
            cost=costs["x-fake-usage-cost"],
            upstream_cost=costs["x-fake-usage-upstream-cost"],
        )
        # Azure answers with the model behind the deployment; the others echo the request's.
        model = AZURE_MODEL if dialect == AZURE else str(payload.get("model", ""))
        if payload.get("stream") is not True:
            self._send_json(200, _compatible_completion(dialect, model, usage, reasoning))
            return
        options = payload.get("stream_options")
        asked = isinstance(options, dict) and bool(options.get("include_usage"))
        self._send_sse(
            _compatible_stream(dialect, model, usage, include_usage=asked, reasoning=reasoning)
        )

    def _host(self) -> str:
        return _host_name(self.headers.get("Host"))

    def _query(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.path).query).get(name)
        return values[-1] if values else None

    # -- responses -------------------------------------------------------------------------

    def _responses(self, body: bytes) -> None:
        payload = self._openai_payload(body)
        if payload is None:
            return
        end_name = (self.headers.get("x-fake-responses-end") or "completed").strip().lower()
        if end_name not in RESPONSES_ENDS:
            # A typo in a test's control header should fail loudly, not pass silently.
            self._send_json(
                400,
                _error(
                    f"x-fake-responses-end: unknown value {end_name!r}; "
                    f"known: {', '.join(RESPONSES_ENDS)}",
                    "invalid_request_error",
                ),
            )
            return

        usage = self._responses_usage(payload)
        model = str(payload.get("model", ""))
        response = _response_object(payload, MODEL_SNAPSHOTS.get(model, model))
        message_id = f"msg_{uuid.uuid4().hex}"
        item_status = "incomplete" if end_name == "incomplete" else "completed"
        part = {"type": "output_text", "text": RESPONSES_TEXT, "annotations": [], "logprobs": []}
        item = {
            "id": message_id,
            "type": "message",
            "status": item_status,
            "role": "assistant",
            "content": [part],
        }
        final = {**response, "status": end_name, "output": [item], "usage": usage}
        if end_name == "incomplete":
            final["incomplete_details"] = {"reason": "max_output_tokens"}
        elif end_name == "failed":
            final["error"] = {"code": "server_error", "message": "fake failure"}

        if payload.get("stream") is not True:
            self._send_json(200, final)
            return

        # Until the end, the response reports the tier asked for ("auto"), not the one used.
        pending = {**response, "status": "in_progress", "service_tier": "auto"}
        text_ref = {"item_id": message_id, "output_index": 0, "content_index": 0}
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": pending}),
            ("response.in_progress", {"response": pending}),
            (
                "response.output_item.added",
                {
                    "output_index": 0,
                    "item": {**item, "status": "in_progress", "content": []},
                },
            ),
            ("response.content_part.added", {**text_ref, "part": {**part, "text": ""}}),
        ]
        for i, delta in enumerate(RESPONSES_DELTAS):
            # OpenAI pads deltas with a random-length string; vary the length likewise.
            obfuscation = "x8Qe2ab1c9d3zzLq9"[: (i * 11) % 17 + 3]
            events.append(
                (
                    "response.output_text.delta",
                    {**text_ref, "delta": delta, "logprobs": [], "obfuscation": obfuscation},
                )
            )
        events += [
            ("response.output_text.done", {**text_ref, "text": RESPONSES_TEXT, "logprobs": []}),
            ("response.content_part.done", {**text_ref, "part": part}),
            ("response.output_item.done", {"output_index": 0, "item": item}),
            (f"response.{end_name}", {"response": final}),
        ]
        self._send_sse(
            [
                _sse_event(name, {"type": name, "sequence_number": seq, **fields})
                for seq, (name, fields) in enumerate(events)
            ]
        )

    def _responses_usage(self, payload: dict[str, Any]) -> dict[str, Any]:
        instructions = payload.get("instructions")
        chars = (len(instructions) if isinstance(instructions, str) else 0) + _input_chars(
            payload.get("input")
        )
        limit = payload.get("max_output_tokens")
        output = min(limit, MAX_COMPLETION_TOKENS) if _is_int(limit) and limit else 9
        input_tokens = _int_header_or(
            self.headers.get("x-fake-usage-prompt"), BASE_PROMPT_TOKENS + chars // 4
        )
        output = _int_header_or(self.headers.get("x-fake-usage-completion"), output)
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {
                "cached_tokens": _int_header_or(self.headers.get("x-fake-usage-cache-read"), 0)
            },
            "output_tokens": output,
            "output_tokens_details": {
                "reasoning_tokens": _int_header_or(self.headers.get("x-fake-usage-reasoning"), 0)
            },
            "total_tokens": input_tokens + output,
        }

    # -- embeddings ------------------------------------------------------------------------

    def _embeddings(self, body: bytes) -> None:
        payload = self._openai_payload(body)
        if payload is None:
            return
        raw_input = payload.get("input")
        inputs = [raw_input] if isinstance(raw_input, str) else raw_input
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(text, str) for text in inputs)
        ):
            # The real API also takes token arrays; the fake only strings.
            error = _error(
                "'input' must be a string or a non-empty list of strings (fake provider)",
                "invalid_request_error",
            )
            error["error"]["param"] = "input"
            self._send_json(400, error)
            return

        if payload.get("encoding_format") == "base64":
            # What OpenAI sends for base64: the little-endian float32 bytes of the vector.
            packed = struct.pack(f"<{len(EMBEDDING_VECTOR)}f", *EMBEDDING_VECTOR)
            embedding: str | list[float] = base64.b64encode(packed).decode("ascii")
        else:
            embedding = list(EMBEDDING_VECTOR)
        tokens = sum(1 + len(text) // 4 for text in inputs)
        tokens = _int_header_or(self.headers.get("x-fake-usage-prompt"), tokens)
        self._send_json(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": embedding}
                    for i in range(len(inputs))
                ],
                "model": str(payload.get("model", "")),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    # -- anthropic messages ----------------------------------------------------------------

    def _anthropic_payload(
        self, body: bytes, *, needs_max_tokens: bool
    ) -> tuple[dict[str, Any], int] | None:
        """The request's JSON object and max_tokens (0 if not needed), or None after a 400."""
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if not isinstance(payload, dict):
            self._send_json(
                400, _anthropic_error("invalid_request_error", "Invalid JSON in request body")
            )
            return None
        # max_tokens first: it is the field clients forget (Anthropic has no default).
        problem = None
        max_tokens = payload.get("max_tokens")
        if needs_max_tokens:
            if "max_tokens" not in payload:
                problem = "max_tokens: Field required"
            elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
                problem = "max_tokens: Input should be a valid integer"
            elif max_tokens < 1:
                problem = "max_tokens: Input should be greater than or equal to 1"
        for field in ("messages", "model"):
            if problem is None and field not in payload:
                problem = f"{field}: Field required"
        if problem is not None:
            self._send_json(400, _anthropic_error("invalid_request_error", problem))
            return None
        return payload, max_tokens if isinstance(max_tokens, int) else 0

    def _messages(self, body: bytes) -> None:
        parsed = self._anthropic_payload(body, needs_max_tokens=True)
        if parsed is None:
            return
        payload, max_tokens = parsed

        usage = self._anthropic_usage(payload, max_tokens)
        message_id = f"msg_01{uuid.uuid4().hex[:22]}"
        model = str(payload["model"])
        if payload.get("stream") is True:
            self._messages_stream(message_id, model, usage)
            return

        self._send_json(
            200,
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": ANTHROPIC_TEXT}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage,
            },
        )

    def _count_tokens(self, body: bytes) -> None:
        parsed = self._anthropic_payload(body, needs_max_tokens=False)
        if parsed is None:
            return
        self._send_json(200, {"input_tokens": self._anthropic_input_tokens(parsed[0])})

    def _anthropic_input_tokens(self, payload: dict[str, Any]) -> int:
        chars = _system_chars(payload.get("system")) + _content_chars(payload.get("messages"))
        return _int_header_or(
            self.headers.get("x-fake-usage-prompt"), BASE_PROMPT_TOKENS + chars // 4
        )

    def _anthropic_usage(self, payload: dict[str, Any], max_tokens: int) -> dict[str, Any]:
        output = min(max_tokens, MAX_COMPLETION_TOKENS)
        cache_write = _int_header_or(self.headers.get("x-fake-usage-cache-write"), 0)
        # Key order as Anthropic sends it.
        return {
            "input_tokens": self._anthropic_input_tokens(payload),
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": _int_header_or(
                self.headers.get("x-fake-usage-cache-read"), 0
            ),
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_write,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": _int_header_or(self.headers.get("x-fake-usage-completion"), output),
            "service_tier": "standard",
        }

    def _messages_stream(self, message_id: str, model: str, usage: dict[str, Any]) -> None:
        error_name = self.headers.get("x-fake-stream-error")
        stream_error = None
        if error_name is not None:
            stream_error = ANTHROPIC_STREAM_ERRORS.get(error_name.strip().lower())
            if stream_error is None:
                # A typo in a test's control header should fail loudly, not pass silently.
                self._send_json(
                    400,
                    _anthropic_error(
                        "invalid_request_error",
                        f"x-fake-stream-error: unknown value {error_name!r}; "
                        f"known: {', '.join(sorted(ANTHROPIC_STREAM_ERRORS))}",
                    ),
                )
                return

        output_tokens = usage["output_tokens"]
        # message_start reports a small running output count; message_delta the final one.
        start_usage = {**usage, "output_tokens": min(1, output_tokens)}
        if (self.headers.get("x-fake-anthropic-delta-usage") or "").strip().lower() == "full":
            delta_usage = {
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
                "output_tokens": output_tokens,
            }
        else:
            delta_usage = {"output_tokens": output_tokens}

        events = [
            _sse_event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            ),
            _sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            # Anthropic's ping is the one event not sent compact.
            b'event: ping\ndata: {"type": "ping"}\n\n',
        ]
        for i, text in enumerate(STREAM_DELTAS):
            if stream_error is not None and i == ANTHROPIC_STREAM_ERROR_AFTER:
                error_type, message = stream_error
                events.append(_sse_event("error", _anthropic_error(error_type, message)))
                self._send_sse(events)
                return
            events.append(
                _sse_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": text},
                    },
                )
            )
        events += [
            _sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": delta_usage,
                },
            ),
            _sse_event("message_stop", {"type": "message_stop"}),
        ]
        self._send_sse(events)

    # -- gemini ----------------------------------------------------------------------------

    def _gemini(self, body: bytes, model: str, method: str) -> None:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if not isinstance(payload, dict):
            self._send_json(
                400,
                _google_error(
                    400,
                    "Invalid JSON payload received. Unknown name or bad value.",
                    "INVALID_ARGUMENT",
                ),
            )
            return
        if method == "countTokens":
            # countTokens takes `contents` or a whole `generateContentRequest`.
            wrapped = payload.get("generateContentRequest")
            request = wrapped if isinstance(wrapped, dict) else payload
            self._send_json(200, {"totalTokens": self._gemini_prompt_tokens(request)})
            return
        if not isinstance(payload.get("contents"), list | dict) or not payload["contents"]:
            self._send_json(
                400,
                _google_error(
                    400,
                    "* GenerateContentRequest.contents: contents is not specified\n",
                    "INVALID_ARGUMENT",
                ),
            )
            return

        config = payload.get("generationConfig")
        config = config if isinstance(config, dict) else {}
        count = config.get("candidateCount")
        candidate_count = count if isinstance(count, int) and _is_int(count) and count > 0 else 1
        usage = self._gemini_usage(payload, config, candidate_count)
        response_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii")[:23]

        def response(text: str, finish: bool, usage_metadata: dict[str, Any]) -> dict[str, Any]:
            candidates: list[dict[str, Any]] = []
            for index in range(candidate_count):
                candidate: dict[str, Any] = {
                    "content": {"parts": [{"text": text}], "role": "model"}
                }
                if finish:
                    candidate["finishReason"] = "STOP"
                candidate["index"] = index
                candidates.append(candidate)
            # Key order as Google sends it.
            return {
                "candidates": candidates,
                "usageMetadata": usage_metadata,
                "modelVersion": model,
                "responseId": response_id,
            }

        if method == "generateContent":
            # Google pretty-prints non-streamed JSON.
            body_out = json.dumps(response(GEMINI_TEXT, True, usage), indent=2).encode()
            self._send_bytes(200, body_out, "application/json; charset=UTF-8")
            return

        prompt = usage["promptTokenCount"]
        partial = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        last = len(GEMINI_STREAM_TEXTS) - 1
        objects = [
            response(text, i == last, usage if i == last else partial)
            for i, text in enumerate(GEMINI_STREAM_TEXTS)
        ]
        alt = parse_qs(urlsplit(self.path).query).get("alt", [""])[-1]
        if alt == "sse":
            # Google's SSE: one line of JSON per event, CRLF line ends, no [DONE].
            self._send_sse(
                [b"data: " + _google_dumps(obj) + b"\r\n\r\n" for obj in objects],
                content_type="text/event-stream",
            )
            return
        # A streamed JSON array: `[` + elements joined by CRLF,CRLF + `]`, one element a chunk.
        elements = [json.dumps(obj, indent=2).encode() for obj in objects]
        chunks = [b"[" + elements[0]] + [b"\r\n,\r\n" + element for element in elements[1:]]
        chunks[-1] += b"]"
        self._send_sse(chunks, content_type="application/json; charset=UTF-8")

    def _gemini_prompt_tokens(self, payload: dict[str, Any]) -> int:
        chars = _gemini_parts_chars(payload.get("systemInstruction"))
        contents = payload.get("contents")
        for content in contents if isinstance(contents, list) else [contents]:
            chars += _gemini_parts_chars(content)
        return _int_header_or(
            self.headers.get("x-fake-usage-prompt"), BASE_PROMPT_TOKENS + chars // 4
        )

    def _gemini_usage(
        self, payload: dict[str, Any], config: dict[str, Any], candidate_count: int
    ) -> dict[str, Any]:
        prompt = self._gemini_prompt_tokens(payload)
        limit = config.get("maxOutputTokens")
        per_candidate = min(limit, MAX_COMPLETION_TOKENS) if _is_int(limit) and limit else 9
        candidates = _int_header_or(
            self.headers.get("x-fake-usage-completion"), per_candidate * candidate_count
        )
        thoughts = _int_header(self.headers.get("x-fake-usage-thoughts"))
        cached = _int_header(self.headers.get("x-fake-usage-cache-read"))
        # Key order as Google sends it; optional counts only when there are any.
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + (thoughts or 0),
        }
        if cached is not None:
            usage["cachedContentTokenCount"] = cached
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        if cached is not None:
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        if thoughts is not None:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    # -- plumbing --------------------------------------------------------------------------

    def _send_sse(
        self, events: Sequence[bytes], content_type: str = "text/event-stream; charset=utf-8"
    ) -> None:
        """Stream `events` (complete SSE events), one HTTP chunk each, honouring x-fake-delay-ms.

        Also streams other chunked bodies (Gemini's streamed JSON array) given `content_type`.
        """
        delay = max(_int_header_or(self.headers.get("x-fake-delay-ms"), 0), 0) / 1000
        stall = max(_int_header_or(self.headers.get("x-fake-stall-ms"), 0), 0) / 1000
        reset = (self.headers.get("x-fake-reset") or "").strip().lower() == "mid-stream"
        halfway = len(events) // 2

        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header(self._request_id_header, f"req_{uuid.uuid4().hex}")
        self.end_headers()
        try:
            for i, event in enumerate(events):
                if i == halfway and reset:
                    self._reset()
                    return
                if i == halfway and stall:
                    time.sleep(stall)
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

    def _reset(self) -> None:
        self.close_connection = True
        self.server.reset_on_close(self.connection)

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
        self.send_header(self._request_id_header, f"req_{uuid.uuid4().hex}")
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


def _completion_prompts(prompt: object) -> list[str | list[int]] | None:
    """A legacy Completions `prompt` as its list of prompts (texts or token id lists), or None
    when it is none of the shapes the API takes."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        return None
    if all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if all(_is_int(p) for p in prompt):
        return [list(prompt)]
    if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
        return list(prompt)
    return None


def _input_chars(input_: object) -> int:
    """Characters of text in a Responses `input`: a string or a list of items.

    Message items count their string content or their input_text / output_text parts (earlier
    assistant turns come back as output_text); other items (tool calls, images) count nothing.
    """
    if isinstance(input_, str):
        return len(input_)
    if not isinstance(input_, list):
        return 0
    total = 0
    for item in input_:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("input_text", "output_text"):
                    text = part.get("text")
                    total += len(text) if isinstance(text, str) else 0
    return total


def _response_object(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """A Responses API `response` before it has output or usage, echoing the request's settings."""
    max_output_tokens = payload.get("max_output_tokens")
    metadata = payload.get("metadata")
    # Key order as OpenAI sends it.
    return {
        "id": f"resp_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": max_output_tokens if _is_int(max_output_tokens) else None,
        "model": model,
        "output": [],
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": payload.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": payload.get("store", True),
        "temperature": payload.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": payload.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


def _host_name(host: str | None) -> str:
    """The Host header without its port, lower-cased."""
    name = (host or "").strip().lower()
    return name.rsplit(":", 1)[0] if not name.endswith("]") else name


def _dialect_of(host: str | None) -> str | None:
    """The dialect of an OpenAI-compatible host or Azure; None for OpenAI's and the others."""
    name = _host_name(host)
    if name.endswith(AZURE_HOST_SUFFIX):
        return AZURE
    known = COMPATIBLE_HOSTS.get(name)
    return known[0] if known else None


_ID_PREFIXES = {"mistral": "cmpl-", "groq": "chatcmpl-", "openrouter": "gen-", AZURE: "chatcmpl-"}
_AZURE_FILTERS: dict[str, Any] = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}
_AZURE_PROMPT_FILTERS = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **_AZURE_FILTERS,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]
_PERPLEXITY_SOURCES: dict[str, Any] = {
    "citations": ["https://en.wikipedia.org/wiki/Rayleigh_scattering"],
    "search_results": [
        {
            "title": "Rayleigh scattering",
            "url": "https://en.wikipedia.org/wiki/Rayleigh_scattering",
            "date": None,
        }
    ],
}
_REASONING_TEXT = "The user greets me; I greet back."


def _compatible_usage(
    dialect: str,
    *,
    prompt: int,
    completion: int,
    cached: int,
    reasoning: int,
    cost: Decimal | None,
    upstream_cost: Decimal | None = None,
) -> dict[str, Any]:
    """The ``usage`` object each host sends (reference §3.6), key order as the host's.

    ``reasoning`` tokens come on top of the answer's ``completion``: every host counts them in
    completion_tokens but xAI, which counts them only in total_tokens. ``cost`` (USD) is
    reported by OpenRouter (``cost``) and xAI (``cost_in_usd_ticks``, 1e10 to the dollar). An
    ``upstream_cost`` makes the OpenRouter call one on the caller's own provider key: ``cost``
    is then OpenRouter's fee, and the provider bills the upstream cost to that key.
    """
    total = prompt + completion + reasoning
    if dialect != "x-ai":
        completion += reasoning
    usage: dict[str, Any]
    if dialect == "mistral":
        usage = {"prompt_tokens": prompt, "total_tokens": total, "completion_tokens": completion}
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
    elif dialect == "groq":
        usage = {
            "queue_time": 0.041,
            "prompt_tokens": prompt,
            "prompt_time": 0.003,
            "completion_tokens": completion,
            "completion_time": 0.016,
            "total_tokens": total,
            "total_time": 0.019,
        }
    elif dialect == "deepseek":
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
            "prompt_tokens_details": {"cached_tokens": cached},
            "prompt_cache_hit_tokens": cached,
            "prompt_cache_miss_tokens": prompt - cached,
        }
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    elif dialect == "x-ai":
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,  # xAI leaves reasoning out of it
            "total_tokens": total,
            "prompt_tokens_details": {
                "text_tokens": prompt,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": cached,
            },
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
            "num_sources_used": 0,
        }
        if cost is not None:
            usage["cost_in_usd_ticks"] = int(cost * 10_000_000_000)
    elif dialect == "openrouter":
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
        }
        if cost is not None:
            usage.update(cost=float(cost), is_byok=upstream_cost is not None)
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        if cost is not None:
            # Paid with OpenRouter credits, the provider's bill is the whole of `cost`.
            upstream = cost if upstream_cost is None else upstream_cost
            usage["cost_details"] = {"upstream_inference_cost": float(upstream)}
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning, "image_tokens": 0}
    elif dialect == "fireworks":
        usage = {"prompt_tokens": prompt, "total_tokens": total, "completion_tokens": completion}
        if cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
    elif dialect == "perplexity":
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
            "search_context_size": "low",
        }
    elif dialect == "together":
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    else:  # Azure: OpenAI's own usage
        usage = {
            "completion_tokens": completion,
            "completion_tokens_details": {
                "accepted_prediction_tokens": 0,
                "audio_tokens": 0,
                "reasoning_tokens": reasoning,
                "rejected_prediction_tokens": 0,
            },
            "prompt_tokens": prompt,
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": cached},
            "total_tokens": total,
        }
    return usage


def _compatible_completion(
    dialect: str, model: str, usage: dict[str, Any], reasoning: int
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` the way ``dialect``'s host sends one."""
    message: dict[str, Any] = {"role": "assistant", "content": NON_STREAM_TEXT}
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
    obj: dict[str, Any] = {
        "id": _ID_PREFIXES.get(dialect, "") + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }
    if dialect == "mistral":
        message["tool_calls"] = None
    elif dialect == "groq":
        choice["logprobs"] = None
        obj.update(
            system_fingerprint="fp_9a8b91ba77",
            x_groq={"id": f"req_{uuid.uuid4().hex[:26]}"},
            service_tier="on_demand",
        )
    elif dialect == "deepseek":
        choice["logprobs"] = None
        if reasoning:
            message["reasoning_content"] = _REASONING_TEXT
        obj["system_fingerprint"] = "fp_ffc7281d48_prod0820_fp8_kvcache"
    elif dialect == "x-ai":
        message.update(refusal=None)
        if reasoning:
            message["reasoning_content"] = _REASONING_TEXT
        obj["system_fingerprint"] = "fp_0d42a4eb3d"
    elif dialect == "openrouter":
        choice.update(logprobs=None, native_finish_reason="stop")
        message.update(refusal=None, reasoning=None)
        obj.update(provider="OpenAI", system_fingerprint="fp_560af6e559")
    elif dialect == "together":
        choice.update(seed=3417293208536211000, logprobs=None)
        message["tool_calls"] = []
        obj["prompt"] = []
    elif dialect == "perplexity":
        obj.update(_PERPLEXITY_SOURCES)
    elif dialect == AZURE:
        choice.update(content_filter_results=_AZURE_FILTERS, logprobs=None)
        message.update(annotations=[], refusal=None)
        obj.update(prompt_filter_results=_AZURE_PROMPT_FILTERS, system_fingerprint="fp_ee1d74bde0")
    return obj


def _compatible_stream(
    dialect: str, model: str, usage: dict[str, Any], *, include_usage: bool, reasoning: int
) -> list[bytes]:
    """The SSE events of a streamed completion the way ``dialect``'s host sends them: where
    its usage comes (the finish chunk, a usage-only chunk, or both), and its own extras."""
    ident = _ID_PREFIXES.get(dialect, "") + uuid.uuid4().hex
    created = int(time.time())
    # Hosts that mimic OpenAI's include_usage also add "usage": null to every other chunk.
    null_usage = include_usage and dialect in USAGE_CHUNK_WHEN_ASKED
    request_id = f"req_{uuid.uuid4().hex[:26]}"

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        if dialect == "openrouter":
            obj["provider"] = "OpenAI"
        obj["choices"] = choices
        if dialect == "perplexity":
            obj.update(_PERPLEXITY_SOURCES)
        if null_usage:
            obj["usage"] = None
        obj.update(extra)
        return b"data: " + _dumps(obj) + b"\n\n"

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        one: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if dialect == "openrouter":
            one.update(native_finish_reason=finish_reason, logprobs=None)
        elif dialect == "together":
            one.update(text=delta.get("content", ""), logprobs=None, seed=None)
        elif dialect == AZURE and "content" in delta:
            one["content_filter_results"] = _AZURE_FILTERS
        return one

    events: list[bytes] = []
    if dialect == "openrouter":
        events.append(b": OPENROUTER PROCESSING\n\n")
    if dialect == AZURE:
        # Azure's first chunk: no choices, no model, the prompt's filter results.
        first = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
        first["prompt_filter_results"] = _AZURE_PROMPT_FILTERS
        events.append(b"data: " + _dumps(first) + b"\n\n")
    first_extra = {"x_groq": {"id": request_id}} if dialect == "groq" else {}
    events.append(chunk([choice({"role": "assistant", "content": ""})], **first_extra))
    if reasoning and dialect in ("deepseek", "x-ai"):
        events.append(chunk([choice({"reasoning_content": _REASONING_TEXT})]))
    events += [chunk([choice({"content": delta})]) for delta in STREAM_DELTAS]
    finish_extra: dict[str, Any] = {}
    if dialect in USAGE_ON_FINISH_CHUNK:
        finish_extra["usage"] = usage
    if dialect == "groq":
        finish_extra["x_groq"] = {"id": request_id, "usage": usage}
    finish = {"content": ""} if dialect in USAGE_ON_FINISH_CHUNK else {}
    events.append(chunk([choice(finish, "stop")], **finish_extra))
    if dialect == "openrouter" or (include_usage and dialect in USAGE_CHUNK_WHEN_ASKED):
        events.append(chunk([], usage=usage))
        if dialect == "x-ai":
            # xAI may follow its usage with one more, empty chunk (LiteLLM #17136).
            events.append(chunk([], usage=None))
    events.append(b"data: [DONE]\n\n")
    return events


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _system_chars(system: object) -> int:
    """Characters of text in an Anthropic `system` (a string or a list of text blocks)."""
    if isinstance(system, str):
        return len(system)
    if isinstance(system, list):
        return _content_chars([{"content": system}])
    return 0


def _is_anthropic_path(path: str) -> bool:
    return path == ANTHROPIC_MESSAGES_PATH or path.startswith(ANTHROPIC_MESSAGES_PATH + "/")


def _is_google_path(path: str) -> bool:
    return path.startswith("/v1beta/") or GEMINI_ROUTE.match(path) is not None


def _gemini_parts_chars(content: object) -> int:
    """Characters of the text parts of a Gemini `Content` (or a `systemInstruction`)."""
    if isinstance(content, str):
        return len(content)
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return 0
    total = 0
    for part in parts:
        text = part.get("text") if isinstance(part, dict) else None
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


def _anthropic_error(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def _google_error(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def _google_dumps(obj: Any) -> bytes:
    # Google's streamed events: one line, with a space after colons but not after commas.
    return json.dumps(obj, separators=(",", ": ")).encode()


def _sse_event(name: str, obj: Any) -> bytes:
    """One named SSE event the way Anthropic and the Responses API frame them."""
    return b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"


def _dumps(obj: Any) -> bytes:
    # Compact separators, like OpenAI's streamed chunks.
    return json.dumps(obj, separators=(",", ":")).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Local HTTPS fake of the OpenAI, Anthropic and Gemini APIs."
    )
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
