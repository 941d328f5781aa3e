"""The status page, its JSON API and ``/metrics`` as one small web app, whatever carries the
request: a flow to ``spendbrake.local`` through the proxy (``local_api``) or the plain status
port (``status_server``).

Every route reads other agents' spend or changes it, so every route needs the admin token
(``admin_auth``). Pages and metrics read the ledger on a read-only connection on a thread of
their own: a page's queries never run on the event loop that serves the agents, and never wait
for the proxy's writes (SQLite's WAL readers, PostgreSQL's read-only transactions).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from spendbrake import admin_auth, metrics, status_page
from spendbrake.config import Config
from spendbrake.ledger import Ledger, LedgerUnavailable
from spendbrake.ledger_reads import Reader, open_reader
from spendbrake.ledger_url import LedgerLocation
from spendbrake.mitm.access_cache import AccessCache, AccessUnavailable
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.status import status_document
from spendbrake.status_facts import RECENT, read_agent, read_metric_facts, read_overview, today
from spendbrake.status_reads import day_agents, recent_calls
from spendbrake.windows import utc_now

_RESUME = re.compile(r"/api/agents/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/resume")
_AGENT_PAGE = re.compile(r"/agents/([^/]+)")
_MAX_ROWS = 1000
_HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class WebRequest:
    method: str
    target: str  # path and query, as on the request line
    headers: Mapping[str, str]  # names in lower case
    body: bytes = b""
    secure: bool = False  # came over https

    @property
    def path(self) -> str:
        return urlsplit(self.target).path or "/"

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}


@dataclass(frozen=True)
class WebResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class BadRequest(ValueError):
    pass


def json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> WebResponse:
    text = json.dumps(body, indent=2) + "\n"
    return WebResponse(
        status,
        text.encode(),
        {"content-type": "application/json", "cache-control": "no-store", **(headers or {})},
    )


def _html(status: int, page: str, headers: Mapping[str, str] | None = None) -> WebResponse:
    headers = {"content-type": _HTML, "cache-control": "no-store", **(headers or {})}
    return WebResponse(status, page.encode(), headers)


def _redirect(location: str, cookie: str | None = None) -> WebResponse:
    headers = {"location": location, "cache-control": "no-store"}
    if cookie:
        headers["set-cookie"] = cookie
    return WebResponse(303, b"", headers)


def without_token(target: str) -> str:
    """The request target with any ``token`` parameter taken out (what is safe to log)."""
    parts = urlsplit(target)
    query = [(k, v) for k, vs in parse_qs(parts.query).items() for v in vs if k != "token"]
    return parts.path + (f"?{urlencode(query)}" if query else "")


class StatusReader:
    """A reader of the ledger (SQLite or PostgreSQL), used on one thread of its own."""

    def __init__(self, location: LedgerLocation | None) -> None:
        self.location = location
        self._ledger: Reader | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spendbrake-status")

    async def run[T](self, read: Callable[[Reader], T]) -> T:
        if self._closed:  # the proxy is stopping, or its configuration changed a moment ago
            raise LedgerUnavailable("spendbrake's status reader has stopped; try again")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._read, read)

    def _read[T](self, read: Callable[[Reader], T]) -> T:
        if self.location is None:  # the proxy has no ledger (yet)
            raise LedgerUnavailable("spendbrake has no ledger to read")
        if self._ledger is None:
            self._ledger = open_reader(self.location)  # opened on the thread that uses it
        return read(self._ledger)

    def close(self) -> None:
        self._closed = True

        def close_ledger() -> None:
            if self._ledger is not None:
                self._ledger.close()

        self._executor.submit(close_ledger)
        self._executor.shutdown(wait=True)


class StatusApp:
    def __init__(
        self,
        config: Config,
        worker: LedgerWorker | None,
        access: AccessCache,
        latency: metrics.AddedLatency,
        ledger: LedgerLocation | None,
    ) -> None:
        self.config, self.worker, self.access, self.latency = config, worker, access, latency
        self.reader = StatusReader(ledger)

    def close(self) -> None:
        self.reader.close()

    async def handle(self, request: WebRequest) -> WebResponse:
        try:
            return await self._route(request)
        except BadRequest as e:
            return json_response(400, {"error": str(e)})
        except (LedgerUnavailable, AccessUnavailable) as e:
            return json_response(503, {"error": str(e)})

    async def _route(self, request: WebRequest) -> WebResponse:
        method, path = request.method, request.path
        if method == "POST" and path == "/login":
            return self._login(request)
        if method == "GET" and path == "/logout":
            return _redirect("/", admin_auth.logout_cookie(secure=request.secure))
        if method == "GET" and "token" in request.query:
            return self._login_by_link(request)
        if denied := self._unless_admin(request):
            return denied
        config, now = self.config, utc_now()
        if method == "GET" and path == "/":
            overview = await self.reader.run(lambda ledger: read_overview(ledger, config, now))
            return _html(200, status_page.overview_page(overview))
        if method == "GET" and (match := _AGENT_PAGE.fullmatch(path)):
            agent = unquote(match[1])
            detail = await self.reader.run(lambda ledger: read_agent(ledger, config, now, agent))
            return _html(200 if detail.line else 404, status_page.agent_page(detail))
        if method == "GET" and path == "/api/status":
            document = await self.reader.run(lambda ledger: status_document(ledger, config, now))
            return json_response(200, document)
        if method == "GET" and path == "/api/calls":
            return json_response(200, await self._calls(request.query))
        if method == "GET" and path == "/api/events":
            return json_response(200, await self._events(request.query))
        if method == "GET" and path == "/metrics":
            text = await self.reader.run(
                lambda ledger: metrics.exposition(
                    read_metric_facts(ledger, config, now), self.latency
                )
            )
            return WebResponse(200, text, {"content-type": metrics.CONTENT_TYPE})
        if method == "POST" and (match := _RESUME.fullmatch(path)):
            return await self._resume(match[1])
        return json_response(404, {"error": f"no {method} {path} here"})

    # -- the admin token -----------------------------------------------------------------------

    def _expected_hash(self) -> str | None:
        return self.access.records().admin_token_sha256

    def _unless_admin(self, request: WebRequest) -> WebResponse | None:
        expected = self._expected_hash()
        wants_page = not request.path.startswith("/api/") and request.path != "/metrics"
        if not expected:
            message = "no admin token is set: run 'spendbrake admin-token' to make one"
            if wants_page:
                return _html(403, status_page.login_page(request.path, message))
            return json_response(403, {"error": message})
        if admin_auth.is_admin_token(admin_auth.presented_token(request.headers), expected):
            return None
        if wants_page:
            message = "This page shows every agent's spend: it needs the admin token."
            return _html(401, status_page.login_page(without_token(request.target), message))
        return json_response(
            401,
            {"error": "this needs the admin token: Authorization: Bearer TOKEN"},
            {"www-authenticate": 'Bearer realm="spendbrake"'},
        )

    def _login(self, request: WebRequest) -> WebResponse:
        form = {k: v[0] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        return self._log_in(form.get("token", ""), form.get("next", "/"), request.secure)

    def _login_by_link(self, request: WebRequest) -> WebResponse:
        return self._log_in(request.query["token"], without_token(request.target), request.secure)

    def _log_in(self, token: str, next_path: str, secure: bool) -> WebResponse:
        # Only a path of this site: a login link cannot send the browser anywhere else.
        if not next_path.startswith("/") or next_path.startswith("//"):
            next_path = "/"
        expected = self._expected_hash()
        if not expected:
            message = "no admin token is set: run 'spendbrake admin-token' to make one"
            return _html(403, status_page.login_page(next_path, message))
        if not admin_auth.is_admin_token(token.strip(), expected):
            return _html(401, status_page.login_page(next_path, "That is not the admin token."))
        return _redirect(next_path, admin_auth.login_cookie(token.strip(), secure=secure))

    # -- JSON ----------------------------------------------------------------------------------

    async def _calls(self, query: Mapping[str, str]) -> dict[str, Any]:
        config, now = self.config, utc_now()
        day = _day(query.get("day")) or today(now, config.timezone).day
        agent, limit = query.get("agent"), _limit(query.get("limit"), 100)

        def read(ledger: Reader) -> list[dict[str, Any]]:
            with ledger.snapshot() as conn:
                agents = [agent] if agent else day_agents(conn, day)
                return [row.as_json() for row in recent_calls(conn, day, agents, limit=limit)]

        calls = await self.reader.run(read)
        return {"day": day, "timezone": config.timezone.key, "agent": agent, "calls": calls}

    async def _events(self, query: Mapping[str, str]) -> dict[str, Any]:
        agent, limit = query.get("agent"), _limit(query.get("limit"), RECENT * 5)
        events = await self.reader.run(lambda ledger: ledger.events(agent, limit))
        return {
            "agent": agent,
            "events": [
                {"at": e.at.isoformat(), "agent": e.agent, "kind": e.kind, "detail": e.detail,
                 "actor": e.actor}
                for e in events
            ],
        }  # fmt: skip

    async def _resume(self, agent: str) -> WebResponse:
        if self.worker is None:
            return json_response(503, {"error": "spendbrake has no ledger"})

        def resume(ledger: Ledger) -> bool:
            return ledger.resume(agent, actor="admin-api")

        return json_response(200, {"agent": agent, "resumed": await self.worker.run(resume)})


def _day(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise BadRequest(f"day must be a date like 2026-03-14, not {text!r}") from None


def _limit(text: str | None, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= _MAX_ROWS:
        raise BadRequest(f"limit must be a whole number from 1 to {_MAX_ROWS}, not {text!r}")
    return int(text)
