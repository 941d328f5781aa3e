"""What mitmweb and mitmdump show of each call: a comment, a mark on refusals, a plain record in
the flow's metadata that a saved flow file keeps, and one concise log line."""

import logging
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.io import tnetstring

from spendbrake.mitm.flow_annotations import RECORD_KEY, REFUSED_MARK
from spendbrake.mitm.state import STATE_KEY
from test_mitm_enforcement import Proxy, chat_body, chat_flow, completion, configured_proxy


@pytest.fixture
def proxy(tmp_path: Path) -> Proxy:
    with configured_proxy(tmp_path, "[agents.bot]\ndaily_usd = 0.0001\n") as running:
        yield running  # type: ignore[misc]


async def test_a_settled_call_is_commented_with_its_tokens_cost_and_what_is_left(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spendbrake")
    flow = await proxy.send(chat_flow())
    flow.response = http.Response.make(200, completion(), {"content-type": "application/json"})
    proxy.enforcement.responseheaders(flow)
    await proxy.enforcement.response(flow)

    assert flow.comment == "bot · gpt-4o-mini · 8 in / 9 out · $0.0000066 · remaining $0.0000934"
    assert not flow.marked
    record = flow.metadata[RECORD_KEY]
    assert record == {
        "agent": "bot",
        "session": "s1",
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "requested_model": "gpt-4o-mini",
        "forwarded_model": "gpt-4o-mini",
        "stream": False,
        "call_id": 1,
        "held_usd": "0.000007200",
        "cost_usd": "0.000006600",
        "remaining_usd": "0.000093400",
        "tokens": {"input": 8, "cached_input": 0, "cache_write": 0, "output": 9, "reasoning": 0},
        "estimated_tokens": {"input": 8, "output": 10},
        "outcome": "ok",
        "reason": "",
    }
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("spendbrake")]
    assert lines[-1] == ("spendbrake: bot gpt-4o-mini 8 in/9 out $0.0000066 (remaining $0.0000934)")


async def test_a_refused_call_is_marked_and_says_why(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow(chat_body(max_tokens=1000)))
    assert flow.response is not None
    await proxy.enforcement.response(flow)  # mitmproxy calls it for an answer an addon made
    assert flow.marked == REFUSED_MARK
    assert flow.comment == "bot · gpt-4o-mini · refused: daily_budget_exceeded (402)"
    refusal = flow.metadata[RECORD_KEY]["refusal"]
    assert (refusal["code"], refusal["status"]) == ("daily_budget_exceeded", 402)
    assert refusal["message"].startswith("spendbrake: daily budget exceeded for agent 'bot'")


async def test_a_finished_flow_can_be_written_to_a_flow_file(proxy: Proxy) -> None:
    """mitmproxy copies metadata and writes it with tnetstring, which takes plain values only:
    the live state object leaves the metadata when the flow ends, the plain record stays."""
    flow = await proxy.send(chat_flow())
    assert STATE_KEY in flow.metadata
    with pytest.raises(ValueError, match="unserializable object"):
        tnetstring.dumps(flow.get_state())
    flow.response = http.Response.make(200, completion(), {"content-type": "application/json"})
    await proxy.enforcement.response(flow)
    assert STATE_KEY not in flow.metadata
    state = tnetstring.loads(tnetstring.dumps(flow.get_state()))
    assert isinstance(state, dict)
    assert state["metadata"][RECORD_KEY]["cost_usd"] == "0.000006600"
    assert state["comment"] == flow.comment


async def test_a_call_the_provider_failed_says_so(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    flow.response = http.Response.make(500, b"{}", {"content-type": "application/json"})
    await proxy.enforcement.response(flow)
    assert flow.comment == (
        "bot · gpt-4o-mini · 0 in / 0 out · $0.00 · remaining $0.0001 · upstream_error"
    )
