"""Rewrites that keep an agent working: a cheaper model as its monthly token bucket runs low,
and a lower max output when its budget cannot pay the one it asked for."""

import json
from pathlib import Path
from typing import Any

from mitmproxy import http

from test_mitm_enforcement import chat_body, chat_flow, completion, configured_proxy

# chat_body(): 8 prompt tokens by tiktoken, max_tokens 10; completion(): 8 in, 9 out.
CONFIG = """
[agents.thrifty]
monthly_tokens = 100
downgrade_below = 0.5
downgrade = { "gpt-4o" = "gpt-4o-mini" }

[agents.bounded]
monthly_tokens = 20

[agents.tuned]
monthly_tokens = 1000
downgrade_below = 0.9
downgrade = { "gpt-4o" = "gpt-4o-mini" }

[agents.keeper]
monthly_tokens = 10
when_quota_empty = "downgrade"
downgrade = { "gpt-4o" = "gpt-4o-mini" }

[agents.capped]
daily_usd = 0.0000102
cap_output = true
cap_output_min_tokens = 10

[agents.thinker]
daily_usd = 0.002
cap_output = true
cap_output_min_tokens = 10

[agents.strict]
daily_usd = 0.0000102
cap_output = true
"""


async def settled(proxy: Any, flow: http.HTTPFlow) -> http.HTTPFlow:
    await proxy.send(flow)
    assert flow.response is None, flow.response and flow.response.content
    flow.response = http.Response.make(200, completion(), {"content-type": "application/json"})
    proxy.enforcement.responseheaders(flow)
    await proxy.enforcement.response(flow)
    return flow


def sent_body(flow: http.HTTPFlow) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(flow.request.content or b"")
    return body


async def test_a_low_bucket_sends_the_cheaper_model_and_says_so(tmp_path: Path) -> None:
    gpt_4o = chat_body(model="gpt-4o")
    with configured_proxy(tmp_path, CONFIG) as proxy:
        for _ in range(3):  # 3 x 17 tokens: 51 of 100 used, 49 left, below half
            first = await settled(proxy, chat_flow(gpt_4o, credentials=("thrifty", "")))
        downgraded = await settled(proxy, chat_flow(gpt_4o, credentials=("thrifty", "")))
        again = await settled(proxy, chat_flow(gpt_4o, credentials=("thrifty", "")))
        rows = proxy.rows()
        assert proxy.enforcement.worker is not None
        events = proxy.enforcement.worker.run_blocking(lambda ledger: ledger.events("thrifty"))
    assert sent_body(first)["model"] == "gpt-4o"
    assert "x-spendbrake-model" not in (first.response.headers if first.response else {})
    assert sent_body(downgraded)["model"] == "gpt-4o-mini"
    assert sent_body(downgraded)["messages"] == gpt_4o["messages"]
    assert downgraded.response is not None
    assert downgraded.response.headers["x-spendbrake-model"] == "gpt-4o-mini"
    assert [(r["requested_model"], r["forwarded_model"]) for r in rows[3:]] == [
        ("gpt-4o", "gpt-4o-mini"),
        ("gpt-4o", "gpt-4o-mini"),
    ]
    assert sent_body(again)["model"] == "gpt-4o-mini"
    [event] = events  # one event when the downgrade starts, not one per call
    assert event.kind == "downgraded"
    assert "gpt-4o -> gpt-4o-mini: 51 of 100 monthly tokens used" in event.detail


async def test_an_empty_bucket_refuses_with_402(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, CONFIG) as proxy:
        await proxy.send(chat_flow(credentials=("bounded", "")))  # holds 18 of 20 tokens
        refused = await proxy.send(chat_flow(credentials=("bounded", "")))
    assert refused.response is not None
    assert refused.response.status_code == 402
    error = json.loads(refused.response.content or b"")["error"]
    assert error["code"] == "monthly_tokens_exceeded"
    assert "0 of 20 tokens this month (another 18 held by calls in flight)" in error["message"]
    assert int(refused.response.headers["retry-after"]) > 0


