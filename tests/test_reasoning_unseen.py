"""Reasoning a stream does not show: what a request asks, what a model does by default.

A stream cut before its usage is charged the text it relayed, unless the model may have spent
output on reasoning that never crossed the proxy; then it is charged all it was held for
(settlement.from_stream, driven through the addon in test_mitm_enforcement)."""

import json
from decimal import Decimal
from typing import Any

import pytest

from spendbrake.pricing import OverridePrice, Pricer, reasons_unseen
from spendbrake.providers.anthropic import parse_messages_request
from spendbrake.providers.gemini import parse_generate_request
from spendbrake.providers.openai import parse_chat_request
from spendbrake.providers.openai_responses import ResponseSizes, parse_responses_request

HI = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> bool | None:
    return parse_chat_request(
        json.dumps({"model": "m", "messages": HI, **fields}).encode()
    ).reasoning


@pytest.mark.parametrize(
    ("fields", "reasoning"),
    [
        ({}, None),
        ({"reasoning_effort": "low"}, True),
        ({"reasoning_effort": "minimal"}, True),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning": {"effort": "high"}}, True),  # OpenRouter
        ({"reasoning": {"exclude": True}}, True),  # hidden from the answer, still billed
        ({"reasoning": {"enabled": False}}, False),
        ({"reasoning": {"effort": "none"}}, False),
        ({"thinking": {"type": "enabled"}}, True),  # DeepSeek, GLM, Kimi
        ({"thinking": {"type": "disabled"}}, False),
        ({"thinking": {"type": "auto"}}, None),
        ({"reasoning_effort": 3}, None),  # not a setting: the model's default
    ],
)
def test_chat_completions_reads_every_host_s_reasoning_switch(
    fields: dict[str, Any], reasoning: bool | None
) -> None:
    assert chat(**fields) is reasoning


@pytest.mark.parametrize(
    ("fields", "reasoning"),
    [
        ({}, None),
        ({"reasoning": {"summary": "auto"}}, None),
        ({"reasoning": {"effort": "medium"}}, True),
        ({"reasoning": {"effort": "none"}}, False),
    ],
)
def test_responses_reads_reasoning_effort(fields: dict[str, Any], reasoning: bool | None) -> None:
    body = json.dumps({"model": "m", "input": "hi", **fields}).encode()
    assert parse_responses_request(body, ResponseSizes()).reasoning is reasoning


@pytest.mark.parametrize(
    ("fields", "reasoning"),
    [
        ({}, False),  # Claude thinks only when asked
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2000}, True),
        ({"thinking": {"type": "adaptive"}}, True),
        ({"thinking": {"type": "disabled"}}, False),
    ],
)
def test_anthropic_thinks_only_when_asked(fields: dict[str, Any], reasoning: bool) -> None:
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": HI, **fields})
    assert parse_messages_request(body.encode()).reasoning is reasoning


@pytest.mark.parametrize(
    ("thinking", "reasoning"),
    [
        (None, None),
        ({"thinkingBudget": 0}, False),
        ({"thinkingBudget": 1024}, True),
        ({"thinkingBudget": -1}, True),  # dynamic
        ({"thinkingLevel": "low"}, True),
        ({"includeThoughts": True}, None),
    ],
)
def test_gemini_reads_its_thinking_config(
    thinking: dict[str, Any] | None, reasoning: bool | None
) -> None:
    config = {} if thinking is None else {"thinkingConfig": thinking}
    body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": config})
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert parse_generate_request(body.encode(), path).reasoning is reasoning


@pytest.mark.parametrize(
    ("model", "provider", "unseen"),
    [
        ("o3", None, True),
        ("gpt-5", None, True),
        ("gemini-2.5-pro", None, True),
        ("gpt-4o", None, False),
        ("gpt-4o-2024-08-06", None, False),  # a dated id follows its model's entry
        ("claude-sonnet-4-5", None, False),  # thinks only when the request asks
        ("anthropic/claude-sonnet-4.5", "openrouter", False),
        ("deepseek-reasoner", None, False),  # streams all its reasoning as text
        ("a-model-nobody-listed", None, True),  # unknown: the dearer settlement
    ],
)
def test_the_table_says_which_models_may_reason_unseen(
    model: str, provider: str | None, unseen: bool
) -> None:
    assert reasons_unseen(model, provider) is unseen


def test_the_operator_s_word_comes_first_then_the_published_model_s() -> None:
    rates = {"input_per_mtok": Decimal(1), "output_per_mtok": Decimal(2)}
    pricer = Pricer(
        {
            "gpt-4o": OverridePrice(**rates),  # a negotiated price: still gpt-4o
            "my-reasoner": OverridePrice(**rates),
            "my-chat-model": OverridePrice(**rates, reasons_unseen=False),
            "my-deployment": OverridePrice(price_as="gpt-4o"),
            "my-o3": OverridePrice(price_as="gpt-4o", reasons_unseen=True),
        }
    )
    assert pricer.reasons_unseen("gpt-4o", "openai") is False
    assert pricer.reasons_unseen("my-reasoner", "openai") is True
    assert pricer.reasons_unseen("my-chat-model", "openai") is False
    assert pricer.reasons_unseen("my-deployment", "azure") is False
    assert pricer.reasons_unseen("my-o3", "azure") is True
