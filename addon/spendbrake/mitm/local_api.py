"""The proxy's own host, ``spendbrake.local``, answered by the addon itself (http or https,
through the proxy): nothing is forwarded anywhere.

- ``GET /whoami``: which agent and session the caller is counted as, and why. Anyone may ask
  about themselves.
- Everything else is the status app (``status_app``): the status page, per-agent pages, the
  JSON API (``/api/status``, ``/api/calls``, ``/api/events``, ``POST /api/agents/NAME/resume``)
  and ``/metrics``. They read or change other agents' affairs, so they need the admin token
  (``Authorization: Bearer TOKEN``, or the browser's cookie; set with ``spendbrake admin-token``);
  an agent's proxy secret is not an admin token.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from spendbrake.config import Config
from spendbrake.ledger_url import LedgerLocation
from spendbrake.metrics import AddedLatency
from spendbrake.mitm.access_cache import AccessCache
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.mitm.state import flow_state
from spendbrake.mitm.status_app import StatusApp, WebRequest, without_token
from spendbrake.postgres_ledger import PostgresLedger
from spendbrake.sqlite_ledger import SQLiteLedger

LOCAL_HOST = "spendbrake.local"


def is_local(host: str) -> bool:
    return host.lower().rstrip(".") == LOCAL_HOST


class LocalApi:
    def __init__(self, latency: AddedLatency | None = None) -> None:
        self.config = Config()
        self.worker: LedgerWorker | None = None
        self.access = AccessCache()
        self.latency = latency or AddedLatency()
        self.app = StatusApp(self.config, None, self.access, self.latency, None)

    def use(self, config: Config, worker: LedgerWorker | None, access: AccessCache) -> None:
        if config is self.config and worker is self.worker and access is self.access:
            return
        self.config, self.worker, self.access = config, worker, access
        self.app.close()
        ledger = worker.ledger if worker else None
        location: LedgerLocation | None = None  # the status pages read what the proxy writes
        if isinstance(ledger, PostgresLedger):
            location = ledger.location
        elif isinstance(ledger, SQLiteLedger):
            location = ledger.path
        self.app = StatusApp(config, worker, access, self.latency, location)

    def done(self) -> None:
        self.app.close()

    async def request(self, flow: http.HTTPFlow) -> bool:
        """Answer a request to ``spendbrake.local``; True if it was one."""
        if flow.response or flow.error or not flow.live:
            return False
        if not is_local(flow.request.pretty_host):
            return False
        request = WebRequest(
            method=flow.request.method,
            target=flow.request.path,
            headers={name.lower(): value for name, value in flow.request.headers.items()},
            body=flow.request.content or b"",
            secure=flow.request.scheme == "https",
        )
        if "token" in request.query:
            # A login link's token must not reach mitmproxy's flow log: keep the rest of the URL.
            flow.request.path = without_token(flow.request.path)
        if request.path == "/whoami" and request.method == "GET":
            flow.response = self._whoami(flow)
            return True
        answer = await self.app.handle(request)
        flow.response = http.Response.make(answer.status, answer.body, answer.headers)
        return True

    def _whoami(self, flow: http.HTTPFlow) -> http.Response:
        state = flow_state(flow)
        client = flow.client_conn.peername[0] if flow.client_conn.peername else None
        if state is None or state.identity is None:
            reason = state.identity_error if state else "not identified"
            return _json(407, {"error": reason, "strict": self.config.access.strict})
        identity = state.identity
        return _json(
            200,
            {
                "agent": identity.agent,
                "session": identity.session,
                "source": identity.source,
                "why": identity.why,
                "strict": self.config.access.strict,
                "client": client,
            },
        )


def _json(status: int, body: dict[str, Any]) -> http.Response:
    return http.Response.make(
        status,
        json.dumps(body, indent=2) + "\n",
        {"content-type": "application/json", "cache-control": "no-store"},
    )
