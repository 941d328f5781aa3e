"""Hostile calls through the enforcement addon, on a real SQLite ledger: nothing goes out
unmetered, and no hold is left behind.

Each example is one call on a metered route with a hostile body and hostile headers, answered
by a hostile upstream (a mutated JSON answer, a mutated stream cut anywhere, random bytes, a lost
connection). The addon's hooks run as mitmproxy runs them (requestheaders, request,
responseheaders, the stream callable, response or error), and after them:

- a call is either answered locally (a refusal in the provider's shape, and no hold) or forwarded
  with its hold in the ledger, and what is forwarded is what was metered;
- once its response or error hook ran, its hold is settled (never left 'held'), at a cost that is
  never negative, and at the hold itself when the answer carries no usage to read.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import tflow

from fuzzing import (
    ALL_ROUTES,
    BY_NAME,
    HOSTILE_TEXT,
    JSON_VALUES,
    ROUTES,
    Route,
    dumps,
    hostile_bodies,
    mutated,
)
from spendbrake.mitm.state import flow_state
from test_fuzz_sse import BY_STREAM, STREAMS, chunked, hostile_transcripts
from test_mitm_enforcement import Proxy, configured_proxy

# Ample money, so that most hostile calls that can be metered are held and forwarded; no loop
# or backoff brake, so that no example's outcome depends on the ones before it.
CONFIG = "[defaults]\ndaily_usd = 100000\nloop_repeats = 0\nbackoff_steps_s = []\n"
ADDON = settings(ALL_ROUTES, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    """One proxy and ledger for all of a test's examples: every example checks its own call,
    and that no call at all is left held."""
    with configured_proxy(tmp_path, CONFIG) as running:
        yield running


@dataclass(frozen=True)
class Call:
    route: Route
    body: bytes
    headers: dict[str, str]
    credentials: tuple[str, str] | None


@dataclass(frozen=True)
class Answer:
    kind: str  # "json", "stream", "bytes", "lost", "unreachable"
    status: int
    content_type: str
    chunks: list[bytes]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Answer({self.kind!r}, {self.status}, {b''.join(self.chunks)[:300]!r})")


@st.composite
def calls(draw: st.DrawFn) -> Call:
    route = draw(st.sampled_from(ROUTES))
    body = draw(hostile_bodies(route.body))
    headers: dict[str, str] = {"content-type": draw(st.sampled_from(["application/json", "x"]))}
    # Mostly plain: a hostile encoding is refused before any hold, and the hold is what this
    # test is about. One example in four still tries one.
    hostile_encoding = draw(st.integers(0, 3)) == 0
    choices = ["gzip", "gzip-for-real", "br", "zstd", "bogus"] if hostile_encoding else [None]
    encoding = draw(st.sampled_from(choices))
    if encoding == "gzip-for-real":
        body, encoding = gzip.compress(body), "gzip"
    if encoding:
        headers["content-encoding"] = encoding
    if draw(st.booleans()):
        headers["x-spendbrake-session"] = draw(HOSTILE_TEXT).encode("utf-8", "replace").decode()
    if draw(st.integers(0, 4)) == 0:
        headers["x-spendbrake-agent"] = draw(HOSTILE_TEXT).encode("utf-8", "replace").decode()
    credentials = draw(st.sampled_from([("fuzz-bot", "s1"), None]))
    return Call(route, body, headers, credentials)


@st.composite
def answers(draw: st.DrawFn, route: Route) -> Answer:
    kind = draw(st.sampled_from(("json", "json", "stream", "stream", "bytes", "lost", "gone")))
    status = draw(st.sampled_from((200, 200, 400, 429, 500)))
    if kind == "json":
        value = draw(st.one_of(mutated(route.response), JSON_VALUES))
        content = dumps(value, deep=draw(st.sampled_from((5, 400))))
        return Answer(kind, status, "application/json", [content])
    if kind == "stream":
        streams = [s for s in STREAMS if s.route == route] or [BY_STREAM["openai chat"]]
        transcript = draw(hostile_transcripts(draw(st.sampled_from(streams))))
        return Answer(kind, status, "text/event-stream", draw(chunked(transcript)))
    if kind == "bytes":
        content_type = draw(st.sampled_from(("application/json", "text/event-stream")))
        return Answer(kind, status, content_type, [draw(st.binary(max_size=200))])
    # The connection was lost after the request went out, or the provider was never reached.
    return Answer("lost" if kind == "lost" else "unreachable", 0, "", [])


def request_flow(call: Call) -> http.HTTPFlow:
    request = http.Request.make(
        "POST", f"https://{call.route.host}{call.route.path}", call.body, call.headers
    )
    request.headers.update(call.headers)  # make() may have set its own content-encoding
    flow = tflow.tflow(req=request)
    flow.request.raw_content = call.body  # exactly the bytes the client sent, undecoded
    if call.credentials:
        flow.metadata["proxyauth"] = call.credentials
    return flow


def run(proxy: Proxy, coroutine: Any) -> Any:
    return proxy.tctx.master.event_loop.run_until_complete(coroutine)


def held_calls(proxy: Proxy, call_id: int | None = None) -> list[dict[str, Any]]:
    """Held rows: all of them, or this call's (an earlier example that failed may have left
    one, and the next example must not be judged by it)."""
    rows = [row for row in proxy.rows() if row["state"] == "held"]
    return [row for row in rows if call_id is None or row["id"] == call_id]


def latest_id(proxy: Proxy) -> int:
    rows = proxy.rows()
    return rows[-1]["id"] if rows else 0


def admit(proxy: Proxy, call: Call) -> http.HTTPFlow:
    """The request hooks; then the call is refused locally, or forwarded with its hold."""
    flow = request_flow(call)
    before = latest_id(proxy)
    proxy.identification.requestheaders(flow)
    run(proxy, proxy.enforcement.request(flow))
    state = flow_state(flow)
    assert state is not None
    new_holds = [row for row in held_calls(proxy) if row["id"] > before]
    if flow.response is not None:
        assert flow.response.status_code >= 400
        assert flow.response.headers["x-spendbrake-reason"]
        assert state.call is None
        assert new_holds == []
        return flow
    assert state.call is not None, "forwarded without a hold"
    [held] = new_holds
    assert held["id"] == state.call.call_id
    assert held["held_nanos"] >= 0
    # What goes out is what was metered: the forwarded body reads as the same model.
    forwarded = call.route.api.parse(flow.request.content or b"", flow.request.path)
    assert forwarded.model == state.call.intent.forwarded_model or "azure" in call.route.name
    return flow


def answer(proxy: Proxy, flow: http.HTTPFlow, reply: Answer) -> None:
    """The response hooks as mitmproxy runs them: responseheaders, the stream callable chunk by
    chunk and b"" at the end, then response; or the error hook."""
    if reply.kind in ("lost", "unreachable"):
        if reply.kind == "unreachable":
            flow.server_conn.timestamp_tcp_setup = None
        flow.error = tflow.terr("Connection reset by peer")
        run(proxy, proxy.enforcement.error(flow))
        return
    flow.response = http.Response.make(
        reply.status, b"".join(reply.chunks), {"content-type": reply.content_type}
    )
    proxy.enforcement.responseheaders(flow)
    stream = flow.response.stream
    if callable(stream):
        for chunk in [*reply.chunks, b""]:
            stream(chunk)
    run(proxy, proxy.enforcement.response(flow))


def readable_usage(route: Route, reply: Answer) -> bool:
    try:
        return route.api.usage_from_json(json.loads(b"".join(reply.chunks))) is not None
    except ValueError:
        return False


@st.composite
def calls_and_answers(draw: st.DrawFn) -> tuple[Call, Answer]:
    """Drawn together: whether the call is admitted must not change what is drawn."""
    call = draw(calls())
    return call, draw(answers(call.route))


@ADDON
@given(case=calls_and_answers())
def test_a_hostile_call_is_refused_or_held_and_its_hold_always_settles(
    proxy: Proxy, case: tuple[Call, Answer]
) -> None:
    call, reply = case
    flow = admit(proxy, call)
    state = flow_state(flow)
    assert state is not None
    if state.call is None:
        return
    answer(proxy, flow, reply)

    assert held_calls(proxy, state.call.call_id) == [], "a hold was left behind"
    [row] = [row for row in proxy.rows() if row["id"] == state.call.call_id]
    assert row["actual_nanos"] >= 0
    if reply.kind == "lost" or (
        reply.kind in ("json", "bytes")
        and reply.status < 400
        and state.call.meter is None
        and not readable_usage(call.route, reply)
    ):
        assert row["actual_nanos"] == row["held_nanos"], "unknown usage settles at the hold"


CHAT = BY_NAME["openai chat"]
VALID_CHAT = Call(CHAT, dumps({**CHAT.body, "stream": False}), {}, ("fuzz-bot", "s1"))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"x_groq": "not an object"}, id="x_groq not an object"),
        pytest.param({"usage": {"cost": float("inf")}}, id="cost Infinity"),
        pytest.param(
            {"usage": {"prompt_tokens": 10**30, "completion_tokens": 10**30}},
            id="tokens beyond 64 bits",
        ),
        pytest.param({"usage": {"cost_in_usd_ticks": 10**40}}, id="cost beyond 64 bits"),
        pytest.param({"usage": {"total_tokens": 10**30}}, id="total beyond 64 bits"),
    ],
)
def test_answers_the_fuzzing_found_settle_instead_of_raising(
    proxy: Proxy, body: dict[str, Any]
) -> None:
    """Each raised inside the response hook, which left the call's hold held."""
    flow = admit(proxy, VALID_CHAT)
    answer(proxy, flow, Answer("json", 200, "application/json", [dumps(body)]))
    assert held_calls(proxy) == []  # the hook returned, and the hold is settled