async def test_an_empty_bucket_can_keep_serving_the_cheaper_model(tmp_path: Path) -> None:
    gpt_4o = chat_body(model="gpt-4o")
    with configured_proxy(tmp_path, CONFIG) as proxy:
        first = await settled(proxy, chat_flow(gpt_4o, credentials=("keeper", "")))
        later = await settled(proxy, chat_flow(gpt_4o, credentials=("keeper", "")))
    assert sent_body(first)["model"] == "gpt-4o"  # 0 of 10 used: no threshold, no downgrade
    assert sent_body(later)["model"] == "gpt-4o-mini"  # 17 of 10: empty, kept going cheaper


async def test_capped_output_lowers_max_tokens_to_what_the_budget_pays(tmp_path: Path) -> None:
    # $0.0000102 = 10,200 nanos; the prompt costs 8 x 150, so 9,000 nanos buy 15 output tokens
    asks_for_100 = chat_body(max_tokens=100)
    with configured_proxy(tmp_path, CONFIG) as proxy:
        capped = await proxy.send(chat_flow(asks_for_100, credentials=("capped", "")))
        strict = await proxy.send(chat_flow(asks_for_100, credentials=("strict", "")))
        rows = proxy.rows()
    assert capped.response is None
    assert sent_body(capped)["max_tokens"] == 15
    assert "max_completion_tokens" not in sent_body(capped)
    assert (rows[0]["held_nanos"], rows[0]["estimated_output_tokens"]) == (10_200, 15)
    # The default minimum is 256 tokens: 15 is too few to be of use, so the call is refused.
    assert strict.response is not None
    assert strict.response.status_code == 402


GROUP_BUCKET = """
[agents.pair-a]
group = "pair"
downgrade_below = 0.9
downgrade = { "gpt-4o" = "gpt-4o-mini" }

[agents.pair-b]
group = "pair"

[groups.pair]
monthly_tokens = 40
"""


async def test_a_groups_token_bucket_is_shared_and_drives_the_downgrade(tmp_path: Path) -> None:
    gpt_4o = chat_body(model="gpt-4o")
    with configured_proxy(tmp_path, GROUP_BUCKET) as proxy:
        await settled(proxy, chat_flow(gpt_4o, credentials=("pair-b", "")))  # 17 of 40
        downgraded = await settled(proxy, chat_flow(gpt_4o, credentials=("pair-a", "")))
        refused = await proxy.send(chat_flow(credentials=("pair-b", "")))  # 34 + 18 > 40
    assert sent_body(downgraded)["model"] == "gpt-4o-mini"  # 23 left, below 90 % of the bucket
    assert refused.response is not None
    assert refused.response.status_code == 402
    error = json.loads(refused.response.content or b"")["error"]
    assert error["code"] == "monthly_tokens_exceeded"
    assert "group 'pair' (agent 'pair-b' is one of its agents): 34 of 40" in error["message"]


async def test_a_bucket_set_at_run_time_moves_the_downgrade_too(tmp_path: Path) -> None:
    gpt_4o = chat_body(model="gpt-4o")
    with configured_proxy(tmp_path, CONFIG) as proxy:
        assert proxy.enforcement.worker is not None
        # tuned's bucket is 1,000 in the file: 17 used would leave it far above 90 %.
        proxy.enforcement.worker.run_blocking(
            lambda ledger: ledger.set_limit("monthly_tokens", "tuned", 40)
        )
        first = await settled(proxy, chat_flow(gpt_4o, credentials=("tuned", "")))
        second = await settled(proxy, chat_flow(gpt_4o, credentials=("tuned", "")))
    assert sent_body(first)["model"] == "gpt-4o"
    assert sent_body(second)["model"] == "gpt-4o-mini"


async def test_capped_output_never_goes_below_a_claude_thinking_budget(tmp_path: Path) -> None:
    # $0.002 pays for a few hundred output tokens at $5/M, but the thinking budget needs
    # max_tokens above 1,024: no cap Anthropic would accept fits, so it is refused as it is.
    thinking = {
        "model": "claude-haiku-4-5",
        "max_tokens": 4_000,
        "thinking": {"type": "enabled", "budget_tokens": 1_024},
        "messages": [{"role": "user", "content": "hi"}],
    }
    with configured_proxy(tmp_path, CONFIG) as proxy:
        flow = await proxy.send(
            chat_flow(
                thinking, path="/v1/messages", host="api.anthropic.com", credentials=("thinker", "")
            )
        )
    assert flow.response is not None
    assert flow.response.status_code == 402
    assert json.loads(flow.request.content or b"")["max_tokens"] == 4_000  # not rewritten
