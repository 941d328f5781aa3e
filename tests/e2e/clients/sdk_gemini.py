"""An agent: the official google-genai SDK, routed only by HTTPS_PROXY and SSL_CERT_FILE.

Run as ``python sdk_gemini.py '<json spec>'``; prints one JSON report on stdout. The SDK keeps
its default endpoint (https://generativelanguage.googleapis.com), so it only reaches the fake
through the proxy. Spec: model, content, stream (bool), max_output_tokens, headers.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from google import genai
from google.genai import errors, types


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    client = genai.Client(api_key="test-key")
    config = types.GenerateContentConfig(
        max_output_tokens=spec.get("max_output_tokens"),
        http_options=types.HttpOptions(headers=spec.get("headers", {})),
    )
    arguments: dict[str, Any] = {
        "model": spec.get("model", "gemini-2.5-flash"),
        "contents": spec.get("content", "Say hello."),
        "config": config,
    }
    report: dict[str, Any]
    try:
        if spec.get("stream"):
            chunks = list(client.models.generate_content_stream(**arguments))
            text = "".join(c.text or "" for c in chunks)
            usage = chunks[-1].usage_metadata
        else:
            response = client.models.generate_content(**arguments)
            text, usage = response.text or "", response.usage_metadata
        report = {"ok": True, "text": text, "usage": usage.model_dump() if usage else None}
    except errors.APIError as e:
        report = {
            "ok": False,
            "error_class": type(e).__name__,
            "code": e.code,
            "status": e.status,
            "message": e.message,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
