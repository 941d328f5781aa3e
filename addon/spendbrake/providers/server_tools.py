"""Tools the provider runs itself, and bills per use on top of tokens.

A server-side search, fetch or code run has a fee per use and feeds its results back into the
prompt, and nothing in the request bounds either. A hold cannot be an upper bound for such a
call, so each adapter names the server tools a request enables and the proxy refuses them
unless the operator accepts that (``allow_server_tools`` in the configuration).

Names are the same across providers where the tool is: ``web_search``, ``web_fetch``,
``code_execution``, ``file_search``, ``image_generation``, ``mcp``, ``url_context``,
``google_maps``, ``tool_search``.
"""

from __future__ import annotations

import re
from typing import Any

# Anthropic versions its server tools by date: "web_search_20250305", "code_execution_20250825".
_ANTHROPIC_SERVER_TOOL = re.compile(
    r"(?P<name>web_search|web_fetch|code_execution|tool_search_tool_\w+?)_\d{8}"
)
# OpenAI Responses built-in tools that run on OpenAI's side; function, custom, computer use and
# local shell run on the client's.
_OPENAI_SERVER_TOOLS = {
    "web_search": "web_search",
    "web_search_preview": "web_search",
    "file_search": "file_search",
    "code_interpreter": "code_execution",
    "image_generation": "image_generation",
    "mcp": "mcp",
}
_GEMINI_SERVER_TOOLS = {
    "googleSearch": "web_search",
    "google_search": "web_search",
    "googleSearchRetrieval": "web_search",
    "google_search_retrieval": "web_search",
    "codeExecution": "code_execution",
    "code_execution": "code_execution",
    "urlContext": "url_context",
    "url_context": "url_context",
    "fileSearch": "file_search",
    "file_search": "file_search",
    "googleMaps": "google_maps",
    "google_maps": "google_maps",
}


def anthropic_server_tools(data: dict[str, Any]) -> tuple[str, ...]:
    names = []
    for tool in _tool_list(data.get("tools")):
        kind = tool.get("type")
        if isinstance(kind, str) and (match := _ANTHROPIC_SERVER_TOOL.fullmatch(kind)):
            name = match["name"]
            names.append("tool_search" if name.startswith("tool_search") else name)
    if data.get("mcp_servers"):
        names.append("mcp")
    return _unique(names)


def openai_responses_server_tools(data: dict[str, Any]) -> tuple[str, ...]:
    names = []
    for tool in _tool_list(data.get("tools")):
        kind = tool.get("type")
        if not isinstance(kind, str):
            continue
        # Dated variants: "web_search_2025_08_26", "web_search_preview_2025_03_11".
        base = re.sub(r"(_\d{4}_\d{2}_\d{2})$", "", kind)
        if base in _OPENAI_SERVER_TOOLS:
            names.append(_OPENAI_SERVER_TOOLS[base])
    return _unique(names)


def openai_chat_server_tools(data: dict[str, Any]) -> tuple[str, ...]:
    # The search models of Chat Completions search when asked to, for a fee per call.
    return ("web_search",) if data.get("web_search_options") is not None else ()


def gemini_server_tools(data: dict[str, Any]) -> tuple[str, ...]:
    names = []
    for tool in _tool_list(data.get("tools")):
        names += [_GEMINI_SERVER_TOOLS[key] for key in tool if key in _GEMINI_SERVER_TOOLS]
    return _unique(names)


def _tool_list(tools: Any) -> list[dict[str, Any]]:
    return [tool for tool in tools if isinstance(tool, dict)] if isinstance(tools, list) else []


def _unique(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))
