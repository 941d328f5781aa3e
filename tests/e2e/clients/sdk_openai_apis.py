"""An agent calling OpenAI's Responses and Embeddings APIs with the official openai SDK.

Run as ``python sdk_openai_apis.py '<json spec>'``; prints one JSON report on stdout.
Spec: {"api": "responses" | "embeddings", "model", "input", "stream" (responses),
"previous_response_id", "max_output_tokens", "headers"}. Routed only by HTTPS_PROXY.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import openai


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    client = openai.OpenAI(max_retries=0)
    headers = spec.get("headers", {})
    report: dict[str, Any]
    try:
        if spec["api"] == "embeddings":
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
        report = {"ok": False, "status": e.status_code, "error_body": e.response.json()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
