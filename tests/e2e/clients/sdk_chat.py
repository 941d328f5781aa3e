"""An agent: the official openai SDK, routed only by HTTPS_PROXY and SSL_CERT_FILE.

Run as ``python sdk_chat.py '<json spec>'``; prints one JSON report on stdout. The SDK keeps its
default base URL (https://api.openai.com/v1), so it only reaches the fake through the proxy.

Spec keys (all optional):
  endpoint        "chat" (default) or "images" (a route spendbrake does not meter)
  model           default "gpt-4o-mini"
  content         the user message; "{i}" is replaced by the call's index
  content_repeat  int: the message is the content this many times over (a giant prompt)
  max_tokens      int
  stream          bool
  include_usage   bool: ask for stream_options.include_usage
  headers         extra request headers
  max_retries     the SDK's max_retries (default: the SDK's own default)
  calls           how many calls to make in a row (default 1); stops at the first error
  timeout         the SDK's timeout in seconds

Report: {"calls": [...], "requests": [...]}. Each call: ok, status, headers, and either model,
usage, content, chunks (streams; t = seconds since the call started) or error_class, error_body,
elapsed (seconds the failed call took).
"requests" lists every HTTP attempt the SDK made (retries included) with its status.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx2
import openai


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    attempts: list[dict[str, Any]] = []

    def on_request(request: httpx2.Request) -> None:
        attempts.append(
            {
                "method": request.method,
                "url": str(request.url),
                "retry_count": request.headers.get("x-stainless-retry-count"),
                "status": None,
            }
        )

    def on_response(response: httpx2.Response) -> None:
        attempts[-1]["status"] = response.status_code

    http_client = openai.DefaultHttpxClient(
        event_hooks={"request": [on_request], "response": [on_response]}
    )
    options: dict[str, Any] = {"http_client": http_client}
    for name in ("max_retries", "timeout"):
        if name in spec:
            options[name] = spec[name]
    client = openai.OpenAI(**options)

    calls: list[dict[str, Any]] = []
    for i in range(spec.get("calls", 1)):
        report = one_call(client, spec, i)
        calls.append(report)
        if not report["ok"]:
            break
    print(json.dumps({"calls": calls, "requests": attempts}))


def one_call(client: openai.OpenAI, spec: dict[str, Any], i: int) -> dict[str, Any]:
    model = spec.get("model", "gpt-4o-mini")
    content = spec.get("content", "Say hello.").replace("{i}", f"{i:02d}")
    content *= spec.get("content_repeat", 1)
    headers = spec.get("headers", {})
    started = time.monotonic()
    try:
        if spec.get("endpoint") == "images":
            client.images.generate(model="gpt-image-1", prompt=content, extra_headers=headers)
            raise AssertionError("the images call was expected to be refused")
        arguments: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "extra_headers": headers,
        }
        if "max_tokens" in spec:
            arguments["max_tokens"] = spec["max_tokens"]
        if spec.get("stream"):
            arguments["stream"] = True
            if spec.get("include_usage"):
                arguments["stream_options"] = {"include_usage": True}
        raw = client.chat.completions.with_raw_response.create(**arguments)
        report: dict[str, Any] = {
            "ok": True,
            "status": raw.status_code,
            "headers": dict(raw.headers),
            "t_headers": time.monotonic() - started,
        }
        if spec.get("stream"):
            chunks = []
            for chunk in raw.parse():
                delta = chunk.choices[0].delta.content if chunk.choices else None
                chunks.append(
                    {
                        "t": time.monotonic() - started,
                        "choices": len(chunk.choices),
                        "content": delta,
                        "model": chunk.model,
                        "usage": chunk.usage.model_dump() if chunk.usage else None,
                    }
                )
            report["chunks"] = chunks
            report["content"] = "".join(c["content"] or "" for c in chunks)
        else:
            completion = raw.parse()
            report["model"] = completion.model
            report["usage"] = completion.usage.model_dump() if completion.usage else None
            report["content"] = completion.choices[0].message.content
        return report
    except openai.APIStatusError as e:
        return {
            "ok": False,
            "status": e.status_code,
            "headers": dict(e.response.headers),
            "error_class": type(e).__name__,
            "error_body": e.response.json(),
            "elapsed": time.monotonic() - started,
        }
    except Exception as e:  # a broken connection, a stream cut short: report, don't crash
        return {"ok": False, "status": None, "error_class": type(e).__name__, "error": str(e)}


if __name__ == "__main__":
    main()
