"""The status app on a plain port of its own (``--set spendbrake_status_listen=127.0.0.1:9099``),
for a browser or Prometheus that does not go through the proxy.

An asyncio server on the proxy's own event loop, speaking HTTP/1.1 through h11 (mitmproxy's own
HTTP/1 parser). A request costs the loop only its parsing; the page's ledger reads run on the
status app's reader thread. It listens on loopback unless told otherwise, and a non-loopback
address is refused until an admin token is set: every route needs the token, and on a network
that token should not be the only thing between a stranger and every agent's spend unnoticed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from http import HTTPStatus

import h11
from mitmproxy import ctx, exceptions

from spendbrake.mitm.access_cache import AccessCache, AccessUnavailable
from spendbrake.mitm.status_app import StatusApp, WebRequest, WebResponse, json_response

log = logging.getLogger(__name__)

OPTION = "spendbrake_status_listen"
_MAX_BODY = 64 * 1024  # a login form; nothing bigger is ever posted here
_IDLE_TIMEOUT_S = 60.0


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise exceptions.OptionsError(
            f"{OPTION} must be HOST:PORT (e.g. 127.0.0.1:9099), not {value!r}"
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: where it points may change


class StatusServer:
    def __init__(self, app: Callable[[], StatusApp]) -> None:
        self.app = app  # the current one: it is rebuilt when the configuration changes
        self.address: tuple[str, int] | None = None
        self.bound: tuple[str, int] | None = None  # where it listens (the port chosen for 0)
        self._serving: asyncio.Task[asyncio.Server] | None = None
        self._started = False

    def load(self, loader: object) -> None:
        loader.add_option(  # type: ignore[attr-defined]
            OPTION,
            str | None,
            None,
            "Also serve the status page, the JSON API and /metrics on this HOST:PORT, plain "
            "HTTP without going through the proxy (e.g. 127.0.0.1:9099). Every route needs the "
            "admin token; an address other than loopback is refused until one is set.",
        )

    def configure(self, updated: set[str]) -> None:
        if OPTION not in updated:
            return
        value = getattr(ctx.options, OPTION)
        address = parse_listen(value) if value else None
        access = self.app().access  # what enforcement loaded: configured before this part
        if address and not is_loopback(address[0]) and not _admin_token_set(access):
            raise exceptions.OptionsError(
                f"{OPTION}={value} would serve every agent's spend beyond this machine, and no "
                "admin token is set: run 'spendbrake admin-token' first (the port is plain "
                "HTTP: on a network, prefer https://spendbrake.local through the proxy)"
            )
        if address != self.address:
            self.address = address
            if self._started:  # changed while running: move to the new address
                self.stop()
                self.start()

    def running(self) -> None:
        self._started = True
        self.start()

    def done(self) -> None:
        self._started = False
        self.stop()

    def start(self) -> None:
        if self.address is None:
            return
        host, port = self.address
        try:
            # Bound here, at once, so a taken port is reported when the proxy starts.
            sock = socket.create_server((host, port), family=_family(host), reuse_port=False)
        except OSError as e:
            log.error("spendbrake: cannot serve the status page on %s:%d: %s", host, port, e)
            return
        sock.setblocking(False)
        self.bound = sock.getsockname()[:2]
        serving = asyncio.start_server(self._connection, sock=sock)
        self._serving = asyncio.get_running_loop().create_task(serving)
        shown = f"[{self.bound[0]}]" if ":" in self.bound[0] else self.bound[0]
        log.info("spendbrake: status page and /metrics at http://%s:%d/", shown, self.bound[1])

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        self.bound = None
        if serving is not None:
            serving.add_done_callback(_close_server)  # at once if it is serving already

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_BODY)
        try:
            while (request := await _read_request(conn, reader)) is not None:
                answer = await self.app().handle(request)
                writer.write(_response_bytes(conn, answer))
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                answer = json_response(e.error_status_hint, {"error": f"bad request: {e}"})
                writer.write(_response_bytes(conn, answer))
        except (ConnectionError, TimeoutError):
            pass  # the client went away or went quiet
        except Exception:
            log.exception("spendbrake: the status port failed to answer a request")
        finally:
            writer.close()


def _close_server(serving: asyncio.Task[asyncio.Server]) -> None:
    if not serving.cancelled() and serving.exception() is None:
        serving.result().close()


def _admin_token_set(access: AccessCache) -> bool:
    try:
        return bool(access.records().admin_token_sha256)
    except AccessUnavailable:
        return False


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> WebRequest | None:
    """The next request on the connection, or None when the client closed it."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await asyncio.wait_for(reader.read(65536), _IDLE_TIMEOUT_S)
            conn.receive_data(data)  # b"": the client closed its side
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_BODY:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return WebRequest(
                method=head.method.decode("ascii", "replace"),
                target=head.target.decode("ascii", "replace"),
                headers={
                    name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers
                },
                body=bytes(body),
            )
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _reason(answer: WebResponse) -> bytes:
    try:
        return HTTPStatus(answer.status).phrase.encode()
    except ValueError:
        return b""


def _response_bytes(conn: h11.Connection, answer: WebResponse) -> bytes:
    headers = [(name, value) for name, value in answer.headers.items()]
    headers.append(("content-length", str(len(answer.body))))
    parts = [
        conn.send(h11.Response(status_code=answer.status, headers=headers, reason=_reason(answer))),
        conn.send(h11.Data(data=answer.body)) if answer.body else b"",
        conn.send(h11.EndOfMessage()),
    ]
    return b"".join(part or b"" for part in parts)
