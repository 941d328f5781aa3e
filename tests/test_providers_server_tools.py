"""Which requests enable tools the provider runs and bills per use (the proxy cannot hold their
cost), in each provider's own request shape; tools the client runs are not among them."""

import json
from typing import Any

import pytest

from spendbrake.providers import ANTHROPIC, GEMINI, OPENAI, classify_route
from spendbrake.providers.base import CallRequest

USER = {"role": "user", "content": "What happened in Lisbon today?"}
FUNCTION = {"name": "lookup", "description": "d", "input_schema": {"type": "object"}}


def parse(provider: Any, path: str, body: dict[str, Any]) -> CallRequest:
    api = classify_route(provider, "POST", path).api
    assert api is not None
    return api.parse(json.dumps(body).encode(), path)


@pytest.mark.parametrize(
    ("tools", "extra", "expected"),
    [
        ([{"type": "web_search_20250305", "name": "web_search"}], {}, ("web_search",)),
        ([{"type": "web_fetch_20250910", "name": "web_fetch"}], {}, ("web_fetch",)),
        ([{"type": "code_execution_20250825", "name": "code_execution"}], {}, ("code_execution",)),
        ([{"type": "tool_search_tool_regex_20251119", "name": "s"}], {}, ("tool_search",)),
        ([FUNCTION], {"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, ("mcp",)),
        # Run by the client: billed as tokens only.
        ([FUNCTION, {"type": "bash_20250124", "name": "bash"}], {}, ()),
        ([{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}], {}, ()),
        ([{"type": "computer_20250124", "name": "computer", "display_width_px": 1024,
           "display_height_px": 768}], {}, ()),
    ],
)  # fmt: skip
def test_anthropic_server_tools_are_named(
    tools: list[dict[str, Any]], extra: dict[str, Any], expected: tuple[str, ...]
) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [USER], "tools": tools}
    assert parse(ANTHROPIC, "/v1/messages", {**body, **extra}).server_tools == expected


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([{"type": "web_search"}], ("web_search",)),
        ([{"type": "web_search_preview_2025_03_11"}], ("web_search",)),
        ([{"type": "file_search", "vector_store_ids": ["vs_1"]}], ("file_search",)),
        ([{"type": "code_interpreter", "container": {"type": "auto"}}], ("code_execution",)),
        ([{"type": "image_generation"}, {"type": "mcp", "server_label": "x"}],
         ("image_generation", "mcp")),
        ([{"type": "function", "name": "f", "parameters": {}}, {"type": "local_shell"}], ()),
        ([{"type": "computer_use_preview", "display_width": 1, "display_height": 1,
           "environment": "browser"}], ()),
    ],
)  # fmt: skip
def test_openai_responses_built_in_tools_are_named(
    tools: list[dict[str, Any]], expected: tuple[str, ...]
) -> None:
    body = {"model": "gpt-4.1", "input": "hi", "tools": tools}
    assert parse(OPENAI, "/v1/responses", body).server_tools == expected


def test_chat_completions_search_is_a_server_tool() -> None:
    body = {"model": "gpt-4o-search-preview", "messages": [USER], "web_search_options": {}}
    assert parse(OPENAI, "/v1/chat/completions", body).server_tools == ("web_search",)
    plain = {
        "model": "gpt-4o",
        "messages": [USER],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    assert parse(OPENAI, "/v1/chat/completions", plain).server_tools == ()


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([{"googleSearch": {}}], ("web_search",)),
        ([{"google_search_retrieval": {}}], ("web_search",)),
        ([{"codeExecution": {}}, {"urlContext": {}}], ("code_execution", "url_context")),
        ([{"functionDeclarations": [{"name": "f"}]}], ()),
    ],
)
def test_gemini_server_tools_are_named(
    tools: list[dict[str, Any]], expected: tuple[str, ...]
) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "tools": tools}
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    assert parse(GEMINI, path, body).server_tools == expected
