"""The enforcement addon: holds before forwarding, settles after, refuses in the provider's shape.

Driven through mitmproxy's own test helpers (taddons, tflow) with a real SQLite ledger.
"""

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow

from spendbrake.ledger import LedgerUnavailable
from spendbrake.mitm.enforcement import Enforcement
from spendbrake.mitm.identification import Identification
from spendbrake.mitm.state import flow_state
from spendbrake.sqlite_ledger import SQLiteLedger

GPT_4O_MINI_IN, GPT_4O_MINI_OUT = 150, 600  # nanos per token


def chat_body(**fields: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        **fields,
    }


def chat_flow(
    body: dict[str, Any] | bytes | None = None,
    *,
    credentials: tuple[str, str] | None = ("bot", "s1"),
    host: str = "api.openai.com",
    path: str = "/v1/chat/completions",
) -> http.HTTPFlow:
    if body is None:
        body = chat_body()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = http.Request.make(
        "POST", f"https://{host}{path}", content, {"content-type": "application/json"}
    )
    flow = tflow.tflow(req=request)
    if credentials:
        flow.metadata["proxyauth"] = credentials
    return flow


class Proxy:
    """The two addons a request passes, in mitmproxy's order, on one ledger file."""

    def __init__(self, tctx: taddons.context, enforcement: Enforcement, ledger: Path) -> None:
        self.tctx, self.enforcement, self.ledger = tctx, enforcement, ledger
        self.identification = Identification()

    async def send(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        self.identification.requestheaders(flow)
        await self.enforcement.request(flow)
        return flow

    def rows(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.ledger) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM calls ORDER BY id")]


@contextmanager
def configured_proxy(tmp_path: Path, config_toml: str) -> Iterator[Proxy]:
    """The addons configured with ``config_toml`` and a fresh ledger in ``tmp_path``."""
    config = tmp_path / "spendbrake.toml"
    config.write_text(config_toml)
    enforcement = Enforcement()
    with taddons.context(enforcement) as tctx:
        tctx.configure(
            enforcement, spendbrake_config=str(config), spendbrake_ledger=str(tmp_path / "l.db")
        )
        try:
            yield Proxy(tctx, enforcement, tmp_path / "l.db")
        finally:
            enforcement.done()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    with configured_proxy(tmp_path, "[agents.bot]\ndaily_usd = 0.0001\n") as running:
        yield running


def completion(prompt: int = 8, completion_tokens: int = 9) -> bytes:
    return json.dumps(
        {
            "object": "chat.completion",
            "model": "gpt-4o-mini-2024-07-18",
            "service_tier": "default",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens,
            },
        }
    ).encode()


