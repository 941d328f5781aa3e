"""An agent: the official anthropic SDK, routed only by HTTPS_PROXY and SSL_CERT_FILE.

Run as ``python sdk_messages.py '<json spec>'``; prints one JSON report on stdout. The SDK keeps
its default base URL (https://api.anthropic.com), so it only reaches the fake through the proxy.

Spec keys (all optional): model (default "claude-haiku-4-5-20251001"), content, max_tokens
(default 50), stream (bool), headers (extra request headers), max_retries.

Report: {"ok", "status", "headers", and "usage" + "content" on success, or "error_class" +
"error_body"}, plus "attempts": every HTTP attempt the SDK made (retries included).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anthropic
import httpx2


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    attempts: list[int | None] = []

    def on_request(request: httpx2.Request) -> None:
        attempts.append(None)

    def on_response(response: httpx2.Response) -> None:
        attempts[-1] = response.status_code

    http_client = anthropic.DefaultHttpxClient(
        event_hooks={"request": [on_request], "response": [on_response]}
    )
    options: dict[str, Any] = {"http_client": http_client, "api_key": "sk-ant-e2e"}
    if "max_retries" in spec:
        options["max_retries"] = spec["max_retries"]
    client = anthropic.Anthropic(**options)
    arguments: dict[str, Any] = {
        "model": spec.get("model", "claude-haiku-4-5-20251001"),
        "max_tokens": spec.get("max_tokens", 50),
        "messages": [{"role": "user", "content": spec.get("content", "Say hello.")}],
        "extra_headers": spec.get("headers", {}),
    }
    report: dict[str, Any]
    try:
        if spec.get("stream"):
            with client.messages.stream(**arguments) as stream:
                text = "".join(stream.text_stream)
                message = stream.get_final_message()
                headers = dict(stream.response.headers)
        else:
            raw = client.messages.with_raw_response.create(**arguments)
            message, headers = raw.parse(), dict(raw.headers)
            text = "".join(b.text for b in message.content if b.type == "text")
        report = {
            "ok": True,
            "status": 200,
            "headers": headers,
            "content": text,
            "usage": message.usage.model_dump(),
        }
    except anthropic.APIStatusError as e:
        report = {
            "ok": False,
            "status": e.status_code,
            "headers": dict(e.response.headers),
            "error_class": type(e).__name__,
            "error_body": e.body,
        }
    report["attempts"] = attempts
    print(json.dumps(report))


if __name__ == "__main__":
    main()
