"""The loop brake's fingerprint: the same request, however it is sent, and only that."""

import json
from typing import Any

from spendbrake.providers import ANTHROPIC, GEMINI, OPENAI, classify_route

IMAGE_A = "data:image/png;base64,QUFBQQ=="
IMAGE_B = "data:image/png;base64,QkJCQg=="


def fingerprint(provider: Any, path: str, body: dict[str, Any]) -> str:
    api = classify_route(provider, "POST", path).api
    assert api is not None
    return api.parse(json.dumps(body).encode(), path).fingerprint


def chat(image: str, **fields: Any) -> dict[str, Any]:
    content = [{"type": "text", "text": "Describe this"}, {"type": "image_url",
               "image_url": {"url": image}}]  # fmt: skip
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **fields}


def test_how_a_request_is_sent_does_not_change_what_it_asks() -> None:
    plain = fingerprint(OPENAI, "/v1/chat/completions", chat(IMAGE_A))
    varied = chat(IMAGE_A, stream=True, temperature=0.9, max_tokens=50, user="u-1", seed=3)
    assert fingerprint(OPENAI, "/v1/chat/completions", varied) == plain


def test_a_different_image_model_or_message_is_a_different_request() -> None:
    base = fingerprint(OPENAI, "/v1/chat/completions", chat(IMAGE_A))
    assert fingerprint(OPENAI, "/v1/chat/completions", chat(IMAGE_B)) != base
    assert fingerprint(OPENAI, "/v1/chat/completions", {**chat(IMAGE_A), "model": "o3"}) != base
    claude = {"model": "claude-sonnet-4-5", "max_tokens": 10,
              "messages": [{"role": "user", "content": "a"}]}  # fmt: skip
    other = {**claude, "messages": [{"role": "user", "content": "b"}]}
    assert fingerprint(ANTHROPIC, "/v1/messages", claude) != fingerprint(
        ANTHROPIC, "/v1/messages", other
    )


def test_gemini_takes_the_model_from_the_url() -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    flash = fingerprint(GEMINI, "/v1beta/models/gemini-2.5-flash:generateContent", body)
    pro = fingerprint(GEMINI, "/v1beta/models/gemini-2.5-pro:generateContent", body)
    assert flash != pro
    configured = {**body, "generationConfig": {"temperature": 0.3, "maxOutputTokens": 9}}
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    assert fingerprint(GEMINI, path, configured) == flash