def test_the_sample_call_is_forwarded_with_a_hold(proxy: Proxy) -> None:
    flow = admit(proxy, VALID_CHAT)
    assert flow.response is None
    answer(proxy, flow, Answer("json", 200, "application/json", [dumps(CHAT.response)]))
    [row] = proxy.rows()
    assert (row["state"], row["outcome"]) == ("settled", "ok")
    assert 0 < row["actual_nanos"] < row["held_nanos"]


def test_an_answer_nested_deeper_than_json_can_read_settles_at_the_hold(proxy: Proxy) -> None:
    flow = admit(proxy, VALID_CHAT)
    deep = b'{"usage": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    answer(proxy, flow, Answer("json", 200, "application/json", [deep]))
    [row] = proxy.rows()
    assert (row["state"], row["actual_nanos"]) == ("settled", row["held_nanos"])


def test_a_max_output_too_large_to_hold_is_refused_as_over_budget(proxy: Proxy) -> None:
    """Its worst case does not fit SQLite's 64-bit integers: it is held at the ceiling, which
    no budget covers, so the refusal says what is wrong (402), not an internal error."""
    body = dumps({**CHAT.body, "stream": False, "max_completion_tokens": 10**30})
    flow = admit(proxy, Call(CHAT, body, {}, ("fuzz-bot", "s1")))
    assert flow.response is not None
    assert flow.response.status_code == 402
    assert flow.response.headers["x-spendbrake-reason"] == "daily_budget_exceeded"
    assert held_calls(proxy) == []
