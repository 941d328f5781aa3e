"""The proxy's own host, ``spendbrake.local``, answered by the addon itself (http or https,
through the proxy): nothing is forwarded anywhere.

- ``GET /whoami``: which agent and session the caller is counted as, and why. Anyone may ask
  about themselves.
- ``GET /api/status``: every agent's spend (``spendbrake status --json``), and
  ``POST /api/agents/NAME/resume``: lift a suspension. Both read or change other agents'
  affairs, so both need the admin token (``Authorization: Bearer TOKEN``, set with
  ``spendbrake admin-token``); an agent's proxy secret is not an admin token.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from mitmproxy import http

from spendbrake.agent_keys import secret_hash
from spendbrake.config import Config
from spendbrake.ledger import Ledger
from spendbrake.mitm.access_cache import AccessCache, AccessUnavailable
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.mitm.state import flow_state
from spendbrake.status import status_document
from spendbrake.windows import utc_now

LOCAL_HOST = "spendbrake.local"
_RESUME = re.compile(r"/api/agents/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/resume")


def is_local(host: str) -> bool:
    return host.lower().rstrip(".") == LOCAL_HOST


class LocalApi:
    def __init__(self) -> None:
        self.config = Config()
        self.worker: LedgerWorker | None = None
        self.access = AccessCache()

    def use(self, config: Config, worker: LedgerWorker | None, access: AccessCache) -> None:
        self.config, self.worker, self.access = config, worker, access

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if not is_local(flow.request.pretty_host):
            return
        method, path = flow.request.method, flow.request.path.split("?", 1)[0]
        if path == "/whoami" and method == "GET":
            flow.response = self._whoami(flow)
        elif path == "/api/status" and method == "GET":
            flow.response = self._unless_unauthorised(flow) or await self._status()
        elif (match := _RESUME.fullmatch(path)) and method == "POST":
            flow.response = self._unless_unauthorised(flow) or await self._resume(match[1])
        else:
            flow.response = _json(404, {"error": f"no {method} {path} on {LOCAL_HOST}"})

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

    def _unless_unauthorised(self, flow: http.HTTPFlow) -> http.Response | None:
        try:
            expected = self.access.records().admin_token_sha256
        except AccessUnavailable as e:
            return _json(503, {"error": str(e)})
        if not expected:
            return _json(
                403,
                {"error": "no admin token is set: run 'spendbrake admin-token' to make one"},
            )
        scheme, _, token = flow.request.headers.get("authorization", "").partition(" ")
        given = secret_hash(token.strip()) if scheme.lower() == "bearer" else ""
        if not given or not hmac.compare_digest(given, expected):
            return _json(
                401,
                {"error": "this needs the admin token: Authorization: Bearer TOKEN"},
                {"www-authenticate": 'Bearer realm="spendbrake"'},
            )
        return None

    async def _status(self) -> http.Response:
        if self.worker is None:
            return _json(503, {"error": "spendbrake has no ledger"})
        config, now = self.config, utc_now()
        document = await self.worker.run(lambda ledger: status_document(ledger, config, now))
        return _json(200, document)

    async def _resume(self, agent: str) -> http.Response:
        if self.worker is None:
            return _json(503, {"error": "spendbrake has no ledger"})

        def resume(ledger: Ledger) -> bool:
            return ledger.resume(agent, actor="admin-api")

        return _json(200, {"agent": agent, "resumed": await self.worker.run(resume)})


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> http.Response:
    return http.Response.make(
        status,
        json.dumps(body, indent=2) + "\n",
        {"content-type": "application/json", "cache-control": "no-store", **(headers or {})},
    )
