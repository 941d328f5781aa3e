"""Which connections are opened up: only LLM hosts (and spendbrake's own local host) are
TLS-intercepted.

Every other host is tunnelled untouched, so its client sees the host's own certificate and
spendbrake never reads traffic it has no business with. Those tunnels are dialled as soon as the
client asks for them (mitmproxy's ``connection_strategy=eager``): in protocols such as SSH, SMTP
or IMAP the server speaks first, and a client waiting for that greeting would otherwise wait
forever. The hosts spendbrake opens up are dialled only for a call it forwards.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import ctx, exceptions, http, tls
from mitmproxy.proxy import server_hooks

from spendbrake.mitm.local_api import is_local
from spendbrake.providers import provider_for_host

log = logging.getLogger(__name__)


def parse_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise exceptions.OptionsError(
            f"spendbrake_upstream must be HOST:PORT (e.g. 127.0.0.1:8443), not {value!r}"
        )
    return host.strip("[]"), int(port)


def opened_up(host: str) -> bool:
    """An LLM host, or spendbrake's own: the hosts whose TLS spendbrake opens up."""
    return provider_for_host(host) is not None or is_local(host)


def connection_established(request: http.Request) -> http.Response:
    """The 200 mitmproxy itself answers a CONNECT with (no headers: some clients, such as
    Android's emulator, reject any)."""
    now = time.time()
    return http.Response(
        request.data.http_version,
        200,
        b"Connection established",
        http.Headers(),
        b"",
        None,
        now,
        now,
    )


class Interception:
    def __init__(self) -> None:
        self.upstream: tuple[str, int] | None = None

    def load(self, loader: object) -> None:
        loader.add_option(  # type: ignore[attr-defined]
            "spendbrake_upstream",
            str | None,
            None,
            "Send connections meant for LLM hosts to HOST:PORT instead (a local fake provider "
            "for tests and demos). The client still sees the real host name.",
        )

    def configure(self, updated: set[str]) -> None:
        if "spendbrake_upstream" in updated:
            value = ctx.options.spendbrake_upstream
            self.upstream = parse_host_port(value) if value else None

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # Answering the CONNECT here is what keeps mitmproxy from dialling the host now: a
        # refused call then opens no connection to the provider, and refusals work while the
        # provider is away. A refusal of the tunnel (a 407) stays as it is.
        if flow.response is None and opened_up(flow.request.host):
            flow.response = connection_established(flow.request)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        requested = data.context.server.address[0] if data.context.server.address else None
        names = (data.client_hello.sni, requested)
        if not any(name and opened_up(name) for name in names):
            data.ignore_connection = True
        elif not data.context.server.connected:
            # Nor dialled now to copy its TLS (ALPN, certificate names) first, as mitmproxy
            # would: the provider is dialled for a forwarded call only. (A tunnel mitmproxy has
            # dialled already, to an address that names no LLM host, keeps its server TLS first.)
            data.establish_server_tls_first = False

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Redirect each request, not only its connection: mitmproxy reuses a server connection
        # only for the address it was opened for (and opens at most 5 per address and client).
        if self.upstream and provider_for_host(flow.request.pretty_host):
            host_header = flow.request.host_header
            flow.request.host, flow.request.port = self.upstream
            flow.request.host_header = host_header

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        address = data.server.address
        if self.upstream and address and provider_for_host(address[0]):
            data.server.address = self.upstream
