"""A small asyncio HTTP/1.1 client for the benchmarks that need hundreds of connections at once
(scripts/bench streams and scripts/bench overshoot).

One coroutine per connection, raw asyncio streams: opening a CONNECT tunnel with proxy-auth,
TLS inside it, one request, and a response read as it arrives (chunked bodies chunk by chunk,
SSE events stamped when their last byte is read). A thread per connection would spend the
client's CPU on switching threads; this spends it on TLS and parsing only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

LLM_HOST = "api.openai.com"
READ_LIMIT = 1 << 20
FAKE_BACKLOG = 1024  # the fake's listen queue when hundreds of connections open at once


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan for an empty one)."""
    if not sorted_values:
        return math.nan
    index = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return sorted_values[index]


def sse_events(buffer: bytearray) -> list[bytes]:
    """Take every complete SSE event (ended by a blank line) off the front of ``buffer``."""
    events: list[bytes] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return events
        events.append(bytes(buffer[:end]))
        del buffer[: end + 2]


def rss_kib(pid: int) -> int | None:
    """The resident set of ``pid`` in KiB (VmRSS), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    sent_at: float = 0.0  # perf_counter when the request's last byte was written
    headers_at: float = 0.0
    event_times: list[float] = field(default_factory=list)  # SSE: when each event was complete
    events: list[bytes] = field(default_factory=list)

    def json(self) -> object:
        return json.loads(self.body)


class Connection:
    """One client connection to api.openai.com: through a proxy's CONNECT tunnel, or straight
    to an HTTPS (``tls=True``) or plain HTTP server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(
        cls,
        port: int,
        context: ssl.SSLContext | None,
        *,
        tunnel_auth: str | None = None,
        server_hostname: str = LLM_HOST,
    ) -> Connection:
        """``tunnel_auth`` "agent:session" opens a CONNECT tunnel through the proxy at ``port``
        first; ``context`` None talks plain HTTP."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=READ_LIMIT)
        try:
            if tunnel_auth is not None:
                token = base64.b64encode(tunnel_auth.encode()).decode()
                writer.write(
                    f"CONNECT {LLM_HOST}:443 HTTP/1.1\r\nHost: {LLM_HOST}:443\r\n"
                    f"Proxy-Authorization: Basic {token}\r\n\r\n".encode()
                )
                status, _ = await read_head(reader)
                if status != 200:
                    raise ConnectionError(f"CONNECT answered {status}")
            if context is not None:
                await writer.start_tls(context, server_hostname=server_hostname)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer)

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], *, sse: bool = False
    ) -> Response:
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        response = Response(sent_at=time.perf_counter())
        response.status, response.headers = await read_head(self.reader)
        response.headers_at = time.perf_counter()
        chunks = self._chunks(response.headers)
        if not sse:
            response.body = b"".join([chunk async for chunk in chunks])
            return response
        buffer = bytearray()
        async for chunk in chunks:
            buffer += chunk
            events = sse_events(buffer)
            if events:
                now = time.perf_counter()
                response.events += events
                response.event_times += [now] * len(events)
        response.body = bytes(buffer)  # anything after the last complete event
        return response

    async def _chunks(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()  # the blank line after the last chunk
                    return
                data = await self.reader.readexactly(size + 2)
                yield data[:-2]
        elif "content-length" in headers:
            yield await self.reader.readexactly(int(headers["content-length"]))
        else:
            yield await self.reader.read()

    def close(self) -> None:
        self.writer.close()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and lowercased headers of a response."""
    data = await reader.readuntil(b"\r\n\r\n")
    lines = data.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers
