"""Works out the agent of every request and removes what identified it.

The proxy credentials of a tunnel arrive once, on its CONNECT; they are remembered per client
connection for every request inside it. mitmproxy's own ``proxyauth`` is used when the operator
turned it on; otherwise the header is read here, so clients without credentials still work.
"""

from __future__ import annotations

from mitmproxy import connection, ctx, exceptions, http

from spendbrake.attribution import (
    DEFAULT_AGENT,
    IDENTIFICATION_HEADERS,
    InvalidIdentity,
    identify,
    parse_basic_credentials,
)
from spendbrake.mitm.state import STATE_KEY, FlowState

_PROXY_AUTHORIZATION = "proxy-authorization"
_REMOVED = frozenset(name.encode() for name in (_PROXY_AUTHORIZATION, *IDENTIFICATION_HEADERS))


def _proxyauth_credentials(flow: http.HTTPFlow) -> tuple[str, str] | None:
    from_proxyauth = flow.metadata.get("proxyauth")
    if isinstance(from_proxyauth, tuple) and len(from_proxyauth) == 2:
        return from_proxyauth
    return None


def _credentials_in(authorization: str | None) -> tuple[str, str] | None:
    return parse_basic_credentials(authorization) if authorization else None


def _take_identifying_headers(headers: http.Headers) -> dict[str, str]:
    """Removes the headers that identify the caller and returns them, repeated ones joined as
    ``Headers.get`` joins them. One pass: each ``Headers`` lookup is a scan of every field."""
    taken: dict[str, list[str]] = {}
    for name, value in headers.fields:
        lowered = name.lower()
        if lowered in _REMOVED:
            taken.setdefault(lowered.decode(), []).append(value.decode("utf-8", "surrogateescape"))
    if taken:
        headers.fields = tuple((n, v) for n, v in headers.fields if n.lower() not in _REMOVED)
    return {name: ", ".join(values) for name, values in taken.items()}


class Identification:
    def __init__(self) -> None:
        self._tunnel_credentials: dict[str, tuple[str, str]] = {}
        self.default_agent, self.default_session = DEFAULT_AGENT, ""

    def load(self, loader: object) -> None:
        add = loader.add_option  # type: ignore[attr-defined]
        add(
            "spendbrake_default_agent",
            str,
            DEFAULT_AGENT,
            "The agent of a call that names none (no proxy-auth user, no X-Spendbrake-Agent).",
        )
        add(
            "spendbrake_default_session",
            str,
            "",
            "The session of a call that names none ('spendbrake run' sets its own).",
        )

    def configure(self, updated: set[str]) -> None:
        if {"spendbrake_default_agent", "spendbrake_default_session"} & updated:
            agent, session = (
                ctx.options.spendbrake_default_agent,
                ctx.options.spendbrake_default_session,
            )
            try:
                identify(None, {}, default_agent=agent, default_session=session)
            except InvalidIdentity as e:
                raise exceptions.OptionsError(f"spendbrake_default_agent/session: {e}") from None
            self.default_agent, self.default_session = agent, session

    def http_connect(self, flow: http.HTTPFlow) -> None:
        authorization = flow.request.headers.pop(_PROXY_AUTHORIZATION, None)
        credentials = _proxyauth_credentials(flow) or _credentials_in(authorization)
        if credentials:
            self._tunnel_credentials[flow.client_conn.id] = credentials

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnel_credentials.pop(client.id, None)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Plain-HTTP proxy requests carry credentials on every request; tunnels only on CONNECT.
        # None of these headers reaches the provider.
        taken = _take_identifying_headers(flow.request.headers)
        credentials = (
            _proxyauth_credentials(flow)
            or _credentials_in(taken.get(_PROXY_AUTHORIZATION))
            or self._tunnel_credentials.get(flow.client_conn.id)
        )
        try:
            identity = identify(
                credentials,
                taken,
                default_agent=self.default_agent,
                default_session=self.default_session,
            )
            state = FlowState(identity=identity)
        except InvalidIdentity as e:
            state = FlowState(identity=None, identity_error=str(e))
        flow.metadata[STATE_KEY] = state
