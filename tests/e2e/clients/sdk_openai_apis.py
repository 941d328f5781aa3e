"""An agent calling OpenAI's Responses, Embeddings and legacy Completions APIs with the official
openai SDK.

Run as ``python sdk_openai_apis.py '<json spec>'``; prints one JSON report on stdout.
Spec: {"api": "responses" | "embeddings" | "completions", "model", "input" (responses,
embeddings), "prompt", "max_tokens", "n", "include_usage" (completions), "stream" (responses,
completions), "previous_response_id", "max_output_tokens" (responses), "headers",
"max_retries" (default 0)}. Routed only by HTTPS_PROXY.

A failed call reports ok false, status, error_class, message (the exception's), error_body (the
response's JSON). Every report has attempts: the status of each HTTP attempt the SDK made.
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

    client = openai.OpenAI(
        max_retries=spec.get("max_retries", 0),
        http_client=openai.DefaultHttpxClient(event_hooks={"response": [on_response]}),
    )
    headers = spec.get("headers", {})
    report: dict[str, Any]
    try:
        if spec["api"] == "completions":
            report = completions(client, spec, headers)
        elif spec["api"] == "embeddings":
            raw = client.embeddings.with_raw_response.create(
                model=spec["model"], input=spec["input"], extra_headers=headers
            )
            result = raw.parse()
            report = {
                "ok": True,
                "headers": dict(raw.headers),
                "usage": result.usage.model_dump(),
                "vectors": len(result.data),
            }
        else:
            arguments: dict[str, Any] = {
                "model": spec["model"],
                "input": spec["input"],
                "extra_headers": headers,
            }
            for key in ("previous_response_id", "max_output_tokens"):
                if key in spec:
                    arguments[key] = spec[key]
            if spec.get("stream"):
                events = list(client.responses.create(stream=True, **arguments))
                final = events[-1].response  # type: ignore[union-attr]
                report = {"ok": True, "events": [e.type for e in events]}
            else:
                raw = client.responses.with_raw_response.create(**arguments)
                final = raw.parse()
                report = {"ok": True, "headers": dict(raw.headers)}
            report.update(id=final.id, text=final.output_text, usage=final.usage.model_dump())
    except openai.APIStatusError as e:
        report = {
            "ok": False,
            "status": e.status_code,
            "error_class": type(e).__name__,
            "message": e.message,
            "error_body": e.response.json(),
        }
    print(json.dumps({**report, "attempts": attempts}))


def completions(client: openai.OpenAI, spec: dict[str, Any], headers: Any) -> dict[str, Any]:
    """``client.completions.create``: the answers' texts and usage; for a stream, also what
    each chunk held (``chunks``: [{"choices": n, "usage": bool}])."""
    arguments: dict[str, Any] = {
        "model": spec["model"],
        "prompt": spec["prompt"],
        "extra_headers": headers,
    }
    for key in ("max_tokens", "n"):
        if key in spec:
            arguments[key] = spec[key]
    if spec.get("include_usage"):
        arguments["stream_options"] = {"include_usage": True}
    if not spec.get("stream"):
        raw = client.completions.with_raw_response.create(**arguments)
        completion = raw.parse()
        return {
            "ok": True,
            "headers": dict(raw.headers),
            "model": completion.model,
            "texts": [choice.text for choice in completion.choices],
            "usage": completion.usage.model_dump(exclude_unset=True) if completion.usage else None,
        }
    raw_stream = client.completions.with_raw_response.create(stream=True, **arguments)
    chunks = list(raw_stream.parse())
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    usages = [chunk.usage for chunk in chunks if chunk.usage]
    return {
        "ok": True,
        "headers": dict(raw_stream.headers),
        "model": chunks[0].model,
        "texts": [texts[index] for index in sorted(texts)],
        "usage": usages[-1].model_dump(exclude_unset=True) if usages else None,
        "chunks": [{"choices": len(c.choices), "usage": bool(c.usage)} for c in chunks],
    }


if __name__ == "__main__":
    main()
