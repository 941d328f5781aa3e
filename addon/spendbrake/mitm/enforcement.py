"""Holds each metered call's worst case before it goes out, and settles its actual cost after.

The glue between a flow and the pure modules (providers, governor, ledger). It fails closed:
mitmproxy forwards a request whose addon raised, so every admission step runs inside one
guard that turns any surprise into a refusal.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path

from mitmproxy import ctx, exceptions, http
from mitmproxy.connection import ConnectionState

from spendbrake import governor, refusals
from spendbrake.brakes import MAX_WAIT_S, Brakes
from spendbrake.config import (
    AgentPolicy,
    Config,
    ConfigError,
    default_ledger_path,
    load_config,
    resolve_config_path,
    resolve_ledger_path,
)
from spendbrake.leases import say_recovered
from spendbrake.ledger import (
    CallIntent,
    DayTotals,
    HoldBraked,
    HoldGranted,
    HoldRefused,
    Ledger,
    LedgerUnavailable,
    Limits,
    Settlement,
    TokenCounts,
)
from spendbrake.ledger_url import open_ledger
from spendbrake.mitm import flow_annotations
from spendbrake.mitm.alerting import Alerting
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.mitm.mitmproxy_options import keep_long_silent_calls, refuse_request_streaming
from spendbrake.mitm.request_bodies import RequestBodies
from spendbrake.mitm.settlement import at_the_hold, from_response, from_stream
from spendbrake.mitm.state import HeldCall, flow_state
from spendbrake.money import format_usd_exact
from spendbrake.offline_allowance import OfflineAllowance, OfflineJournal
from spendbrake.postgres_ledger import POOL_SIZE, PostgresLedger
from spendbrake.pricing import Pricer, UnknownModel
from spendbrake.pricing import warm_up as warm_up_prices
from spendbrake.providers import (
    OPENAI,
    Provider,
    Route,
    RouteKind,
    classify_route,
    provider_for_host,
)
from spendbrake.providers.base import (
    CallRequest,
    Rewrite,
    UnreadableRequest,
)
from spendbrake.quota import downgraded_model
from spendbrake.refusals import Refusal
from spendbrake.sqlite_ledger import SQLiteLedger
from spendbrake.tokens import TokenEstimator
from spendbrake.windows import current_day_window, month_resets_at, utc_now

log = logging.getLogger(__name__)

# Tokenizing ~100 kB takes milliseconds; beyond that it would stall every other agent's flow.
_TOKENIZE_ON_LOOP_MAX_CHARS = 100_000


class Enforcement:
    def __init__(self) -> None:
        self.config = Config()
        self.pricer = Pricer()
        self.worker: LedgerWorker | None = None
        self.unavailable: str | None = "spendbrake is not configured yet"
        self.estimator = TokenEstimator()
        self.bodies = RequestBodies()
        self._downgrades_recorded: set[tuple[str, str]] = set()  # (agent, month): one event each
        # Per agent, what the configuration says: worked out on its first call, not on each.
        self._policies: dict[str, AgentPolicy] = {}
        # Told of settlements and refusals; inert until the facade hands it a ledger.
        self.alerts = Alerting()
        # Opt-in ([fleet] offline_allowance): calls held locally while PostgreSQL is away. They
        # get negative call ids (the ledger's are positive), mapped to their journal entries.
        self.allowance: OfflineAllowance | None = None
        self._offline_calls: dict[int, str] = {}
        self._offline_ids = itertools.count(-1, -1)

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self, loader: object) -> None:
        add = loader.add_option  # type: ignore[attr-defined]
        add(
            "spendbrake_config",
            str | None,
            None,
            "spendbrake configuration file (TOML). Default: $SPENDBRAKE_CONFIG, else the "
            "embedded defaults ($5.00 a day per agent, UTC days).",
        )
        add(
            "spendbrake_ledger",
            str | None,
            None,
            "spendbrake ledger: a SQLite file, or postgresql://HOST/DB for a ledger shared by a "
            "fleet of proxies. Default: $SPENDBRAKE_LEDGER, else the config's 'ledger', else "
            "~/.local/share/spendbrake/ledger.db.",
        )
        add(
            "spendbrake_block_all",
            bool,
            False,
            "Refuse every metered LLM call (402 llm_calls_blocked), e.g. for a test suite that "
            "must never reach a real provider ('spendbrake run --block-all').",
        )

    def configure(self, updated: set[str]) -> None:
        refuse_request_streaming(updated)
        if not {"spendbrake_config", "spendbrake_ledger"} & updated and self.worker:
            return
        try:
            config = load_config(resolve_config_path(ctx.options.spendbrake_config))
            path = resolve_ledger_path(ctx.options.spendbrake_ledger, config)
            ledger = open_ledger(path)
            # SQLite runs short writes on the loop; PostgreSQL is a network away: never inline.
            inline = SQLiteLedger(path) if isinstance(path, Path) else None
            recovered = ledger.recover_orphaned_holds()
            ledger.keep_lease()  # the other proxies must not take this one's holds for orphans
        except (ConfigError, LedgerUnavailable) as e:
            # Refuse every metered call rather than let one through unmetered.
            self.unavailable = str(e)
            raise exceptions.OptionsError(str(e)) from None
        say_recovered(recovered)
        if self.worker:
            self.worker.close()
        self.allowance = self._offline_allowance(config, ledger)
        journal = self.allowance.journal if self.allowance else None
        threads = 1 if inline is not None else POOL_SIZE
        self.config = config
        self.worker = LedgerWorker(ledger, inline=inline, threads=threads, journal=journal)
        self._policies.clear()
        self.pricer = Pricer(config.prices)
        self.unavailable = None
        log.info("spendbrake: enforcing with ledger %s", ledger.path)

    @staticmethod
    def _offline_allowance(config: Config, ledger: Ledger) -> OfflineAllowance | None:
        share = config.fleet.offline_share
        if share is None:
            return None
        if not isinstance(ledger, PostgresLedger):
            log.warning("spendbrake: [fleet] offline_allowance applies to a PostgreSQL ledger only")
            return None
        path = config.fleet.journal_path(default_ledger_path().parent)
        journal = OfflineJournal(path, ledger.owner)
        if ended := journal.settle_holds_of_ended("crashed"):
            log.warning("spendbrake: %d offline hold(s) of a proxy that ended, settled", ended)
        log.info("spendbrake: offline allowance %s of each agent's room, journal %s", share, path)
        return OfflineAllowance(share, journal)

    def running(self) -> None:
        keep_long_silent_calls()
        # Load the price snapshot and the tokenizer off the loop, before the first agent waits.
        asyncio.get_running_loop().run_in_executor(None, self._warm_up)

    def _warm_up(self) -> None:
        warm_up_prices()
        self.estimator.warm_up()

    def done(self) -> None:
        if self.worker:
            self.worker.close()
            self.worker = None
        self.bodies.close()
        self.unavailable = "spendbrake has stopped"

    # -- admission -----------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """A call's body is read and held for before it goes out: if another addon asked
        mitmproxy to stream it on (which would send it unread), that is undone."""
        if flow.request.stream and provider_of(flow) is not None:
            log.warning(
                "spendbrake: another addon set request.stream on a call to %s; it is read and "
                "metered instead",
                flow.request.pretty_host,
            )
            flow.request.stream = False

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if flow.request.stream and provider_of(flow) is not None:
            # Streamed on after the headers (by an addon's late change): the body went out
            # unread. Cutting the call is all that is left; its answer never reaches the agent.
            log.error(
                "spendbrake: a call to %s was streamed to the provider before it could be "
                "metered; the call is cut",
                flow.request.pretty_host,
            )
            flow.kill()
            return
        provider: Provider | None = None
        try:
            provider = provider_of(flow)
            if provider is None:
                return  # not an LLM host: none of spendbrake's business
            refusal = await self._admit(flow, provider)
        except Exception as e:
            log.exception("spendbrake: could not check a call; refusing it (fail closed)")
            refusal = Refusal(
                "internal_error",
                f"spendbrake could not check this call ({type(e).__name__}: {e}), so it was not "
                "forwarded. See the proxy's log.",
            )
        if refusal is not None:
            self._answer(flow, provider or OPENAI, refusal)

    async def _admit(self, flow: http.HTTPFlow, provider: Provider) -> Refusal | None:
        state = flow_state(flow)
        if state is None or state.identity is None:
            reason = state.identity_error if state else "the agent could not be identified"
            return Refusal("unauthenticated_agent", f"spendbrake: {reason}")
        route = classify_route(provider, flow.request.method, flow.request.path)
        upgrade = _upgrade_asked(flow.request)
        if upgrade:
            # A WebSocket session (OpenAI's Realtime API, Gemini Live) is billed as it goes, for
            # as long as it lasts: no hold can bound it, whatever the route.
            route = Route(RouteKind.UNKNOWN)
        if route.kind is RouteKind.FREE:
            return None
        if route.kind is RouteKind.UNKNOWN and self.config.allows_unmetered(
            flow.request.method, flow.request.path
        ):
            return None  # the operator vouches that this route costs nothing here
        if route.kind is RouteKind.UNKNOWN or route.api is None:
            route_name = f"{flow.request.method} {flow.request.path.split('?')[0]}"
            if upgrade:
                route_name += f" (an upgrade to {upgrade})"
            return Refusal(
                "unmetered_route",
                f"spendbrake does not meter {route_name} on {flow.request.pretty_host}, "
                "so it does not let it through. If it costs nothing, list it in the "
                "configuration's allow_unmetered_routes.",
            )
        if self.unavailable or self.worker is None:
            return Refusal(
                "ledger_unavailable", f"spendbrake cannot meter calls: {self.unavailable}"
            )

        api = route.api
        now = utc_now()
        window = current_day_window(now, self.config.timezone)
        identity = state.identity
        agent = identity.agent

        asked_model = ""  # the model the client asked for, whatever it is rewritten to

        def intent(
            request: CallRequest | None = None, estimate: governor.Estimate | None = None
        ) -> CallIntent:
            made = CallIntent(
                agent=agent,
                session=identity.session,
                provider=provider.id,
                endpoint=flow.request.path.split("?", 1)[0],  # never the query: keys travel there
                requested_model=asked_model or (request.model if request else ""),
                forwarded_model=request.model if request else "",
                stream=request.stream if request else False,
                day=window.day,
                started_at=now,
                estimated_input_tokens=estimate.prompt_tokens if estimate else 0,
                estimated_output_tokens=estimate.output_tokens if estimate else 0,
                fingerprint=request.fingerprint if request else "",
            )
            flow_annotations.begin(flow, made)
            return made

        if ctx.options.spendbrake_block_all:
            blocked = Refusal(
                "llm_calls_blocked",
                f"spendbrake: this run allows no LLM calls (agent '{agent}'); the proxy was "
                "started with --block-all, so no call reaches the provider",
            )
            return await self._refuse_recorded(intent(), blocked)
        try:
            body, path = flow.request.content or b"", flow.request.path
            client_left = partial(_client_left, flow)
            request = await self.bodies.parse(api, body, path, client_left)
        except (UnreadableRequest, ValueError) as e:
            return await self._refuse_recorded(
                intent(), Refusal("unreadable_request", f"spendbrake: {e}")
            )
        asked_model = request.model
        if unbounded := [
            t for t in request.server_tools if t not in self.config.allow_server_tools
        ]:
            return await self._refuse_recorded(
                intent(request), refusals.unmetered_tool(unbounded, provider.id)
            )
        policy = self._policy(agent)
        limit, limits = policy.daily_nanos, policy.limits
        original = (body, path)
        try:
            if cheaper := await self._downgrade_to(agent, request, window.day[:7]):
                body, path, request = await self.bodies.rewritten(
                    api, body, path, Rewrite(model=cheaper), client_left
                )
            estimate = await self._estimate(request, provider, now)
            if (minimum := policy.cap_output_minimum) is not None:
                room = await self.worker.run(
                    lambda ledger: ledger.room_nanos(intent(request, estimate), limit, limits)
                )
                if estimate.cost_nanos > room and (
                    capped := governor.affordable_max_output(
                        request,
                        estimate,
                        room,
                        max(minimum, request.min_output),
                        provider_id=provider.id,
                        pricer=self.pricer,
                    )
                ):
                    body, path, request = await self.bodies.rewritten(
                        api, body, path, Rewrite(max_output=capped), client_left
                    )
                    estimate = await self._estimate(request, provider, now)
        except UnknownModel as e:
            message = (
                f"spendbrake: {e}, so the cost of this call cannot be bounded. Give it a price "
                'in the configuration\'s [prices."MODEL"] (or a fallback [prices."*"]), or set '
                "max_tokens where only its maximum output is unknown."
            )
            return await self._refuse_recorded(intent(request), Refusal("unknown_model", message))
        except LedgerUnavailable as e:
            # The token bucket (downgrade) or the room left (cap_output) could not be read:
            # nothing can be recorded either, so the refusal is not.
            return _ledger_unavailable(e, False, agent)

        held_intent = intent(request, estimate)
        # Everything that could still fail is done before the hold, so no hold is ever left
        # behind by a call that was not sent.
        rewritten = (body, path) != original
        if request.wants_usage_injection:
            body = await self.bodies.with_usage_requested(api, body, client_left)
            rewritten = True
        brakes = policy.brakes
        try:
            result, held_intent = await self._hold(held_intent, estimate.cost_nanos, limit,
                                                   limits, brakes)  # fmt: skip
        except LedgerUnavailable as e:
            offline = self._hold_offline(held_intent, estimate.cost_nanos, limits)
            if offline is None:
                return _ledger_unavailable(e, self.allowance is not None, agent)
            result = offline
        if isinstance(result, HoldBraked | HoldRefused):
            self.alerts.refused(held_intent, result)
        if isinstance(result, HoldBraked):
            log.warning("spendbrake: %s stopped a call of %s: %s", result.brake.code, agent,
                        result.brake.detail)  # fmt: skip
            return refusals.braked(result.brake, agent)
        if isinstance(result, HoldRefused):  # logged with the call's line (flow_annotations)
            return refusals.window_exceeded(
                result,
                agent=agent,
                day_resets_at=window.resets_at,
                month_resets_at=month_resets_at(now, self.config.timezone),
                now=now,
            )

        if rewritten:
            flow.request.content = body
        if path != flow.request.path:
            flow.request.path = path
        # The meter reads usage from plain bytes: a stream cannot be decompressed on the fly, and
        # a body need not be decoded twice. (Loopback and provider links are not the bottleneck.)
        flow.request.headers["accept-encoding"] = "identity"
        state.call = HeldCall(
            call_id=result.call_id,
            intent=held_intent,
            provider=provider,
            api=api,
            held_nanos=result.held_nanos,
            prompt_tokens=estimate.prompt_tokens,
            max_output_tokens=estimate.output_tokens,
            configured_limit=limit,
            remaining_nanos=result.totals.remaining_nanos,
            strip_usage_chunk=request.wants_usage_injection,
            reasoning=request.reasoning,
        )
        return None

    async def _hold(
        self, intent: CallIntent, nanos: int, limit: int, limits: Limits, brakes: Brakes
    ) -> tuple[HoldGranted | HoldRefused | HoldBraked, CallIntent]:
        """The hold; in throttle mode, a call a rate or backoff brake stops waits (without
        blocking anyone else) and tries again, up to the longest wait a client would accept."""
        assert self.worker is not None
        waited = 0
        while True:
            result = await self.worker.run(partial(_hold, intent, nanos, limit, limits, brakes))
            if self.allowance is not None and isinstance(result, HoldGranted | HoldRefused):
                # The room the ledger reports last is what an outage's allowance is cut from.
                room = result.totals.remaining_nanos
                self.allowance.saw(intent.agent, intent.day, room)
            if not (isinstance(result, HoldBraked) and result.call_id is None):
                return result, intent
            brake = result.brake
            wait = brake.retry_after_s or 1
            if waited == 0:
                await self._record(intent.agent, "throttled", f"{brake.code}: {brake.detail}")
            if waited + wait > MAX_WAIT_S:
                # As long as any client would wait: refused now, as without throttling.
                call_id = await self._refuse_as(intent, brake.code)
                return HoldBraked(call_id=call_id, brake=brake), intent
            await asyncio.sleep(wait)
            waited += wait
            now = utc_now()  # a wait may cross a local midnight: the call joins the new day
            intent = replace(
                intent, started_at=now, day=current_day_window(now, self.config.timezone).day
            )

    def _hold_offline(self, intent: CallIntent, nanos: int, limits: Limits) -> HoldGranted | None:
        """The ledger is unreachable: hold on the offline allowance if there is one and the
        call fits in it (journalled before it goes out)."""
        if self.allowance is None:
            return None
        held = self.allowance.hold(intent, limits.group, nanos)
        if held is None:
            return None
        local_id, left = held
        call_id = next(self._offline_ids)
        self._offline_calls[call_id] = local_id
        log.warning(
            "spendbrake: the ledger is unreachable; %s's call goes out on the offline allowance",
            intent.agent,
        )
        totals = DayTotals(intent.agent, intent.day, 0, nanos, left + nanos, 1, 0)
        return HoldGranted(call_id=call_id, held_nanos=nanos, totals=totals)

    def _policy(self, agent: str) -> AgentPolicy:
        policy = self._policies.get(agent)
        if policy is None:
            if len(self._policies) > 10_000:  # agent names are client input: stay bounded
                self._policies.clear()
            policy = self._policies[agent] = self.config.policy(agent)
        return policy

    async def _record(self, agent: str, kind: str, detail: str) -> None:
        assert self.worker is not None
        await self.worker.run(lambda ledger: ledger.record_event(agent, kind, detail))

    async def _refuse_as(self, intent: CallIntent, code: str) -> int:
        assert self.worker is not None
        return await self.worker.run(lambda ledger: ledger.refuse(intent, code))

    async def _downgrade_to(self, agent: str, request: CallRequest, month: str) -> str | None:
        """The cheaper model this call goes to while the agent's token bucket runs low."""
        quota = self._policy(agent).quota
        if request.model not in quota.downgrade:
            return None
        assert self.worker is not None
        used, set_now = await self.worker.run(
            lambda ledger: ledger.token_bucket(agent, month, group=quota.group)
        )
        if set_now is not None:  # 'limit set --monthly-tokens' wins over the file
            quota = replace(quota, monthly_tokens=set_now or None)
        if quota.monthly_tokens is None:
            return None
        cheaper = downgraded_model(request.model, used, quota)
        if cheaper and (agent, month) not in self._downgrades_recorded:
            self._downgrades_recorded.add((agent, month))
            detail = (
                f"{request.model} -> {cheaper}: {used:,} of {quota.monthly_tokens:,} monthly "
                "tokens used"
            )
            await self.worker.run(lambda ledger: ledger.record_event(agent, "downgraded", detail))
            self.alerts.downgraded(agent, month, detail)
        return cheaper

    async def _estimate(
        self, request: CallRequest, provider: Provider, now: datetime
    ) -> governor.Estimate:
        def estimate() -> governor.Estimate:
            return governor.estimate_call(
                request, self.estimator, provider_id=provider.id, at=now, pricer=self.pricer
            )

        large = sum(len(text) for text in request.prompt_texts) > _TOKENIZE_ON_LOOP_MAX_CHARS
        if large or not self.estimator.is_loaded(request.model):
            # A big prompt, or a tokenizer still loading: either would stall every other flow.
            return await asyncio.to_thread(estimate)
        return estimate()

    async def _refuse_recorded(self, intent: CallIntent, refusal: Refusal) -> Refusal:
        """Count a refusal in the ledger (it shows as blocked); a ledger fault still refuses."""
        assert self.worker is not None
        try:
            await self.worker.run(lambda ledger: ledger.refuse(intent, refusal.code))
        except LedgerUnavailable:
            log.exception("spendbrake: could not record a refusal")
        return refusal

    def _answer(self, flow: http.HTTPFlow, provider: Provider, refusal: Refusal) -> None:
        body = provider.error_body(refusal.status, refusal.code, refusal.message)
        headers = refusal.headers()
        state = flow_state(flow)
        if state and state.identity:
            headers["x-spendbrake-agent"] = state.identity.agent
        flow.response = http.Response.make(refusal.status, json.dumps(body), headers)
        flow_annotations.refused(flow, refusal, headers.get("x-spendbrake-agent"))

    # -- metering ------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        call = state.call if state else None
        if call is None or state is None or state.identity is None or flow.response is None:
            return
        headers = flow.response.headers
        headers["x-spendbrake-agent"] = state.identity.agent
        if call.intent.forwarded_model != call.intent.requested_model:
            headers["x-spendbrake-model"] = call.intent.forwarded_model
        is_sse = headers.get("content-type", "").startswith("text/event-stream")
        # Gemini streams a JSON array when the client does not ask for SSE: metered as it passes.
        streamed_json = call.intent.stream and 200 <= flow.response.status_code < 300
        if not (is_sse or streamed_json):
            return  # buffered: settled and annotated in `response`, when the usage is known
        call.meter = call.api.stream_meter(strip_injected_usage=call.strip_usage_chunk)
        flow.response.stream = _guarded(call)
        if call.strip_usage_chunk:
            headers.pop("content-length", None)  # the body shrinks by the dropped event
        headers["x-spendbrake-held-usd"] = format_usd_exact(call.held_nanos)
        headers["x-spendbrake-remaining-usd"] = format_usd_exact(call.remaining_nanos)

    async def response(self, flow: http.HTTPFlow) -> None:
        try:
            state = flow_state(flow)
            call = state.call if state else None
            if call is None or call.settled or flow.response is None:
                return
            settled = from_response(call, flow.response, self.pricer)
            totals = await self._settle(call, settled)
            flow_annotations.settled(flow, call, settled, totals)
            if call.meter is None and totals is not None:
                flow.response.headers["x-spendbrake-cost-usd"] = format_usd_exact(
                    settled.actual_nanos
                )
                flow.response.headers["x-spendbrake-remaining-usd"] = format_usd_exact(
                    totals.remaining_nanos
                )
        finally:
            # The flow is over: its live state leaves flow.metadata (see flow_annotations).
            flow_annotations.finish(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        try:
            state = flow_state(flow)
            call = state.call if state else None
            if call is None or call.settled:
                return
            message = flow.error.msg if flow.error else "unknown error"
            if call.meter is not None and not call.meter_failed:
                settlement = from_stream(call, "interrupted", message, self.pricer)
            elif flow.response is None and flow.server_conn.timestamp_tcp_setup is None:
                # Never connected to the provider: nothing was sent, nothing can be billed. Whose
                # fault matters: only the provider's counts toward the backoff brake.
                gave_up = flow.client_conn.timestamp_end is not None or "client" in message.lower()
                outcome = "client_disconnected" if gave_up else "upstream_unreachable"
                settlement = Settlement(0, TokenCounts(), outcome, message)
            else:
                settlement = at_the_hold(call, "interrupted", message)
            totals = await self._settle(call, settlement)
            flow_annotations.settled(flow, call, settlement, totals)
        finally:
            # The flow is over: its live state leaves flow.metadata (see flow_annotations).
            flow_annotations.finish(flow)

    async def _settle(self, call: HeldCall, settlement: Settlement) -> DayTotals | None:
        call.settled = True
        if (local_id := self._offline_calls.pop(call.call_id, None)) is not None:
            if self.allowance is None:  # turned off by a new config meanwhile
                log.error("spendbrake: offline call %s settled after the allowance ended", local_id)
            else:
                self.allowance.journal.settle(local_id, settlement)  # replayed by the worker
            return None
        if self.worker is None:
            log.error("spendbrake: call %d finished after shutdown; its hold stays", call.call_id)
            return None

        def settle(ledger: Ledger) -> DayTotals:
            return ledger.settle(call.call_id, settlement, call.configured_limit)

        try:
            totals = await self.worker.run(settle)
        except LedgerUnavailable as e:
            # Meanwhile the hold counts as spent; the settlement is written once the ledger
            # works again (or the hold is settled at its amount if this proxy stops first).
            log.warning(
                "spendbrake: could not settle call %d (%s); its hold stands until the ledger "
                "takes the settlement",
                call.call_id,
                e,
            )
            self.worker.retry_later(settle)
            return None
        self.alerts.settled(call.intent, settlement, totals, self._policy(call.intent.agent).limits)
        return totals


def _ledger_unavailable(error: LedgerUnavailable, offline: bool, agent: str) -> Refusal:
    if offline:
        message = (
            f"spendbrake cannot write its ledger ({error}), and this call does not fit in what "
            f"is left of the offline allowance of agent '{agent}' ([fleet] offline_allowance)"
        )
    else:
        message = f"spendbrake cannot write its ledger: {error}"
    return Refusal("ledger_unavailable", message)


def _hold(
    intent: CallIntent, nanos: int, limit: int, limits: Limits, brakes: Brakes, ledger: Ledger
) -> HoldGranted | HoldRefused | HoldBraked:
    return ledger.hold(intent, nanos, limit, limits, brakes)


def _client_left(flow: http.HTTPFlow) -> bool:
    """The agent has closed its side (it timed out or gave up): nobody waits for this call."""
    return not flow.client_conn.state & ConnectionState.CAN_READ


def provider_of(flow: http.HTTPFlow) -> Provider | None:
    """The provider by the Host header or by the intercepted connection the request came on:
    only LLM hosts are intercepted, so a request in their tunnel that names another host must
    still be metered, not forwarded unmetered."""
    server_host = flow.server_conn.address[0] if flow.server_conn.address else None
    for name in (flow.request.pretty_host, flow.client_conn.sni, server_host):
        if name and (provider := provider_for_host(name)):
            return provider
    return None


def _upgrade_asked(request: http.Request) -> str:
    """The protocol a request asks to switch to (``websocket``), or ``""``."""
    upgrade: str = request.headers.get("upgrade", "")
    return upgrade.strip().lower()


def _guarded(call: HeldCall) -> Callable[[bytes], bytes | list[bytes]]:
    """The stream callable: the meter, except that a meter fault never breaks the stream."""
    meter = call.meter
    assert meter is not None

    def stream(chunk: bytes) -> bytes | list[bytes]:
        if call.meter_failed:
            return chunk
        try:
            return meter(chunk)
        except Exception:
            log.exception("spendbrake: stream meter failed; the call is settled at its hold")
            call.meter_failed = True
            return chunk

    return stream
