"""The one addon mitmproxy sees: each hook once, handed to the parts in the order they need.

mitmproxy calls every addon in its chain for every event, with a context manager and a coroutine
per addon; one addon instead of three saves that on every event of every flow. The parts stay
separate classes, each with one concern and its own tests.
"""

from __future__ import annotations

import time

from mitmproxy import connection, http, tls
from mitmproxy.proxy import server_hooks

from spendbrake.access_book import SQLiteAccessBook
from spendbrake.metrics import AddedLatency
from spendbrake.mitm.access_cache import AccessCache
from spendbrake.mitm.call_log import keep_out_of_add_log
from spendbrake.mitm.enforcement import Enforcement
from spendbrake.mitm.identification import Identification
from spendbrake.mitm.interception import Interception
from spendbrake.mitm.local_api import LocalApi
from spendbrake.mitm.state import flow_state
from spendbrake.mitm.status_server import StatusServer
from spendbrake.postgres_access_book import PrefetchedAccessBook
from spendbrake.postgres_ledger import PostgresLedger


class Spendbrake:
    def __init__(self) -> None:
        self.interception = Interception()
        self.identification = Identification()
        self.enforcement = Enforcement()
        self.latency = AddedLatency()
        self.local_api = LocalApi(self.latency)
        self.status_server = StatusServer(lambda: self.local_api.app)
        self.alerting = self.enforcement.alerts  # told by enforcement; started and stopped here

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self, loader: object) -> None:
        keep_out_of_add_log()
        self.interception.load(loader)
        self.identification.load(loader)
        self.enforcement.load(loader)
        self.status_server.load(loader)

    def configure(self, updated: set[str]) -> None:
        self.interception.configure(updated)
        self.identification.configure(updated)
        self.enforcement.configure(updated)
        self.share_what_enforcement_loaded()
        self.status_server.configure(updated)

    def share_what_enforcement_loaded(self) -> None:
        """Identification and the local API read what enforcement loaded: the configuration,
        and the ledger (for its access records)."""
        config, worker = self.enforcement.config, self.enforcement.worker
        if worker is self.local_api.worker:
            access = self.local_api.access
        elif worker and isinstance(worker.ledger, PostgresLedger):
            access = AccessCache(PrefetchedAccessBook(worker.ledger))  # never on the loop
        else:
            ledger = worker.inline if worker else None
            access = AccessCache(SQLiteAccessBook(ledger) if ledger else None)
        self.identification.use(config, access)
        self.local_api.use(config, worker, access)
        self.alerting.use(config.alerts, worker)

    def running(self) -> None:
        self.identification.running()
        self.enforcement.running()
        self.status_server.running()
        self.alerting.running()

    def done(self) -> None:
        self.alerting.done()
        self.local_api.done()
        self.enforcement.done()
        self.status_server.done()

    # -- connections ---------------------------------------------------------------------------

    async def client_connected(self, client: connection.Client) -> None:
        await self.identification.client_connected(client)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        self.interception.tls_clienthello(data)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self.interception.http_connect(flow)
        self.identification.http_connect(flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self.identification.client_disconnected(client)

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.interception.server_connect(data)

    # -- flows ---------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.interception.requestheaders(flow)
        # Identification runs before enforcement reads who is calling.
        self.identification.requestheaders(flow)
        self.enforcement.requestheaders(flow)

    # The latency spendbrake adds to a metered call: one clock read before and after each hook.

    async def request(self, flow: http.HTTPFlow) -> None:
        if await self.local_api.request(flow):
            return
        started = time.perf_counter()
        await self.enforcement.request(flow)
        if _metered(flow):
            self.latency.observe("request", time.perf_counter() - started)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.enforcement.responseheaders(flow)

    async def response(self, flow: http.HTTPFlow) -> None:
        held = _held(flow)  # before: a settled flow's live state leaves its metadata
        started = time.perf_counter()
        await self.enforcement.response(flow)
        if held:
            self.latency.observe("response", time.perf_counter() - started)

    async def error(self, flow: http.HTTPFlow) -> None:
        held = _held(flow)  # before: a settled flow's live state leaves its metadata
        started = time.perf_counter()
        await self.enforcement.error(flow)
        if held:
            self.latency.observe("error", time.perf_counter() - started)


def _held(flow: http.HTTPFlow) -> bool:
    state = flow_state(flow)
    return state is not None and state.call is not None


def _metered(flow: http.HTTPFlow) -> bool:
    """Held for, or refused by spendbrake (not merely passed by, as a free route is)."""
    refused = flow.response is not None and "x-spendbrake-reason" in flow.response.headers
    return refused or _held(flow)
