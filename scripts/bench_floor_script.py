"""A mitmproxy script for `scripts/bench --floor VARIANT`: what a design costs at the least.

Loaded into `spendbrake up` after spendbrake's addon, it replaces the addon's per-call work with
the floor of a design, so the benchmark measures what that design could reach at best. The
connection hooks, identification and the rest of spendbrake stay as they are. Nothing is held or
settled, so no floor variant is a working spendbrake: these numbers bound designs, they do not
measure one.

- ``no-call-work``: each request is identified, and its response carries x-spendbrake-agent.
  Nothing else happens per call.
- ``side-process``: as ``no-call-work``, and the request waits for one round trip to a process of
  its own carrying the request body, the response for one carrying the response body: the least a
  proxy pays when a side process makes the decision and settles (the side process only echoes).

This file is also the echo process: ``python bench_floor_script.py --echo FD``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import subprocess
import sys

VARIANTS = ("no-call-work", "side-process")
VARIANT_ENV = "SPENDBRAKE_BENCH_FLOOR"
_LENGTH = 4  # bytes of the big-endian length before each frame


def serve_echo(fd: int) -> None:
    """Answer every frame with itself until the proxy closes its end."""
    with socket.socket(fileno=fd) as sock, sock.makefile("rb") as frames:
        while header := frames.read(_LENGTH):
            body = frames.read(int.from_bytes(header, "big"))
            sock.sendall(header + body)


class _EchoLink(asyncio.Protocol):
    """The proxy's end: frames out, answers back in the order asked (one process answers)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= _LENGTH:
            size = int.from_bytes(self._buffer[:_LENGTH], "big")
            if len(self._buffer) < _LENGTH + size:
                return
            frame = bytes(self._buffer[_LENGTH : _LENGTH + size])
            del self._buffer[: _LENGTH + size]
            self._waiting.popleft().set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        for waiter in self._waiting:
            waiter.set_exception(ConnectionError("the echo process went away"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def round_trip(self, payload: bytes) -> bytes:
        assert self._transport is not None
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        self._transport.write(len(payload).to_bytes(_LENGTH, "big") + payload)
        return await answer


class _SideProcess:
    def __init__(self) -> None:
        self._link: _EchoLink | None = None
        self._starting = asyncio.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    async def round_trip(self, payload: bytes) -> bytes:
        async with self._starting:
            if self._link is None:
                ours, theirs = socket.socketpair()
                argv = [sys.executable, __file__, "--echo", str(theirs.fileno())]
                self._process = subprocess.Popen(argv, pass_fds=[theirs.fileno()])
                theirs.close()
                loop = asyncio.get_running_loop()
                _, self._link = await loop.create_connection(_EchoLink, sock=ours)
        return await self._link.round_trip(payload)

    def stop(self) -> None:
        if self._link is not None:
            self._link.close()  # the echo process reads the end of its input and exits
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def _install(variant: str) -> None:
    from mitmproxy import http

    from spendbrake.mitm.addon import Spendbrake
    from spendbrake.mitm.state import flow_state

    side = _SideProcess() if variant == "side-process" else None

    def requestheaders(self: Spendbrake, flow: http.HTTPFlow) -> None:
        self.interception.requestheaders(flow)
        self.identification.requestheaders(flow)

    async def request(self: Spendbrake, flow: http.HTTPFlow) -> None:
        if side is not None and flow.request.raw_content is not None:
            await side.round_trip(flow.request.raw_content)

    def responseheaders(self: Spendbrake, flow: http.HTTPFlow) -> None:
        pass

    async def response(self: Spendbrake, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if flow.response is None or state is None or state.identity is None:
            return
        if side is not None and flow.response.raw_content is not None:
            await side.round_trip(flow.response.raw_content)
        flow.response.headers["x-spendbrake-agent"] = state.identity.agent

    def done(self: Spendbrake) -> None:
        if side is not None:
            side.stop()
        original_done(self)

    original_done = Spendbrake.done
    Spendbrake.requestheaders = requestheaders  # type: ignore[method-assign]
    Spendbrake.request = request  # type: ignore[method-assign]
    Spendbrake.responseheaders = responseheaders  # type: ignore[method-assign]
    Spendbrake.response = response  # type: ignore[method-assign]
    Spendbrake.done = done  # type: ignore[method-assign]


if __name__ == "__main__":
    if sys.argv[1:2] != ["--echo"] or len(sys.argv) != 3:
        sys.exit("usage: bench_floor_script.py --echo FD")
    serve_echo(int(sys.argv[2]))
elif (_variant := os.environ.get(VARIANT_ENV)) is not None:
    if _variant not in VARIANTS:
        raise ValueError(f"{VARIANT_ENV}={_variant!r}: choose from {', '.join(VARIANTS)}")
    _install(_variant)
