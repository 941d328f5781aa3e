"""Requests rewritten by the governor (a cheaper model, a lower max output), each in its API's
own fields; everything else in the request is left as the client wrote it."""

import json
from typing import Any

import pytest

from spendbrake.providers import (
    ANTHROPIC,
    AZURE,
    COMPATIBLE,
    GEMINI,
    OPENAI,
    Provider,
    classify_route,
)
from spendbrake.providers.base import Rewrite

MISTRAL = next(p for p in COMPATIBLE if p.id == "mistral")
CHEAPER = Rewrite(model="cheap-model")
CAPPED = Rewrite(max_output=300)


def rewrite(
    provider: Provider, path: str, body: dict[str, Any], change: Rewrite
) -> tuple[dict[str, Any], str]:
    api = classify_route(provider, "POST", path).api
    assert api is not None
    new_body, new_path = api.rewritten(json.dumps(body).encode(), path, change)
    parsed = api.parse(new_body, new_path)  # the result is still a request the API reads
    if change.model:
        assert parsed.model == change.model
    if change.max_output:
        assert parsed.max_output == change.max_output
    return json.loads(new_body), new_path


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**CHAT, "max_tokens": 4000}, "max_tokens"),
        ({**CHAT, "max_completion_tokens": 4000}, "max_completion_tokens"),
        (CHAT, "max_completion_tokens"),  # unset: the field OpenAI's reasoning models accept
    ],
)
def test_openai_chat_caps_the_field_the_client_used(body: dict[str, Any], field: str) -> None:
    new, path = rewrite(OPENAI, "/v1/chat/completions", body, CAPPED)
    assert new[field] == 300
    assert {k: v for k, v in new.items() if k != field} == {
        k: v for k, v in body.items() if k != field
    }
    assert path == "/v1/chat/completions"


def test_a_compatible_host_is_capped_in_max_tokens() -> None:
    new, _ = rewrite(MISTRAL, "/v1/chat/completions", {**CHAT, "model": "mistral-large"}, CAPPED)
    assert new["max_tokens"] == 300
    assert "max_completion_tokens" not in new


def test_the_model_is_swapped_in_a_json_body() -> None:
    new, _ = rewrite(OPENAI, "/v1/chat/completions", CHAT, CHEAPER)
    assert new == {**CHAT, "model": "cheap-model"}
    claude = {"model": "claude-opus-4-5", "max_tokens": 9000, "messages": CHAT["messages"]}
    new, _ = rewrite(ANTHROPIC, "/v1/messages", claude, Rewrite("claude-haiku-4-5", 2000))
    assert (new["model"], new["max_tokens"]) == ("claude-haiku-4-5", 2000)
    responses = {"model": "gpt-4.1", "input": "hi"}
    new, _ = rewrite(OPENAI, "/v1/responses", responses, Rewrite("gpt-4.1-mini", 50))
    assert (new["model"], new["max_output_tokens"]) == ("gpt-4.1-mini", 50)


def test_gemini_takes_the_model_in_the_url_and_the_cap_in_generation_config() -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"temperature": 0.1},
    }
    path = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    new, new_path = rewrite(GEMINI, path, body, Rewrite("gemini-2.5-flash", 128))
    assert new_path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert new["generationConfig"] == {"temperature": 0.1, "maxOutputTokens": 128}


def test_an_azure_deployment_is_swapped_in_the_url() -> None:
    path = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    body = {"messages": CHAT["messages"], "max_tokens": 1000}
    new, new_path = rewrite(AZURE, path, body, Rewrite("gpt4o-mini-prod", 100))
    assert new_path == "/openai/deployments/gpt4o-mini-prod/chat/completions?api-version=2024-10-21"
    assert new["max_tokens"] == 100
    assert "model" not in new


def test_a_tuned_gemini_model_keeps_its_collection_in_the_url() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    path = "/v1beta/tunedModels/my-tune-1:generateContent"
    api = classify_route(GEMINI, "POST", path).api
    assert api is not None
    _, new_path = api.rewritten(json.dumps(body).encode(), path, Rewrite(model="my-tune-2"))
    assert new_path == "/v1beta/tunedModels/my-tune-2:generateContent"


def test_claude_thinking_keeps_its_budget_below_a_capped_max_tokens() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 20_000,
        "thinking": {"type": "enabled", "budget_tokens": 16_000},
        "messages": CHAT["messages"],
    }
    api = classify_route(ANTHROPIC, "POST", "/v1/messages").api
    assert api is not None
    assert api.parse(json.dumps(body).encode(), "/v1/messages").min_output == 16_001
