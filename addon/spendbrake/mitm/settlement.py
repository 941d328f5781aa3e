"""What a finished call costs: from its response's usage, its stream's, or what it relayed.

The rules of settlement, apart from the hooks that apply them: a provider's error without
usage bills nothing; a stream cut short is charged the usage seen and at least the text it
relayed (never $0, never more output than asked), or all the output it was held for when the
model may have reasoned unseen; a price that cannot be found settles at the hold.
"""

from __future__ import annotations

import json
from dataclasses import replace

from mitmproxy import http

from spendbrake import governor
from spendbrake.ledger import Settlement, TokenCounts
from spendbrake.mitm.state import HeldCall
from spendbrake.pricing import Pricer, UnknownModel
from spendbrake.providers.base import MeteredUsage, StreamMeter


def from_response(call: HeldCall, response: http.Response, pricer: Pricer) -> Settlement:
    outcome = "ok" if response.status_code < 400 else "upstream_error"
    if call.meter is not None and not call.meter_failed:
        return from_stream(call, outcome, "", pricer)
    usage = None
    if call.meter is None:
        try:
            usage = call.api.usage_from_json(json.loads(response.content or b""))
        except (ValueError, RecursionError):  # not JSON, or nested past what json can read
            usage = None
    if usage is not None:
        return priced(call, usage, outcome, "", pricer)
    if response.status_code >= 400 and call.meter is None:
        # The provider answered with an error and no usage: it bills nothing for it.
        return Settlement(0, TokenCounts(), "upstream_error", f"HTTP {response.status_code}")
    return at_the_hold(call, "no_usage", "no usage reported: settled at the hold")


def at_the_hold(call: HeldCall, outcome: str, reason: str) -> Settlement:
    """The hold, in money and in the tokens estimated for it: a call whose usage is unknown
    counts in the token windows as it was held."""
    tokens = TokenCounts(input_tokens=call.prompt_tokens, output_tokens=call.max_output_tokens)
    return Settlement(call.held_nanos, tokens, outcome, reason)


def from_stream(call: HeldCall, outcome: str, reason: str, pricer: Pricer) -> Settlement:
    """A stream's cost: its final usage, or, when it was cut short, the usage seen so far
    with at least the text relayed as output (never $0, never more output than asked). A model
    that may have reasoned without showing it is charged all the output it was held for: what
    it thought before the cut is billed, and nothing in the stream says how much."""
    meter = call.meter
    assert meter is not None
    if meter.usage is not None and meter.usage_is_final:
        return priced(call, meter.usage, outcome, reason, pricer)
    seen = meter.usage.tokens if meter.usage else TokenCounts(input_tokens=call.prompt_tokens)
    if _may_have_reasoned_unseen(call, meter, pricer):
        output = call.max_output_tokens
        why = (
            "the stream ended before its usage, and the model may have reasoned unseen: "
            "the usage seen and all the output held for"
        )
    else:
        output = min(max(seen.output_tokens, meter.relayed_text_bytes), call.max_output_tokens)
        why = "the stream ended before its usage: the usage seen and the text relayed"
    usage = MeteredUsage(
        tokens=replace(seen, output_tokens=output),
        model=meter.usage.model if meter.usage else None,
        service_tier=meter.usage.service_tier if meter.usage else None,
    )
    return priced(call, usage, "cut_short", f"{why}; {reason}" if reason else why, pricer)


def _may_have_reasoned_unseen(call: HeldCall, meter: StreamMeter, pricer: Pricer) -> bool:
    if meter.usage_counts_reasoning or call.reasoning is False:
        return False
    if call.reasoning:
        return True
    return pricer.reasons_unseen(call.intent.forwarded_model, call.provider.id)


def priced(
    call: HeldCall, usage: MeteredUsage, outcome: str, reason: str, pricer: Pricer
) -> Settlement:
    try:
        actual = governor.actual_cost(
            usage,
            call.intent.forwarded_model,
            provider_id=call.provider.id,
            at=call.intent.started_at,
            pricer=pricer,
        )
    except UnknownModel as e:
        return Settlement(call.held_nanos, usage.tokens, outcome, f"{e}: settled at the hold")
    return Settlement(actual, usage.tokens, outcome, reason)
