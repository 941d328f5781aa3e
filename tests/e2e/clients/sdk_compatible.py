"""An agent calling OpenAI-compatible hosts and Azure OpenAI with the official openai SDK.

Run as ``python sdk_compatible.py '<json spec>'``; prints one JSON report on stdout. The SDK is
pointed at the real host names (``openai.OpenAI(base_url=...)``, or ``openai.AzureOpenAI(
azure_endpoint=..., api_version=...)``) and reaches the fake only through HTTPS_PROXY.

Spec: {"calls": [call, ...]}, every call made in turn by this one process (an SDK import costs
about a second: one process for many calls keeps the tests fast). A call:
  name            its key in the report
  base_url        for openai.OpenAI, or
  azure_endpoint  and api_version, for openai.AzureOpenAI
  model           the model (Azure: the deployment)
  content         the user message
  max_tokens      int
  stream          bool
  headers         extra request headers (the agent, the fake's controls)

Report: {"calls": {name: result}}. A result: ok, status, headers, attempts (the status of every
HTTP attempt the SDK made, retries included), and either model, content, usage (the last usage
the SDK saw), chunks ([{"choices": n, "usage": bool}] for streams) or error_class, code, type,
message (the exception's), body (the SDK's parsed error).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx2
import openai


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    attempts: list[int] = []

    def on_response(response: httpx2.Response) -> None:
        attempts.append(response.status_code)

    http_client = openai.DefaultHttpxClient(event_hooks={"response": [on_response]})
    results: dict[str, Any] = {}
    for call in spec["calls"]:
        attempts.clear()
        result = one_call(client_for(call, http_client), call)
        results[call["name"]] = {**result, "attempts": list(attempts)}
    print(json.dumps({"calls": results}))


def client_for(call: dict[str, Any], http_client: httpx2.Client) -> openai.OpenAI:
    if "azure_endpoint" in call:
        return openai.AzureOpenAI(
            azure_endpoint=call["azure_endpoint"],
            api_version=call["api_version"],
            api_key="azure-e2e-test-key",
            http_client=http_client,
        )
    return openai.OpenAI(
        base_url=call["base_url"], api_key="sk-e2e-test-key", http_client=http_client
    )


def one_call(client: openai.OpenAI, call: dict[str, Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": call["model"],
        "messages": [{"role": "user", "content": call["content"]}],
        "max_tokens": call["max_tokens"],
        "extra_headers": call.get("headers", {}),
    }
    try:
        if call.get("stream"):
            raw = client.chat.completions.with_raw_response.create(stream=True, **arguments)
            chunks = list(raw.parse())
            usages = [c.usage for c in chunks if c.usage]
            return {
                "ok": True,
                "status": raw.status_code,
                "headers": dict(raw.headers),
                "model": next((c.model for c in chunks if c.model), None),
                "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                "usage": usages[-1].model_dump() if usages else None,
                "chunks": [{"choices": len(c.choices), "usage": bool(c.usage)} for c in chunks],
            }
        raw = client.chat.completions.with_raw_response.create(**arguments)
        completion = raw.parse()
        return {
            "ok": True,
            "status": raw.status_code,
            "headers": dict(raw.headers),
            "model": completion.model,
            "content": completion.choices[0].message.content,
            "usage": completion.usage.model_dump() if completion.usage else None,
        }
    except openai.APIStatusError as e:
        return {
            "ok": False,
            "status": e.status_code,
            "headers": dict(e.response.headers),
            "error_class": type(e).__name__,
            "code": e.code,
            "type": e.type,
            "message": e.message,
            "body": e.body,
        }


if __name__ == "__main__":
    main()
