"""Upstream faults: a provider that resets, stalls, says nothing for long, or answers 500/529.

Each call ends in a clear answer and a conservative settlement (the hold when nothing is known,
the usage seen and the text relayed when a stream is cut), the proxy keeps serving other agents
meanwhile, and the agent's next call goes through once the provider behaves.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx2
import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    raw_client,
    requests_of,
    run_client,
    settled_calls,
    wait_for,
)

from spendbrake.mitm.mitmproxy_options import TCP_TIMEOUT_S
from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

OPENAI_CHAT = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_MESSAGES = "https://api.anthropic.com/v1/messages"
# A user's addon script, loaded beside spendbrake: it reports the timeout the running proxy
# applies to silent connections.
SPENDBRAKE_SCRIPT = """
import logging

from mitmproxy import ctx


def running() -> None:
    logging.warning("tcp_timeout in force: %s s", ctx.options.tcp_timeout)
"""
_TCP_TIMEOUT_LINE = re.compile(r"tcp_timeout in force: (\d+) s")
SILENCE_MS = 2500  # longer than the control's tcp_timeout of 1 s


def chat(
    client: httpx2.Client,
    test_id: str,
    *,
    stream: bool = False,
    fault: dict[str, str] | None = None,
) -> httpx2.Response:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 9,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    return client.post(OPENAI_CHAT, json=body, headers={TEST_ID_HEADER: test_id, **(fault or {})})


def the_call(proxy: Proxy, agent: str) -> dict[str, Any]:
    (row,) = settled_calls(proxy.ledger, agent, 1)
    return row


def assert_settled_at_the_hold(row: dict[str, Any]) -> None:
    assert (row["state"], row["outcome"]) == ("settled", "interrupted")
    assert row["actual_nanos"] == row["held_nanos"] > 0


def assert_charged_what_was_relayed(row: dict[str, Any]) -> None:
    assert (row["state"], row["outcome"]) == ("settled", "cut_short")
    assert 0 < row["actual_nanos"] <= row["held_nanos"]
    # The text relayed, a token a byte (an upper bound), but never more than was asked.
    assert 0 < row["output_tokens"] <= 9


def test_a_reset_before_the_answer_is_settled_at_the_hold(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    agent = "uf-reset"
    with raw_client(proxy, agent) as client:
        reset = chat(client, test_id, fault={"x-fake-reset": "before-headers"})
        assert reset.status_code == 502
        assert "x-spendbrake-reason" not in reset.headers  # the provider's failure, not ours
        assert_settled_at_the_hold(the_call(proxy, agent))

        assert chat(client, test_id).status_code == 200  # the provider is back
    assert len(requests_of(fake, test_id)) == 2


def test_a_reset_mid_stream_is_charged_the_usage_seen_and_the_text_relayed(
    proxy: Proxy, test_id: str
) -> None:
    agent = "uf-reset-stream"
    with raw_client(proxy, agent) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            chat(client, test_id, stream=True, fault={"x-fake-reset": "mid-stream"})
        assert_charged_what_was_relayed(the_call(proxy, agent))
        assert chat(client, test_id, stream=True).status_code == 200


def test_a_stalled_stream_the_client_gives_up_on_is_settled_while_others_are_served(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    agent = "uf-stalled"
    gave_up: list[Exception] = []

    def stalled_call() -> None:
        with raw_client(proxy, agent, timeout=1.5) as client:
            try:
                chat(client, test_id, stream=True, fault={"x-fake-stall-ms": "5000"})
            except httpx2.ReadTimeout as e:
                gave_up.append(e)

    caller = threading.Thread(target=stalled_call, daemon=True)
    caller.start()
    wait_for(lambda: requests_of(fake, test_id), what="the stalled call to reach the provider")
    with raw_client(proxy, "uf-bystander") as other:
        assert chat(other, test_id).status_code == 200  # served during the stall
    caller.join(timeout=30)
    assert gave_up, "the client did not give up on the stalled stream"
    assert_charged_what_was_relayed(the_call(proxy, agent))


@pytest.mark.parametrize(
    ("model", "charged_all_held"),
    [("o4-mini", True), ("gpt-4o-mini", False)],
    ids=["reasoning-model", "control-no-reasoning"],
)
def test_a_stream_the_sdk_gives_up_on_is_charged_all_held_when_the_model_may_think_unseen(
    proxy: Proxy, test_id: str, model: str, charged_all_held: bool
) -> None:
    """The official SDK times out on a stream stalled after its first words, as an agent does
    on a reasoning model thinking silently. What o4-mini thought meanwhile is billed and never
    crossed the proxy, so it is charged the 500 output tokens held for it; gpt-4o-mini, which
    shows all it generates, only the text it relayed."""
    agent = f"uf-gave-up-{model}"
    spec = {
        "model": model,
        "content": "Think hard, then say hello.",
        "max_tokens": 500,
        "stream": True,
        "timeout": 1.5,
        "max_retries": 0,
        "headers": {TEST_ID_HEADER: test_id, "x-fake-stall-ms": "5000"},
    }
    [call] = run_client("sdk_chat.py", spec, proxy.client_env(agent))["calls"]
    assert call["ok"] is False  # the SDK gave up mid-stream
    row = the_call(proxy, agent)
    assert (row["state"], row["outcome"]) == ("settled", "cut_short")
    if charged_all_held:
        assert row["output_tokens"] == 500
        assert row["actual_nanos"] == row["held_nanos"]
    else:
        assert 0 < row["output_tokens"] <= len("Hello! How can I help?")
        assert 0 < row["actual_nanos"] < row["held_nanos"]


OPENAI_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC_BODY = {**OPENAI_BODY, "model": "claude-haiku-4-5", "max_tokens": 9}


@pytest.mark.parametrize(
    ("url", "status", "body"),
    [(OPENAI_CHAT, 500, OPENAI_BODY), (ANTHROPIC_MESSAGES, 529, ANTHROPIC_BODY)],
    ids=["openai-500", "anthropic-529-overloaded"],
)
def test_a_provider_error_reaches_the_client_as_sent_and_bills_nothing(
    proxy: Proxy, test_id: str, url: str, status: int, body: dict[str, Any]
) -> None:
    agent = f"uf-http-{status}"
    with raw_client(proxy, agent) as client:
        headers = {TEST_ID_HEADER: test_id, "x-fake-status": str(status), "x-api-key": "k"}
        failed = client.post(url, json=body, headers=headers)
    assert failed.status_code == status
    assert "x-spendbrake-reason" not in failed.headers
    assert "fake failure" in failed.text  # the provider's own error body
    row = the_call(proxy, agent)
    assert (row["outcome"], row["actual_nanos"], row["reason"]) == (
        "upstream_error",
        0,
        f"HTTP {status}",
    )


def test_a_long_silent_call_is_not_cut(proxy: Proxy, test_id: str) -> None:
    """mitmproxy closes a connection silent for longer than tcp_timeout (600 s by default),
    which would cut a reasoning model thinking before its first byte. The running proxy says
    it allows an hour; the control below shows that this option is what cuts a silent call."""
    (in_force,) = _TCP_TIMEOUT_LINE.findall(proxy.output())
    assert int(in_force) == TCP_TIMEOUT_S >= 3600
    with raw_client(proxy, "uf-thinking") as client:
        thought = chat(client, test_id, fault={"x-fake-silence-ms": str(SILENCE_MS)})
    assert thought.status_code == 200


def test_control_a_silence_longer_than_tcp_timeout_cuts_the_call_and_it_is_held(
    start_proxy: Callable[..., AbstractContextManager[Proxy]], test_id: str
) -> None:
    agent = "uf-cut-by-timeout"
    with (
        start_proxy(settings=["tcp_timeout=1"]) as impatient,
        raw_client(impatient, agent) as client,
    ):
        # Twice the silence: mitmproxy checks idle connections about once per tcp_timeout, and
        # a loaded machine runs that check late.
        with pytest.raises(httpx2.RemoteProtocolError):
            chat(client, test_id, fault={"x-fake-silence-ms": str(2 * SILENCE_MS)})
        assert_settled_at_the_hold(the_call(impatient, agent))
