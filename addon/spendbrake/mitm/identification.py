"""Works out the agent of every request and removes what identified it.

The proxy credentials of a tunnel arrive once, on its CONNECT; they are remembered per client
connection for every request inside it. mitmproxy's own ``proxyauth`` is used when the operator
turned it on; otherwise the header is read here, so clients without credentials still work.
"""

from __future__ import annotations

from mitmproxy import connection, http

from spendbrake.attribution import (
    IDENTIFICATION_HEADERS,
    InvalidIdentity,
    identify,
    parse_basic_credentials,
)
from spendbrake.mitm.state import STATE_KEY, FlowState

_PROXY_AUTHORIZATION = "proxy-authorization"


def _credentials_of(flow: http.HTTPFlow) -> tuple[str, str] | None:
    from_proxyauth = flow.metadata.get("proxyauth")
    if isinstance(from_proxyauth, tuple) and len(from_proxyauth) == 2:
        return from_proxyauth
    header = flow.request.headers.get(_PROXY_AUTHORIZATION)
    return parse_basic_credentials(header) if header else None


class Identification:
    def __init__(self) -> None:
        self._tunnel_credentials: dict[str, tuple[str, str]] = {}

    def http_connect(self, flow: http.HTTPFlow) -> None:
        credentials = _credentials_of(flow)
        if credentials:
            self._tunnel_credentials[flow.client_conn.id] = credentials
        flow.request.headers.pop(_PROXY_AUTHORIZATION, None)

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnel_credentials.pop(client.id, None)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Plain-HTTP proxy requests carry credentials on every request; tunnels only on CONNECT.
        credentials = _credentials_of(flow) or self._tunnel_credentials.get(flow.client_conn.id)
        flow.request.headers.pop(_PROXY_AUTHORIZATION, None)
        try:
            state = FlowState(identity=identify(credentials, flow.request.headers))
        except InvalidIdentity as e:
            state = FlowState(identity=None, identity_error=str(e))
        for name in IDENTIFICATION_HEADERS:
            flow.request.headers.pop(name, None)  # never reaches the provider
        flow.metadata[STATE_KEY] = state