async def test_a_call_within_budget_is_held_and_forwarded(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    assert flow.response is None
    [row] = proxy.rows()
    assert (row["agent"], row["session"], row["state"]) == ("bot", "s1", "held")
    # "user" and "hi" are a token each, + 3 per message + 3 priming; 10 output tokens as asked
    assert row["held_nanos"] == 8 * GPT_4O_MINI_IN + 10 * GPT_4O_MINI_OUT
    assert (row["estimated_input_tokens"], row["estimated_output_tokens"]) == (8, 10)


async def test_a_non_streamed_response_settles_its_exact_cost_and_says_so(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    flow.response = http.Response.make(200, completion(), {"content-type": "application/json"})
    proxy.enforcement.responseheaders(flow)
    await proxy.enforcement.response(flow)
    cost = 8 * GPT_4O_MINI_IN + 9 * GPT_4O_MINI_OUT
    [row] = proxy.rows()
    assert (row["state"], row["outcome"], row["actual_nanos"]) == ("settled", "ok", cost)
    assert (row["input_tokens"], row["output_tokens"]) == (8, 9)
    assert flow.response.headers["x-spendbrake-agent"] == "bot"
    assert flow.response.headers["x-spendbrake-cost-usd"] == "0.000006600"
    assert flow.response.headers["x-spendbrake-remaining-usd"] == "0.000093400"


async def test_over_the_daily_limit_the_call_is_answered_locally_with_402(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow(chat_body(max_tokens=1000)))
    assert flow.response is not None
    assert flow.response.status_code == 402
    error = json.loads(flow.response.content or b"")["error"]
    assert error["code"] == "daily_budget_exceeded"
    assert error["type"] == "insufficient_quota"
    assert "agent 'bot': spent $0.00 of $0.0001 today" in error["message"]
    assert flow.response.headers["x-should-retry"] == "false"
    assert flow.response.headers["x-spendbrake-reason"] == "daily_budget_exceeded"
    assert int(flow.response.headers["retry-after"]) > 0
    [row] = proxy.rows()
    assert (row["state"], row["reason"]) == ("refused", "daily_budget_exceeded")


async def test_a_stream_gets_usage_added_and_the_extra_usage_chunk_removed(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow(chat_body(stream=True)))
    assert json.loads(flow.request.content or b"")["stream_options"] == {"include_usage": True}
    assert flow.request.headers["accept-encoding"] == "identity"

    flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    proxy.enforcement.responseheaders(flow)
    assert flow.response.headers["x-spendbrake-held-usd"] == "0.000007200"
    assert flow.response.headers["x-spendbrake-remaining-usd"] == "0.000092800"
    stream = flow.response.stream
    assert callable(stream)
    content = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
    usage = (
        b'data: {"model":"gpt-4o-mini","choices":[],'
        b'"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}\n\n'
    )
    passed = [
        stream(content[:10]),
        stream(content[10:] + usage),
        stream(b"data: [DONE]\n\n"),
        stream(b""),
    ]
    assert passed == [[], [content], [b"data: [DONE]\n\n"], b""]
    await proxy.enforcement.response(flow)
    [row] = proxy.rows()
    assert (row["stream"], row["actual_nanos"]) == (1, 8 * GPT_4O_MINI_IN + 1 * GPT_4O_MINI_OUT)


def streamed_delta(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


async def test_a_stream_that_ends_without_usage_is_charged_its_prompt_and_relayed_text(
    proxy: Proxy,
) -> None:
    flow = await proxy.send(chat_flow(chat_body(stream=True)))
    flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    proxy.enforcement.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    stream(streamed_delta("Hi"))  # 2 bytes of text: at most 2 tokens
    stream(b"")
    await proxy.enforcement.response(flow)
    [row] = proxy.rows()
    assert row["outcome"] == "cut_short"
    assert (row["input_tokens"], row["output_tokens"]) == (8, 2)
    assert row["actual_nanos"] == 8 * GPT_4O_MINI_IN + 2 * GPT_4O_MINI_OUT
    assert 0 < row["actual_nanos"] < row["held_nanos"]


async def test_relayed_text_never_counts_beyond_the_output_asked_for(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow(chat_body(stream=True)))  # max_tokens 10
    flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    proxy.enforcement.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    stream(streamed_delta("x" * 500))
    flow.error = tflow.terr("Client disconnected.")
    await proxy.enforcement.error(flow)
    [row] = proxy.rows()
    assert (row["outcome"], row["output_tokens"]) == ("cut_short", 10)
    assert row["actual_nanos"] == row["held_nanos"]


@pytest.mark.parametrize(
    ("fields", "output_tokens"),
    [
        ({"model": "gpt-5-nano"}, 10),  # reasons unseen by default
        ({"model": "gpt-4o-mini", "reasoning_effort": "low"}, 10),  # asked to reason
        ({"model": "gpt-5-nano", "reasoning_effort": "none"}, 2),  # reasoning turned off
        ({"model": "gpt-4o-mini"}, 2),  # never reasons
    ],
    ids=["reasoning-model", "reasoning-asked", "reasoning-off", "no-reasoning"],
)
async def test_a_stream_cut_where_the_model_may_have_reasoned_unseen_is_charged_all_its_output(
    proxy: Proxy, fields: dict[str, Any], output_tokens: int
) -> None:
    """What a model thought before the cut is billed, and nothing in the stream says how much:
    the 2 bytes relayed bound only a model that shows all it generates."""
    flow = await proxy.send(chat_flow(chat_body(stream=True, **fields)))  # max_tokens 10
    flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    proxy.enforcement.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    stream(streamed_delta("Hi"))
    flow.error = tflow.terr("Client disconnected.")
    await proxy.enforcement.error(flow)
    [row] = proxy.rows()
    assert (row["outcome"], row["input_tokens"], row["output_tokens"]) == (
        "cut_short",
        8,
        output_tokens,
    )
    # The prompt as estimated for the hold and all 10 output tokens: exactly the hold.
    assert (row["actual_nanos"] == row["held_nanos"]) is (output_tokens == 10)


async def test_an_upstream_error_without_usage_costs_nothing(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    flow.response = http.Response.make(500, b'{"error": {}}', {"content-type": "application/json"})
    await proxy.enforcement.response(flow)
    [row] = proxy.rows()
    assert (row["outcome"], row["actual_nanos"]) == ("upstream_error", 0)


async def test_a_connection_lost_after_sending_is_charged_its_hold(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    flow.error = tflow.terr("Connection reset")
    await proxy.enforcement.error(flow)
    [row] = proxy.rows()
    assert (row["outcome"], row["actual_nanos"]) == ("interrupted", row["held_nanos"])


async def test_a_provider_never_reached_costs_nothing(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    flow.server_conn.timestamp_tcp_setup = None
    flow.client_conn.timestamp_end = None  # the client is still there, waiting
    flow.error = tflow.terr("Connection refused")
    await proxy.enforcement.error(flow)
    [row] = proxy.rows()
    assert (row["outcome"], row["actual_nanos"]) == ("upstream_unreachable", 0)


async def test_a_client_that_leaves_before_the_provider_is_reached_is_not_its_failure(
    proxy: Proxy,
) -> None:
    flow = await proxy.send(chat_flow())
    flow.server_conn.timestamp_tcp_setup = None
    flow.error = tflow.terr("Client disconnected.")
    await proxy.enforcement.error(flow)
    [row] = proxy.rows()
    # Not upstream_unreachable: the backoff brake counts the provider's failures only.
    assert (row["outcome"], row["actual_nanos"]) == ("client_disconnected", 0)


async def test_a_call_cut_without_usage_counts_its_estimated_tokens(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    flow.error = tflow.terr("Server disconnected.")  # connected, then lost: it may be billed
    await proxy.enforcement.error(flow)
    [row] = proxy.rows()
    assert row["outcome"] == "interrupted"
    assert row["actual_nanos"] == row["held_nanos"]
    assert (row["input_tokens"], row["output_tokens"]) == (8, 10)  # as held, not zero


@pytest.mark.parametrize(
    ("flow_args", "status", "code"),
    [
        ({"body": b"not json"}, 400, "unreadable_request"),
        (
            {"body": {"model": "gpt-nonexistent", "messages": [{"role": "user", "content": "x"}]}},
            400,
            "unknown_model",
        ),
        ({"path": "/v1/images/generations"}, 403, "unmetered_route"),
        ({"credentials": ("bad name", "s")}, 407, "unauthenticated_agent"),
    ],
)
async def test_calls_that_cannot_be_metered_are_refused(
    proxy: Proxy, flow_args: dict[str, Any], status: int, code: str
) -> None:
    flow = await proxy.send(chat_flow(**flow_args))
    assert flow.response is not None
    assert flow.response.status_code == status
    assert json.loads(flow.response.content or b"")["error"]["code"] == code
    assert flow.response.headers["x-spendbrake-reason"] == code


async def test_a_foreign_host_header_inside_an_llm_tunnel_is_still_metered(proxy: Proxy) -> None:
    flow = chat_flow(host="localhost")
    flow.client_conn.sni = "api.openai.com"
    await proxy.send(flow)
    assert flow.response is None
    [row] = proxy.rows()
    assert row["state"] == "held"


async def test_free_routes_and_other_hosts_pass_untouched(proxy: Proxy) -> None:
    models = tflow.tflow(req=http.Request.make("GET", "https://api.openai.com/v1/models"))
    other = chat_flow(host="example.com")
    other.client_conn.sni = "example.com"
    other.server_conn.address = ("example.com", 443)
    for flow in (models, other):
        await proxy.send(flow)
        assert flow.response is None
    assert proxy.rows() == []


def realtime_session(host: str = "api.openai.com", path: str = "/v1/realtime") -> http.HTTPFlow:
    """The opening request of a WebSocket session, as the Realtime SDKs send it."""
    request = http.Request.make(
        "GET",
        f"https://{host}{path}?model=gpt-4o-realtime-preview",
        b"",
        {"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13"},
    )
    flow = tflow.tflow(req=request)
    flow.metadata["proxyauth"] = ("bot", "s1")
    return flow


async def test_a_websocket_session_is_refused_because_no_hold_can_bound_it(proxy: Proxy) -> None:
    for flow in (realtime_session(), realtime_session(path="/v1/models")):  # a GET is no excuse
        await proxy.send(flow)
        assert flow.response is not None
        assert flow.response.status_code == 403
        error = json.loads(flow.response.content or b"")["error"]
        assert error["code"] == "unmetered_route"
        assert "(an upgrade to websocket)" in error["message"]


async def test_a_websocket_route_the_operator_vouches_for_passes(tmp_path: Path) -> None:
    config_toml = 'allow_unmetered_routes = ["GET /v1/realtime"]\n'
    with configured_proxy(tmp_path, config_toml) as proxy:
        flow = await proxy.send(realtime_session())
        assert flow.response is None


async def test_a_run_time_limit_applies_to_the_next_call(proxy: Proxy) -> None:
    from spendbrake.sqlite_ledger import SQLiteLedger

    cli_side = SQLiteLedger(proxy.ledger)
    cli_side.set_daily_limit("bot", 0)
    cli_side.close()
    flow = await proxy.send(chat_flow())
    assert flow.response is not None
    assert flow.response.status_code == 402


async def test_mitmproxy_forwards_a_request_whose_addon_raised() -> None:
    """Why spendbrake guards its own hook: mitmproxy fails open on addon exceptions."""

    class Raises:
        def request(self, flow: http.HTTPFlow) -> None:
            raise RuntimeError("boom")

    with taddons.context() as tctx:
        tctx.master.addons.add(Raises())
        flow = chat_flow()
        await tctx.master.addons.handle_lifecycle(HttpRequestHook(flow))
        assert flow.response is None  # forwarded as if nothing happened


async def test_an_exception_inside_spendbrake_refuses_the_call(proxy: Proxy) -> None:
    class BrokenEstimator:
        def is_loaded(self, model: str) -> bool:
            return True

        def count(self, text: str, model: str) -> int:
            raise RuntimeError("tokenizer exploded")

    proxy.enforcement.estimator = BrokenEstimator()  # type: ignore[assignment]
    flow = chat_flow()
    proxy.identification.requestheaders(flow)
    await proxy.tctx.master.addons.handle_lifecycle(HttpRequestHook(flow))
    assert flow.response is not None
    assert flow.response.status_code == 500
    error = json.loads(flow.response.content or b"")["error"]
    assert error["code"] == "internal_error"
    assert "tokenizer exploded" in error["message"]


async def test_before_it_is_configured_every_call_is_refused() -> None:
    enforcement = Enforcement()
    with taddons.context(enforcement):
        flow = chat_flow()
        Identification().requestheaders(flow)
        await enforcement.request(flow)
        assert flow.response is not None
        assert flow.response.status_code == 503
        assert flow.response.headers["x-spendbrake-reason"] == "ledger_unavailable"


async def test_a_bad_config_is_rejected_and_the_one_in_force_stays(
    proxy: Proxy, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agents.bot]\ndaily_usdd = 1\n")
    with pytest.raises(exceptions.OptionsError, match=r"unknown key agents\.bot\.daily_usdd"):
        proxy.tctx.configure(proxy.enforcement, spendbrake_config=str(bad))
    assert proxy.enforcement.config.daily_limit("bot") == 100_000  # still $0.0001
    flow = await proxy.send(chat_flow())
    assert flow.response is None


async def test_the_flow_state_is_one_typed_object(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    state = flow_state(flow)
    assert state is not None
    assert state.call is not None
    assert state.call.intent.requested_model == "gpt-4o-mini"


def anthropic_flow(max_tokens: int, *, stream: bool = False) -> http.HTTPFlow:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return chat_flow(body, host="api.anthropic.com", path="/v1/messages")


async def test_anthropic_refusals_come_in_anthropics_error_shape(proxy: Proxy) -> None:
    flow = await proxy.send(anthropic_flow(100))  # 100 x $5/M output alone is $0.0005
    assert flow.response is not None
    assert flow.response.status_code == 402
    body = json.loads(flow.response.content or b"")
    assert body["type"] == "error"
    assert body["error"]["type"] == "billing_error"
    assert "daily budget exceeded for agent 'bot'" in body["error"]["message"]
    assert flow.response.headers["x-spendbrake-reason"] == "daily_budget_exceeded"


async def test_an_anthropic_stream_is_metered_from_its_own_events(proxy: Proxy) -> None:
    flow = await proxy.send(anthropic_flow(10, stream=True))
    assert flow.response is None
    assert flow.request.content is not None
    assert b"stream_options" not in flow.request.content  # nothing to inject at Anthropic
    flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    proxy.enforcement.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    start = (
        b'event: message_start\ndata: {"type":"message_start","message":{"model":'
        b'"claude-haiku-4-5","usage":{"input_tokens":12,"output_tokens":1}}}\n\n'
    )
    delta = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":6}}\n\n'
    assert [stream(start), stream(delta), stream(b"")] == [start, delta, b""]
    await proxy.enforcement.response(flow)
    [row] = proxy.rows()
    assert (row["provider"], row["endpoint"]) == ("anthropic", "/v1/messages")
    assert (row["input_tokens"], row["output_tokens"]) == (12, 6)
    assert row["actual_nanos"] == 12 * 1_000 + 6 * 5_000  # $1/M in, $5/M out


async def test_a_compressed_request_body_is_understood_and_answers_come_uncompressed(
    proxy: Proxy,
) -> None:
    flow = chat_flow(chat_body(stream=True))
    flow.request.encode("gzip")  # the client compressed its body
    assert flow.request.raw_content != flow.request.content
    await proxy.send(flow)
    assert flow.response is None
    assert flow.request.headers["content-encoding"] == "gzip"  # still the client's encoding
    sent = json.loads(flow.request.content or b"")  # decoded: the rewritten body
    assert sent["stream_options"] == {"include_usage": True}
    assert flow.request.headers["accept-encoding"] == "identity"
    [row] = proxy.rows()
    assert row["state"] == "held"


async def test_a_non_streamed_call_also_asks_for_an_uncompressed_answer(proxy: Proxy) -> None:
    flow = await proxy.send(chat_flow())
    assert flow.request.headers["accept-encoding"] == "identity"


async def test_a_private_model_is_held_and_settled_at_the_operators_price(tmp_path: Path) -> None:
    config_toml = (
        '[prices."ft:gpt-4o-mini:acme"]\ninput_usd_per_mtok = 1\noutput_usd_per_mtok = 2\n'
    )
    with configured_proxy(tmp_path, config_toml) as proxy:
        flow = await proxy.send(chat_flow(chat_body(model="ft:gpt-4o-mini:acme")))
        assert flow.response is None
        flow.response = http.Response.make(200, completion(), {"content-type": "application/json"})
        await proxy.enforcement.response(flow)
        [row] = proxy.rows()
        assert row["held_nanos"] == 8 * 1_000 + 10 * 2_000
        # the response names a published snapshot, but the operator's price is what it pays
        assert row["actual_nanos"] == 8 * 1_000 + 9 * 2_000


async def test_an_unmetered_route_passes_only_where_the_operator_allows_it(tmp_path: Path) -> None:
    config_toml = 'allow_unmetered_routes = ["POST /v1/files"]\n'
    with configured_proxy(tmp_path, config_toml) as proxy:
        files = await proxy.send(chat_flow(b"upload", path="/v1/files"))
        images = await proxy.send(chat_flow(b"{}", path="/v1/images/generations"))
        assert files.response is None
        assert images.response is not None
        assert images.response.status_code == 403
        assert (
            "allow_unmetered_routes"
            in json.loads(images.response.content or b"")["error"]["message"]
        )


async def test_an_azure_deployment_is_priced_as_the_model_the_operator_names(
    tmp_path: Path,
) -> None:
    config_toml = '[prices."my-mini"]\nprice_as = "gpt-4o-mini"\n'
    with configured_proxy(tmp_path, config_toml) as proxy:
        path = "/openai/deployments/my-mini/chat/completions?api-version=2024-10-21"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
        flow = await proxy.send(chat_flow(body, host="acme.openai.azure.com", path=path))
        assert flow.response is None
        flow.response = http.Response.make(200, completion(), {"content-type": "application/json"})
        await proxy.enforcement.response(flow)
        unmapped = await proxy.send(
            chat_flow(body, host="acme.openai.azure.com", path=path.replace("my-mini", "other"))
        )
        assert unmapped.response is not None
        assert unmapped.response.status_code == 400
        assert "'other'" in json.loads(unmapped.response.content or b"")["error"]["message"]
        held, refused = proxy.rows()
        assert (held["provider"], held["requested_model"]) == ("azure", "my-mini")
        assert held["actual_nanos"] == 8 * GPT_4O_MINI_IN + 9 * GPT_4O_MINI_OUT
        assert refused["reason"] == "unknown_model"


async def test_a_ledger_that_cannot_say_the_room_left_is_a_503_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cap_output reads the room left before the hold; a ledger fault there fails closed with
    the ledger's own refusal, as a fault in the hold does."""

    def unreachable(*_: object) -> int:
        raise LedgerUnavailable("ledger l.db is unreachable: disk I/O error")

    monkeypatch.setattr(SQLiteLedger, "room_nanos", unreachable)
    with configured_proxy(tmp_path, "[agents.bot]\ndaily_usd = 1\ncap_output = true\n") as proxy:
        flow = chat_flow()
        proxy.identification.requestheaders(flow)
        await proxy.enforcement.request(flow)
    assert flow.response is not None
    assert flow.response.status_code == 503
    assert flow.response.headers["x-spendbrake-reason"] == "ledger_unavailable"
