"""Works out the agent of every request, removes what identified it, and keeps out clients
that may not use the proxy.

The proxy credentials of a tunnel arrive once, on its CONNECT; they are remembered per client
connection for every request inside it. mitmproxy's own ``proxyauth`` is used when the operator
turned it on; otherwise the header is read here, so clients without credentials still work.
A loopback client's process is looked up once per connection, on a thread, and only when the
configuration has process rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.proxy.mode_specs import ProxyMode

from spendbrake.access import (
    Access,
    AccessConfigError,
    ProcessInfo,
    is_loopback_host,
    parse_ip,
    parse_port_agents,
)
from spendbrake.agent_keys import api_key_hash, api_key_of_request
from spendbrake.attribution import (
    DEFAULT_AGENT,
    IDENTIFICATION_HEADERS,
    Identity,
    InvalidIdentity,
    identify,
    parse_basic_credentials,
)
from spendbrake.config import Config
from spendbrake.mitm.access_cache import AccessCache, AccessUnavailable
from spendbrake.mitm.interception import opened_up
from spendbrake.mitm.state import STATE_KEY, FlowState
from spendbrake.peer_process import PeerProcesses

log = logging.getLogger(__name__)

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
        self._processes: dict[str, ProcessInfo | None] = {}  # client connection → its process
        self.default_agent, self.default_session = DEFAULT_AGENT, ""
        self.config = Config()
        self.access = AccessCache()
        self.port_agents: dict[int, str] = {}
        self.rules = self.config.identify
        self.peer_processes = PeerProcesses()

    def use(self, config: Config, access: AccessCache) -> None:
        """The configuration and the ledger's access records (set once both are loaded)."""
        self.config, self.access = config, access
        self.rules = config.identify.with_ports(self.port_agents)

    def running(self) -> None:
        # Only now are all options applied (mitmproxy sets --set options before --listen-host).
        # An error logged during start-up makes mitmdump exit; until then, clients outside
        # the allowed networks are disconnected anyway.
        try:
            check_listeners(self.config.access)
        except exceptions.OptionsError as e:
            log.error("%s", e)

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
        add(
            "spendbrake_port_agents",
            Sequence[str],
            [],
            "PORT=AGENT: calls through the listener on PORT belong to AGENT unless they name "
            "another ('spendbrake up --listen 127.0.0.1:8081=research-bot' sets it).",
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
        if "spendbrake_port_agents" in updated:
            try:
                self.port_agents = parse_port_agents(ctx.options.spendbrake_port_agents)
            except AccessConfigError as e:
                raise exceptions.OptionsError(f"spendbrake_port_agents: {e}") from None
            self.rules = self.config.identify.with_ports(self.port_agents)

    # -- connections ---------------------------------------------------------------------------

    async def client_connected(self, client: connection.Client) -> None:
        address = client.peername[0] if client.peername else None
        if not self.config.access.client_allowed(address):
            # Not an open relay: the connection is closed before it can ask for anything.
            client.error = f"spendbrake: client {address} is not in access.allow_clients"
            log.warning("%s; connection closed", client.error)
            return
        ip = parse_ip(address)
        if self.config.identify.processes and ip is not None and ip.is_loopback:
            peer_port, listen_port = client.peername[1], client.sockname[1]
            self._processes[client.id] = await asyncio.to_thread(
                self.peer_processes.find, peer_port, listen_port
            )

    def http_connect(self, flow: http.HTTPFlow) -> None:
        authorization = flow.request.headers.pop(_PROXY_AUTHORIZATION, None)
        credentials = _proxyauth_credentials(flow) or _credentials_in(authorization)
        if credentials:
            self._tunnel_credentials[flow.client_conn.id] = credentials
        if self.config.access.strict and not opened_up(flow.request.host):
            # Tunnels to other hosts carry nothing spendbrake can refuse later: prove the
            # agent now. (Calls to LLM hosts get their 407 in the provider's own shape.)
            try:
                self._identify(flow, credentials, {})
            except (InvalidIdentity, AccessUnavailable) as e:
                flow.response = http.Response.make(
                    407,
                    f"{e}\n",
                    {
                        "proxy-authenticate": 'Basic realm="spendbrake"',
                        "content-type": "text/plain",
                    },
                )

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnel_credentials.pop(client.id, None)
        self._processes.pop(client.id, None)

    # -- requests ------------------------------------------------------------------------------

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
            state = FlowState(identity=self._identify(flow, credentials, taken))
        except (InvalidIdentity, AccessUnavailable) as e:
            state = FlowState(identity=None, identity_error=str(e))
        flow.metadata[STATE_KEY] = state

    def _identify(
        self,
        flow: http.HTTPFlow,
        credentials: tuple[str, str] | None,
        headers: dict[str, str],
    ) -> Identity:
        client = flow.client_conn
        records = self.access.records()
        api_key_owner = None
        if records.api_keys and (key := api_key_of_request(flow.request.headers, flow.request.url)):
            owner = records.api_keys.get(api_key_hash(records.api_key_hash_key, key))
            api_key_owner = (owner.agent, owner.hint) if owner else None

        def attempt(secrets: dict[str, str]) -> Identity:
            return identify(
                credentials,
                headers,
                default_agent=self.default_agent,
                default_session=self.default_session,
                rules=self.rules,
                strict=self.config.access.strict,
                secrets=secrets,
                listen_port=client.sockname[1] if client.sockname else None,
                process=self._processes.get(client.id),
                client_ip=client.peername[0] if client.peername else None,
                api_key_owner=api_key_owner,
            )

        try:
            return attempt({**self.config.agent_secrets, **records.secrets})
        except InvalidIdentity:
            if not credentials:
                raise
            # A secret set a moment ago ('spendbrake agent add') is not in the copy yet.
            fresh = self.access.after_a_miss()
            return attempt({**self.config.agent_secrets, **fresh.secrets})


def check_listeners(access: Access) -> None:
    """Not an open relay: a listener beyond loopback needs strict mode or an allow-list."""
    if access.open_to_the_network:
        return
    options = ctx.options
    for spec in options.mode:
        mode = ProxyMode.parse(spec)
        host = (
            mode.custom_listen_host if mode.custom_listen_host is not None else options.listen_host
        )
        if not is_loopback_host(host):
            where = f"{host}" if host else "every interface"
            raise exceptions.OptionsError(
                f"spendbrake: the proxy would listen on {where}, where anyone on the network "
                "could spend through it. Listen on 127.0.0.1, or set [access] strict = true "
                "(every call needs its agent's secret) or [access] allow_clients = [...] in the "
                "configuration."
            )
