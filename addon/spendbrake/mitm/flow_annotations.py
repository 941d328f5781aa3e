"""What a person inspecting traffic sees of each LLM call: in mitmweb and mitmdump, and the log.

Every metered flow gets a comment (``research-bot · gpt-4o · 1,234 in / 567 out · $0.0123 ·
remaining $4.21``); a refused flow is marked; ``flow.metadata["spendbrake_call"]`` holds the
whole record as plain JSON values, so it survives a saved flow file. Each call also logs one
concise line. No prompt, completion or key appears in any of them.

When a flow ends, the live ``FlowState`` leaves ``flow.metadata``: mitmproxy deep-copies
metadata (saving, exporting, duplicating a flow) and writes it with tnetstring, which takes plain
values only; both fail on it.
"""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from spendbrake.ledger import CallIntent, DayTotals, Settlement
from spendbrake.mitm.call_log import call_log
from spendbrake.mitm.state import STATE_KEY, FlowState, HeldCall
from spendbrake.money import format_usd, format_usd_exact
from spendbrake.refusals import Refusal

RECORD_KEY = "spendbrake_call"
REFUSED_MARK = ":no_entry:"  # mitmweb shows ⛔; the console shows the shortcode's emoji too
_SEP = " · "


def begin(flow: http.HTTPFlow, intent: CallIntent) -> None:
    """What is known of the call once it is read (before any hold)."""
    record = _record(flow)
    record.update(
        agent=intent.agent,
        session=intent.session,
        provider=intent.provider,
        endpoint=intent.endpoint,
        requested_model=intent.requested_model,
        forwarded_model=intent.forwarded_model,
        stream=intent.stream,
    )


def refused(flow: http.HTTPFlow, refusal: Refusal, agent: str | None) -> None:
    record = _record(flow)
    if agent and "agent" not in record:
        record["agent"] = agent
    record.update(
        outcome="refused",
        refusal={"code": refusal.code, "status": refusal.status, "message": refusal.message},
    )
    flow.marked = REFUSED_MARK
    who = [_clean(str(record.get("agent") or "unidentified")), *_model(record)]
    flow.comment = _SEP.join([*who, f"refused: {refusal.code} ({refusal.status})"])
    call_log.info("spendbrake: %s refused %d %s", " ".join(who), refusal.status, refusal.code)


def settled(
    flow: http.HTTPFlow, call: HeldCall, settlement: Settlement, totals: DayTotals | None
) -> None:
    """After the settlement: tokens, cost and what the agent's day has left."""
    record = _record(flow)
    begin(flow, call.intent)
    tokens = settlement.tokens
    # The ledger could not take the settlement: the hold stands, and the day as it was then.
    remaining = totals.remaining_nanos if totals is not None else call.remaining_nanos
    record.update(
        call_id=call.call_id,
        held_usd=format_usd_exact(call.held_nanos),
        cost_usd=format_usd_exact(settlement.actual_nanos),
        remaining_usd=format_usd_exact(remaining),
        tokens={
            "input": tokens.input_tokens,
            "cached_input": tokens.cached_input_tokens,
            "cache_write": tokens.cache_write_tokens,
            "output": tokens.output_tokens,
            "reasoning": tokens.reasoning_tokens,
        },
        estimated_tokens={
            "input": call.intent.estimated_input_tokens,
            "output": call.intent.estimated_output_tokens,
        },
        outcome=settlement.outcome,
        reason=settlement.reason,
    )
    agent = _clean(call.intent.agent)
    model = _model(record)
    counts = f"{tokens.input_tokens:,} in / {tokens.output_tokens:,} out"
    cost, left = format_usd(settlement.actual_nanos), format_usd(remaining)
    outcome = [] if settlement.outcome == "ok" else [settlement.outcome]
    flow.comment = _SEP.join([agent, *model, counts, cost, f"remaining {left}", *outcome])
    call_log.info(
        "spendbrake: %s %s %s (remaining %s)%s",
        " ".join([agent, *model]),
        f"{tokens.input_tokens:,} in/{tokens.output_tokens:,} out",
        cost,
        left,
        f" {settlement.outcome}" if outcome else "",
    )


def finish(flow: http.HTTPFlow) -> None:
    """The flow is over: its live state goes, the plain record stays."""
    if isinstance(flow.metadata.get(STATE_KEY), FlowState):
        del flow.metadata[STATE_KEY]


def _record(flow: http.HTTPFlow) -> dict[str, Any]:
    record = flow.metadata.get(RECORD_KEY)
    if not isinstance(record, dict):
        record = flow.metadata[RECORD_KEY] = {}
    return record


def _model(record: dict[str, Any]) -> list[str]:
    asked, sent = record.get("requested_model") or "", record.get("forwarded_model") or ""
    if not (asked or sent):
        return []
    if asked and sent and asked != sent:
        return [f"{_clean(asked)} → {_clean(sent)}"]
    return [_clean(sent or asked)]


def _clean(text: str, limit: int = 64) -> str:
    """Client input (agent and model names) kept to one short printable line."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")
