"""The one typed object the addons share per flow, in ``flow.metadata["spendbrake"]``."""

from __future__ import annotations

from dataclasses import dataclass

from mitmproxy import http

from spendbrake.attribution import Identity
from spendbrake.ledger import CallIntent
from spendbrake.providers import Provider
from spendbrake.providers.base import Api, StreamMeter

STATE_KEY = "spendbrake"


@dataclass
class HeldCall:
    """A call that was admitted: its hold, and what is needed to settle it."""

    call_id: int
    intent: CallIntent
    provider: Provider
    api: Api
    held_nanos: int
    prompt_tokens: int  # the estimate behind the hold
    max_output_tokens: int
    configured_limit: int
    remaining_nanos: int  # after the hold, for the response headers
    strip_usage_chunk: bool
    reasoning: bool | None = None  # as the request set it (CallRequest.reasoning)
    meter: StreamMeter | None = None
    meter_failed: bool = False
    settled: bool = False


@dataclass
class FlowState:
    identity: Identity | None
    identity_error: str | None = None
    call: HeldCall | None = None


def flow_state(flow: http.HTTPFlow) -> FlowState | None:
    state = flow.metadata.get(STATE_KEY)
    return state if isinstance(state, FlowState) else None
