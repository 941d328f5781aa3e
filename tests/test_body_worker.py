"""The body worker: a giant body's JSON work in a process of its own, with the same answers as
in the proxy, failing the call it was given when it dies, and starting afresh."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from spendbrake import governor
from spendbrake.body_worker import BodyWorker, BodyWorkerFailed
from spendbrake.providers import ANTHROPIC, AZURE, GEMINI, OPENAI, Provider, classify_route
from spendbrake.providers.base import Api, CallRequest, Rewrite, UnreadableRequest
from spendbrake.providers.openai_responses import Responses
from spendbrake.tokens import TokenEstimator

# Several messages with text in several scripts, a lone surrogate (valid JSON, not UTF-8) and
# an image: everything parsing, counting and fingerprinting look at.
TEXT = "Summarise the attached logs. Ünïcödé, 漢字, emoji 🚀, numbers 12345.\n" * 2_000
CHAT = {
    "model": "gpt-4o",
    "max_tokens": 300,
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": TEXT + "\ud83d"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": TEXT},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ],
}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 300,
    "system": "You are terse.",
    "messages": [{"role": "user", "content": [{"type": "text", "text": TEXT}]}],
}
GENERATE = {"contents": [{"role": "user", "parts": [{"text": TEXT}]}]}
RESPONSES = {"model": "gpt-4o", "input": TEXT, "previous_response_id": "resp_earlier"}
EMBEDDINGS = {"model": "text-embedding-3-small", "input": [TEXT, TEXT]}

CASES: list[tuple[Provider, str, dict[str, Any]]] = [
    (OPENAI, "/v1/chat/completions", CHAT),
    (OPENAI, "/v1/responses", RESPONSES),
    (OPENAI, "/v1/embeddings", EMBEDDINGS),
    (ANTHROPIC, "/v1/messages", MESSAGES),
    (GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent", GENERATE),
    (AZURE, "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", CHAT),
]
IDS = ["chat", "responses", "embeddings", "messages", "gemini", "azure"]


@pytest.fixture(scope="module")
def worker() -> Iterator[BodyWorker]:
    started = BodyWorker()
    yield started
    started.close()


@pytest.fixture(scope="module")
def estimator() -> TokenEstimator:
    return TokenEstimator()


def api_of(provider: Provider, path: str) -> Api:
    api = classify_route(provider, "POST", path).api
    assert api is not None
    return api


def in_proxy(request: CallRequest, estimator: TokenEstimator) -> int:
    return governor.prompt_upper_bound(request, estimator)


@pytest.fixture(params=CASES, ids=IDS)
def call(request: pytest.FixtureRequest) -> tuple[Api, str, bytes]:
    """A metered API, its path and a body for it."""
    provider, path, data = request.param
    api = api_of(provider, path)
    if isinstance(api, Responses):
        # The conversation a previous response left on the provider: the worker knows it too.
        api = Responses()  # not the registry's own, which other tests use
        api.sizes.remember("resp_earlier", 123_456)
    return api, path, json.dumps(data).encode()


def test_a_body_is_parsed_and_counted_in_the_worker_as_in_the_proxy(
    worker: BodyWorker, estimator: TokenEstimator, call: tuple[Api, str, bytes]
) -> None:
    api, path, body = call

    parsed = worker.parse(api, body, path)
    here = api.parse(body, path)

    assert parsed.prompt_texts == ()  # the texts stay in the worker
    assert replace(parsed, counted_prompt=None) == replace(here, prompt_texts=())
    assert parsed.counted_prompt is not None
    assert parsed.counted_prompt.tokens > 1_000
    assert in_proxy(parsed, estimator) == in_proxy(here, estimator)


def test_a_body_is_rewritten_in_the_worker_as_in_the_proxy(
    worker: BodyWorker, estimator: TokenEstimator, call: tuple[Api, str, bytes]
) -> None:
    api, path, body = call
    change = Rewrite(model="gpt-4o-mini", max_output=64)

    rewritten, new_path, parsed = worker.rewritten(api, body, path, change)
    here_body, here_path = api.rewritten(body, path, change)
    here = api.parse(here_body, here_path)

    assert (rewritten, new_path) == (here_body, here_path)
    assert replace(parsed, counted_prompt=None) == replace(here, prompt_texts=())
    assert in_proxy(parsed, estimator) == in_proxy(here, estimator)


def test_usage_is_asked_for_in_the_worker_as_in_the_proxy(worker: BodyWorker) -> None:
    api = api_of(OPENAI, "/v1/chat/completions")
    body = json.dumps({**CHAT, "stream": True}).encode()

    asked = worker.with_usage_requested(api, body)

    assert asked == api.with_usage_requested(body)
    assert json.loads(asked)["stream_options"] == {"include_usage": True}


def test_an_unreadable_body_is_the_same_refusal_as_in_the_proxy(worker: BodyWorker) -> None:
    api = api_of(OPENAI, "/v1/chat/completions")
    with pytest.raises(UnreadableRequest, match="not JSON"):
        worker.parse(api, b'{"model": "gpt-4o", "messages": [', "/v1/chat/completions")
    # The worker carries on.
    assert worker.parse(api, json.dumps(CHAT).encode(), "").model == "gpt-4o"


class DyingApi:
    """Ends the worker process in the middle of a body: as a crash or the OOM killer would."""

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        os._exit(3)


class UnsendableError(Exception):
    def __init__(self) -> None:
        super().__init__("cannot travel")
        self.handle = lambda: None  # a lambda does not pickle


class RaisingApi:
    def parse(self, body: bytes, path: str = "") -> CallRequest:
        raise UnsendableError


def test_a_worker_that_dies_fails_its_body_and_the_next_one_starts_afresh() -> None:
    worker = BodyWorker()
    api = api_of(OPENAI, "/v1/chat/completions")
    try:
        with pytest.raises(BodyWorkerFailed, match="body worker failed"):
            worker.parse(DyingApi(), b"{}", "")  # type: ignore[arg-type]
        assert worker.pid is None
        assert worker.parse(api, json.dumps(CHAT).encode(), "").model == "gpt-4o"
    finally:
        worker.close()


def test_an_error_that_cannot_travel_back_arrives_as_its_words() -> None:
    worker = BodyWorker()
    try:
        with pytest.raises(BodyWorkerFailed, match="UnsendableError: cannot travel"):
            worker.parse(RaisingApi(), b"{}", "")  # type: ignore[arg-type]
    finally:
        worker.close()


def test_closing_ends_the_worker_process() -> None:
    worker = BodyWorker()
    worker.parse(api_of(OPENAI, "/v1/chat/completions"), json.dumps(CHAT).encode(), "")
    pid = worker.pid
    assert pid is not None
    os.kill(pid, 0)  # running

    worker.close()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


class SlowApi:
    """Takes longer over a body than the worker may: as the tokenizer does over some texts."""

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        time.sleep(30)
        raise AssertionError("the worker should have been stopped by now")


def test_a_body_that_takes_too_long_is_refused_and_the_worker_started_afresh() -> None:
    worker = BodyWorker(timeout_s=1.0)
    api = api_of(OPENAI, "/v1/chat/completions")
    try:
        with pytest.raises(BodyWorkerFailed, match="took longer than 1 s"):
            worker.parse(SlowApi(), b"{}", "")  # type: ignore[arg-type]
        assert worker.parse(api, json.dumps(CHAT).encode(), "").model == "gpt-4o"
    finally:
        worker.close()


def test_the_worker_imports_nothing_from_the_directory_the_proxy_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under spendbrake run the proxy runs in the agent's directory: a json.py the agent wrote
    there must not be what parses (and counts) its prompts."""
    planted = tmp_path / "planted"
    (tmp_path / "json.py").write_text(f"open({str(planted)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    worker = BodyWorker()
    try:
        parsed = worker.parse(api_of(OPENAI, "/v1/chat/completions"), json.dumps(CHAT).encode(), "")
    finally:
        worker.close()

    assert parsed.model == "gpt-4o"
    assert not planted.exists()
