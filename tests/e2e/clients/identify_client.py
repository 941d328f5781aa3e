"""A client that makes one chat call and asks ``spendbrake.local/whoami``, through the proxy.

Run as ``python identify_client.py '<json spec>'``; prints one JSON report on stdout. The spec
(and so this process's command line) may carry a marker that a process rule matches.

Spec keys:
  library        "requests", "httpx" or "openai" (the official SDK, routed by HTTPS_PROXY alone)
  proxy          the proxy URL (requests, httpx); the openai SDK reads HTTPS_PROXY
  ca             the CA bundle to trust (requests, httpx); the SDK reads SSL_CERT_FILE
  headers        extra headers on both requests
  api_key        the provider API key the call carries
  marker         anything; it only has to be on the command line

Report: {"status": the chat call's HTTP status, "agent_header": its x-spendbrake-agent,
"whoami": the JSON whoami answered, "whoami_status": its status}.
"""

from __future__ import annotations

import json
import sys
from typing import Any

CHAT_URL = "https://api.openai.com/v1/chat/completions"
WHOAMI_URL = "https://spendbrake.local/whoami"


def chat_body(marker: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"who am I? {marker}"}],
        "max_tokens": 16,
    }


def with_requests(spec: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    import requests

    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": spec["proxy"]}
    session.verify = spec["ca"]
    chat = session.post(CHAT_URL, json=chat_body(spec.get("marker", "")), headers=headers)
    whoami = session.get(WHOAMI_URL, headers=headers)
    return report(chat.status_code, chat.headers, whoami.status_code, whoami.json())


def with_httpx(spec: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    import httpx

    with httpx.Client(proxy=spec["proxy"], verify=spec["ca"], trust_env=False) as client:
        chat = client.post(CHAT_URL, json=chat_body(spec.get("marker", "")), headers=headers)
        whoami = client.get(WHOAMI_URL, headers=headers)
    return report(chat.status_code, chat.headers, whoami.status_code, whoami.json())


def with_openai(spec: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    import httpx2
    import openai

    client = openai.OpenAI(api_key=spec.get("api_key", "sk-none"), max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        **chat_body(spec.get("marker", "")), extra_headers=headers
    )
    with httpx2.Client() as plain:  # the same environment: HTTPS_PROXY and SSL_CERT_FILE
        key = {"authorization": f"Bearer {client.api_key}"}  # as the SDK sends it
        whoami = plain.get(WHOAMI_URL, headers={**headers, **key})
    return report(raw.status_code, raw.headers, whoami.status_code, whoami.json())


def report(status: int, headers: Any, whoami_status: int, whoami: Any) -> dict[str, Any]:
    return {
        "status": status,
        "agent_header": headers.get("x-spendbrake-agent"),
        "whoami_status": whoami_status,
        "whoami": whoami,
    }


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    headers = dict(spec.get("headers", {}))
    library = spec["library"]
    if "api_key" in spec and library != "openai":  # the SDK sends its own
        headers["authorization"] = f"Bearer {spec['api_key']}"
    run = {"requests": with_requests, "httpx": with_httpx, "openai": with_openai}[library]
    print(json.dumps(run(spec, headers)))


if __name__ == "__main__":
    main()
