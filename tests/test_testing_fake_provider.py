"""The fake provider, exercised with the real `openai`, `anthropic` and `google-genai` SDKs.

No proxy between.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from cryptography import x509
from google import genai
from google.genai import types

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import AZURE_TEST_HOST, TestPKI, make_test_pki


def _strict_context(pki: TestPKI) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    # Python 3.13 turns this on by default; prove the test PKI already satisfies it.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def provider(pki: TestPKI) -> Iterator[FakeProvider]:
    with FakeProvider(pki) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean_provider(provider: FakeProvider) -> None:
    provider.reset()


@pytest.fixture(scope="module")
def client(pki: TestPKI, provider: FakeProvider) -> Iterator[openai.OpenAI]:
    # openai 3.x is built on httpx2: `DefaultHttpxClient` is an httpx2.Client with the SDK's
    # defaults, and `verify` wants an SSLContext (a CA path string is deprecated).
    http_client = openai.DefaultHttpxClient(verify=_strict_context(pki))
    sdk = openai.OpenAI(
        base_url=f"https://127.0.0.1:{provider.port}/v1",
        api_key="sk-test",
        http_client=http_client,
    )
    yield sdk
    sdk.close()


@pytest.fixture(scope="module")
def claude(pki: TestPKI, provider: FakeProvider) -> Iterator[anthropic.Anthropic]:
    # anthropic 2.x is built on httpx2 too; its base URL has no /v1 (the SDK adds it).
    sdk = anthropic.Anthropic(
        base_url=f"https://127.0.0.1:{provider.port}",
        api_key="sk-ant-test",
        http_client=anthropic.DefaultHttpxClient(verify=_strict_context(pki)),
    )
    yield sdk
    sdk.close()


@pytest.fixture(scope="module")
def gemini(pki: TestPKI, provider: FakeProvider) -> Iterator[genai.Client]:
    # google-genai 2.x builds its own httpx (0.28) clients; `client_args["verify"]` is the
    # SSLContext they get (without it the SDK builds one from SSL_CERT_FILE or certifi).
    sdk = genai.Client(
        api_key="test",
        http_options=types.HttpOptions(
            base_url=f"https://127.0.0.1:{provider.port}",
            client_args={"verify": _strict_context(pki)},
        ),
    )
    yield sdk
    sdk.close()


@pytest.fixture(scope="module")
def raw(pki: TestPKI, provider: FakeProvider) -> Iterator[httpx2.Client]:
    with httpx2.Client(
        base_url=f"https://127.0.0.1:{provider.port}", verify=_strict_context(pki)
    ) as http:
        yield http


def test_pki_files(pki: TestPKI) -> None:
    assert stat.S_IMODE(pki.server_key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    leaf = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "api.openai.com",
        "api.anthropic.com",
        "generativelanguage.googleapis.com",
        "api.mistral.ai",
        "api.groq.com",
        "api.deepseek.com",
        "api.x.ai",
        "openrouter.ai",
        "api.together.xyz",
        "api.fireworks.ai",
        "api.perplexity.ai",
        "spendbrake-test.openai.azure.com",
        "localhost",
    ]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "hostname",
    [
        "api.openai.com",
        "api.anthropic.com",
        "generativelanguage.googleapis.com",
        "api.mistral.ai",
        "openrouter.ai",
        "spendbrake-test.openai.azure.com",
    ],
)
def test_certificate_verifies_for_provider_hostnames(
    pki: TestPKI, provider: FakeProvider, hostname: str
) -> None:
    # What a client of https://<hostname> checks (e.g. mitmproxy upstream, pinned to 127.0.0.1).
    with (
        socket.create_connection(("127.0.0.1", provider.port), timeout=5) as sock,
        _strict_context(pki).wrap_socket(sock, server_hostname=hostname) as tls,
    ):
        assert tls.version() is not None


def test_non_stream_usage_follows_rule(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are terse."},  # 14 chars
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},  # 9 chars
        ],
        max_tokens=5,
    )
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 7 + 23 // 4
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == 12 + 5
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.service_tier == "default"
    assert completion.choices[0].message.content == "Hello! How can I help you today?"
    assert completion.choices[0].finish_reason == "stop"
    dumped = json.loads(completion.to_json())
    assert dumped["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert dumped["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert dumped["choices"][0]["message"]["annotations"] == []


def test_usage_caps_at_nine_and_headers_override(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o4-mini", messages=[{"role": "user", "content": "x"}], max_completion_tokens=500
    )
    assert completion.model == "o4-mini"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 9)

    overridden = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-fake-usage-prompt": "1000", "x-fake-usage-completion": "250"},
    )
    assert overridden.model == "gpt-4o-2024-08-06"
    assert overridden.usage is not None
    assert overridden.usage.total_tokens == 1250


def test_stream_with_include_usage_ends_with_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "12345678"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (9, 9)
    assert all(c.usage is None for c in content_chunks)
    assert all("obfuscation" in c.to_dict() for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == "Hello! How can I help?"
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert content_chunks[-1].choices[0].finish_reason == "stop"


def test_stream_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert len(chunks) == 8  # role, six content deltas, finish
    assert all(c.choices for c in chunks)
    # Absent, not null: that is what OpenAI sends without include_usage.
    assert all("usage" not in c.to_dict() for c in chunks)
    assert all("obfuscation" not in c.to_dict() for c in chunks)


def test_fake_status_raises_without_retry(client: openai.OpenAI, provider: FakeProvider) -> None:
    with pytest.raises(openai.InternalServerError) as excinfo:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "500"},
        )
    assert excinfo.value.status_code == 500
    assert excinfo.value.body == {"message": "fake failure", "type": "server_error", "code": None}
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "429"},
        )
    # x-should-retry: false stops the SDK's default retries.
    assert len(provider.requests) == 2


def test_recorded_request_is_visible(client: openai.OpenAI, provider: FakeProvider) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "record me"}],
        extra_headers={"X-Custom-Thing": "yes"},
    )
    (recorded,) = provider.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == "Bearer sk-test"
    assert recorded.headers["x-custom-thing"] == "yes"
    body = json.loads(recorded.body)
    assert body["messages"] == [{"role": "user", "content": "record me"}]


def test_fake_endpoints_over_http(raw: httpx2.Client, provider: FakeProvider) -> None:
    missing = raw.get("/v1/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"
    hello = raw.get("/_fake/hello")
    assert (hello.status_code, hello.text) == (200, "hello")

    listed = raw.get("/_fake/requests").json()
    assert [(r["method"], r["path"]) for r in listed] == [("GET", "/v1/nope")]
    assert listed[0]["body"] == ""
    assert raw.post("/_fake/reset").status_code == 200
    assert provider.requests == []


def test_stream_is_not_buffered(client: openai.OpenAI) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    for _ in client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers={"x-fake-delay-ms": "200"},
    ):
        arrivals.append(time.monotonic())
    assert len(arrivals) >= 7
    # The first event is sent immediately, then 200 ms before each further event.
    assert arrivals[0] - started < 0.5
    assert arrivals[6] - arrivals[0] >= 1.0


def test_standalone_main(tmp_path: Path) -> None:
    module = "spendbrake.testing.fake_provider"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        listening = proc.stdout.readline().strip()
        ca_line = proc.stdout.readline().strip()
        assert listening.startswith("fake provider listening at 127.0.0.1:")
        port = int(listening.rsplit(":", 1)[1])
        ca_path = ca_line.removeprefix("fake provider CA at ")
        assert Path(ca_path) == tmp_path / "ca.pem"
        ctx = ssl.create_default_context(cafile=ca_path)
        with httpx2.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx) as http:
            assert http.get("/_fake/hello").text == "hello"
            http.post("/v1/embeddings", content=b"{}")
            assert [r["path"] for r in http.get("/_fake/requests").json()] == ["/v1/embeddings"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- Anthropic Messages -----------------------------------------------------------------------

ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"


def _usage_tuple(usage: anthropic.types.Usage) -> tuple[int | None, ...]:
    return (
        usage.input_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        usage.output_tokens,
    )


def test_anthropic_non_stream_usage_follows_rule(
    claude: anthropic.Anthropic, provider: FakeProvider
) -> None:
    raw_response = claude.messages.with_raw_response.create(
        model=ANTHROPIC_MODEL,
        max_tokens=5,
        system="You are terse.",  # 14 chars
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},  # 9 chars
            {"role": "assistant", "content": "Hi"},  # 2 chars
            {"role": "user", "content": "Again"},  # 5 chars
        ],
    )
    assert raw_response.headers["request-id"].startswith("req_")
    assert "x-request-id" not in raw_response.headers
    message = raw_response.parse()
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", ANTHROPIC_MODEL)
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
        ("text", "Hello! How can I help?")
    ]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert _usage_tuple(message.usage) == (7 + 30 // 4, 0, 0, 5)
    assert message.usage.service_tier == "standard"
    assert json.loads(message.to_json())["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 0,
    }

    (recorded,) = provider.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/messages")
    # anthropic SDK 2.x sends the API key as a bearer token, not as x-api-key.
    assert recorded.headers["authorization"] == "Bearer sk-ant-test"
    assert "x-api-key" not in recorded.headers
    assert "anthropic-version" in recorded.headers


def test_anthropic_usage_caps_at_nine_and_headers_override(claude: anthropic.Anthropic) -> None:
    capped = claude.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=1024,
        system=[{"type": "text", "text": "12345678"}],  # list-of-blocks system counts too
        messages=[{"role": "user", "content": "x"}],
    )
    assert _usage_tuple(capped.usage) == (7 + 9 // 4, 0, 0, 9)

    overridden = claude.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=1024,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={
            "x-fake-usage-prompt": "25",
            "x-fake-usage-completion": "250",
            "x-fake-usage-cache-read": "2048",
            "x-fake-usage-cache-write": "512",
        },
    )
    assert _usage_tuple(overridden.usage) == (25, 512, 2048, 250)
    assert overridden.usage.cache_creation is not None
    assert overridden.usage.cache_creation.ephemeral_5m_input_tokens == 512
    assert overridden.usage.cache_creation.ephemeral_1h_input_tokens == 0


def test_anthropic_stream_final_usage(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=ANTHROPIC_MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "12345678"}],
        extra_headers={"x-fake-usage-cache-read": "2048"},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    delta = next(e for e in events if e.type == "message_delta")
    assert _usage_tuple(start.message.usage) == (9, 0, 2048, 1)
    # The classic message_delta carries only the cumulative output count.
    assert delta.usage.output_tokens == 9
    assert (delta.usage.input_tokens, delta.usage.cache_read_input_tokens) == (None, None)
    assert _usage_tuple(final.usage) == (9, 0, 2048, 9)
    assert final.usage.service_tier == "standard"
    assert [b.text for b in final.content if b.type == "text"] == ["Hello! How can I help?"]
    assert final.stop_reason == "end_turn"


def test_anthropic_stream_full_delta_usage(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=ANTHROPIC_MODEL,
        max_tokens=3,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={
            "x-fake-anthropic-delta-usage": "full",
            "x-fake-usage-prompt": "25",
            "x-fake-usage-cache-read": "2048",
            "x-fake-usage-cache-write": "64",
        },
    ) as stream:
        delta = next(e for e in stream if e.type == "message_delta")
        final = stream.get_final_message()
    assert (
        delta.usage.input_tokens,
        delta.usage.cache_creation_input_tokens,
        delta.usage.cache_read_input_tokens,
        delta.usage.output_tokens,
    ) == (25, 64, 2048, 3)
    assert _usage_tuple(final.usage) == (25, 64, 2048, 3)


def test_anthropic_stream_error_raises(claude: anthropic.Anthropic, provider: FakeProvider) -> None:
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as excinfo,
        claude.messages.stream(
            model=ANTHROPIC_MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-stream-error": "overloaded"},
        ) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts == ["Hello", "!"]
    assert excinfo.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert excinfo.value.type == "overloaded_error"
    assert len(provider.requests) == 1  # a mid-stream error is not retried


def test_anthropic_stream_transcript(raw: httpx2.Client) -> None:
    body = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    started = time.monotonic()
    arrivals: list[float] = []
    with raw.stream(
        "POST", "/v1/messages", json=body, headers={"x-fake-delay-ms": "30"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"].startswith("req_")
        lines: list[str] = []
        for line in response.iter_lines():
            if line.startswith("event:"):
                arrivals.append(time.monotonic())
            lines.append(line)
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event:")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 6,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    # Each event is exactly `event: <name>`, `data: <json>`, blank line.
    assert lines[1::3] == [line for line in lines if line.startswith("data: ")]
    assert set(lines[2::3]) == {""}
    data = [json.loads(line.removeprefix("data: ")) for line in lines[1::3]]
    assert [d["type"] for d in data] == names
    assert lines[7] == 'data: {"type": "ping"}'
    assert "".join(d["delta"]["text"] for d in data[3:9]) == "Hello! How can I help?"
    assert data[10]["usage"] == {"output_tokens": 9}
    # Flushed event by event: the first at once, then 30 ms before each of the other 11.
    assert arrivals[0] - started < 0.5
    assert arrivals[-1] - arrivals[0] >= 11 * 0.03 - 0.01

    with raw.stream(
        "POST", "/v1/messages", json=body, headers={"x-fake-stream-error": "overloaded"}
    ) as response:
        tail = [line for line in response.iter_lines() if line][-2:]
    assert tail == [
        "event: error",
        'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
    ]

    typo = raw.post("/v1/messages", json=body, headers={"x-fake-stream-error": "overload"})
    assert typo.status_code == 400
    assert "x-fake-stream-error" in typo.json()["error"]["message"]


def test_anthropic_count_tokens(claude: anthropic.Anthropic, provider: FakeProvider) -> None:
    counted = claude.messages.count_tokens(
        model=ANTHROPIC_MODEL,
        system="You are terse.",  # 14 chars
        messages=[{"role": "user", "content": "Say hello"}],  # 9 chars
    )
    assert counted.input_tokens == 7 + 23 // 4
    assert [r.path for r in provider.requests] == ["/v1/messages/count_tokens"]


def test_anthropic_missing_max_tokens_is_400(claude: anthropic.Anthropic) -> None:
    # The SDK refuses to build such a request, so send the body through its generic post().
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        claude.post(
            "/v1/messages",
            cast_to=anthropic.types.Message,
            body={"model": ANTHROPIC_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        )
    assert excinfo.value.status_code == 400
    assert excinfo.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


def test_anthropic_fake_status_and_404(
    claude: anthropic.Anthropic, raw: httpx2.Client, provider: FakeProvider
) -> None:
    with pytest.raises(anthropic.InternalServerError) as excinfo:
        claude.messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "500"},
        )
    assert excinfo.value.status_code == 500
    assert excinfo.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "fake failure"},
    }
    assert excinfo.value.request_id is not None
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.count_tokens(
            model=ANTHROPIC_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "529"},
        )
    # x-should-retry: false stops the SDK's default retries.
    assert len(provider.requests) == 2

    missing = raw.get("/v1/messages/batches")
    assert missing.status_code == 404
    assert missing.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Not Found"},
    }


# -- OpenAI Responses -------------------------------------------------------------------------

RESPONSES_EVENT_NAMES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def _responses_usage_tuple(usage: openai.types.responses.ResponseUsage | None) -> tuple[int, ...]:
    assert usage is not None
    return (
        usage.input_tokens,
        usage.input_tokens_details.cached_tokens,
        usage.output_tokens,
        usage.output_tokens_details.reasoning_tokens,
        usage.total_tokens,
    )


def test_responses_non_stream_usage_follows_rule(
    client: openai.OpenAI, provider: FakeProvider
) -> None:
    response = client.responses.create(
        model="gpt-4o-mini",
        instructions="You are terse.",  # 14 chars
        input=[
            {"role": "user", "content": "Say hello"},  # 9 chars
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]},  # 2
            {"role": "user", "content": [{"type": "input_text", "text": "12345678"}]},  # 8
        ],
        max_output_tokens=5,
    )
    assert response.id.startswith("resp_")
    assert (response.object, response.status) == ("response", "completed")
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.service_tier == "default"
    assert (response.instructions, response.max_output_tokens) == ("You are terse.", 5)
    assert (response.error, response.incomplete_details) == (None, None)
    assert response.output_text == "Hi there!"
    assert _responses_usage_tuple(response.usage) == (7 + 33 // 4, 0, 5, 0, 15 + 5)
    dumped = json.loads(response.to_json())
    (item,) = dumped["output"]
    assert item["id"].startswith("msg_")
    assert (item["type"], item["status"], item["role"]) == ("message", "completed", "assistant")
    assert item["content"] == [
        {"type": "output_text", "text": "Hi there!", "annotations": [], "logprobs": []}
    ]
    assert dumped["usage"]["input_tokens_details"] == {"cached_tokens": 0}
    assert dumped["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    (recorded,) = provider.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/responses")


def test_responses_usage_caps_at_nine_and_headers_override(client: openai.OpenAI) -> None:
    capped = client.responses.create(model="o4-mini", input="12345678", max_output_tokens=500)
    assert capped.model == "o4-mini"
    assert _responses_usage_tuple(capped.usage) == (9, 0, 9, 0, 18)
    unlimited = client.responses.create(model="gpt-4o", input="x")
    assert unlimited.model == "gpt-4o-2024-08-06"
    assert unlimited.max_output_tokens is None
    assert _responses_usage_tuple(unlimited.usage) == (7, 0, 9, 0, 16)

    overridden = client.responses.create(
        model="o4-mini",
        input="x",
        extra_headers={
            "x-fake-usage-prompt": "1000",
            "x-fake-usage-cache-read": "768",
            "x-fake-usage-completion": "250",
            "x-fake-usage-reasoning": "200",
        },
    )
    # Cached and reasoning tokens are parts of input_tokens and output_tokens, not extra.
    assert _responses_usage_tuple(overridden.usage) == (1000, 768, 250, 200, 1250)


def test_responses_stream_ends_with_completed_usage(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="gpt-4o-mini",
            input=[{"role": "user", "content": "12345678"}],
            stream=True,
            extra_headers={"x-fake-usage-cache-read": "2"},
        )
    )
    assert [e.type for e in events] == [*RESPONSES_EVENT_NAMES, "response.completed"]
    assert [e.sequence_number for e in events] == list(range(10))
    created, *_, completed = events
    assert created.type == "response.created"
    assert (created.response.status, created.response.usage) == ("in_progress", None)
    assert completed.type == "response.completed"
    assert completed.response.status == "completed"
    assert completed.response.id == created.response.id
    assert completed.response.model == "gpt-4o-mini-2024-07-18"
    assert completed.response.output_text == "Hi there!"
    assert _responses_usage_tuple(completed.response.usage) == (9, 2, 9, 0, 18)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["Hi", " there!"]


@pytest.mark.parametrize("end", ["incomplete", "failed"])
def test_responses_stream_incomplete_and_failed(client: openai.OpenAI, end: str) -> None:
    events = list(
        client.responses.create(
            model="gpt-4o-mini",
            input="hi",
            max_output_tokens=3,
            stream=True,
            extra_headers={"x-fake-responses-end": end},
        )
    )
    assert [e.type for e in events] == [*RESPONSES_EVENT_NAMES, f"response.{end}"]
    terminal = events[-1]
    assert terminal.type in ("response.incomplete", "response.failed")
    assert terminal.sequence_number == 9
    assert terminal.response.status == end
    assert _responses_usage_tuple(terminal.response.usage) == (7, 0, 3, 0, 10)
    if end == "incomplete":
        assert terminal.response.incomplete_details is not None
        assert terminal.response.incomplete_details.reason == "max_output_tokens"
        assert terminal.response.error is None
    else:
        assert terminal.response.error is not None
        assert terminal.response.error.code == "server_error"
        assert terminal.response.error.message == "fake failure"
        assert terminal.response.incomplete_details is None

    # The header shapes the non-streamed response the same way.
    response = client.responses.create(
        model="gpt-4o-mini", input="hi", extra_headers={"x-fake-responses-end": end}
    )
    assert response.status == end
    assert _responses_usage_tuple(response.usage) == (7, 0, 9, 0, 16)


def test_responses_stream_transcript(raw: httpx2.Client) -> None:
    body = {"model": "gpt-4o-mini", "input": "hi", "stream": True}
    started = time.monotonic()
    arrivals: list[float] = []
    with raw.stream(
        "POST", "/v1/responses", json=body, headers={"x-fake-delay-ms": "20"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"].startswith("req_")
        lines: list[str] = []
        for line in response.iter_lines():
            if line.startswith("event:"):
                arrivals.append(time.monotonic())
            lines.append(line)
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event:")]
    assert names == [*RESPONSES_EVENT_NAMES, "response.completed"]
    # Each event is exactly `event: <name>`, `data: <json>`, blank line; no [DONE].
    assert lines[1::3] == [line for line in lines if line.startswith("data: ")]
    assert set(lines[2::3]) == {""}
    data = [json.loads(line.removeprefix("data: ")) for line in lines[1::3]]
    assert [(d["type"], d["sequence_number"]) for d in data] == list(
        zip(names, range(10), strict=True)
    )
    assert all("[DONE]" not in line for line in lines)
    assert data[0]["response"]["service_tier"] == "auto"
    assert data[-1]["response"]["service_tier"] == "default"
    # Flushed event by event: the first at once, then 20 ms before each of the other 9.
    assert arrivals[0] - started < 0.5
    assert arrivals[-1] - arrivals[0] >= 9 * 0.02 - 0.01

    typo = raw.post("/v1/responses", json=body, headers={"x-fake-responses-end": "cancelled"})
    assert typo.status_code == 400
    assert "x-fake-responses-end" in typo.json()["error"]["message"]
    assert raw.post("/v1/responses", content=b"not json").status_code == 400


# -- OpenAI legacy Completions ----------------------------------------------------------------

INSTRUCT = "gpt-3.5-turbo-instruct"
INSTRUCT_SNAPSHOT = "gpt-3.5-turbo-instruct:20230824-v2"
COMPLETION_TEXT = "\n\nScoops of happiness."


def _completion_usage(usage: openai.types.CompletionUsage | None) -> tuple[int, int, int]:
    assert usage is not None
    return (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def test_completions_non_stream_usage_follows_rule(
    client: openai.OpenAI, provider: FakeProvider
) -> None:
    completion = client.completions.create(model=INSTRUCT, prompt="Say this is a test")  # 18
    assert completion.id.startswith("cmpl-")
    assert (completion.object, completion.model) == ("text_completion", INSTRUCT_SNAPSHOT)
    # max_tokens defaults to 16 at OpenAI; the fake answers 9 tokens, so it stopped by itself.
    (choice,) = completion.choices
    assert (choice.index, choice.text, choice.finish_reason) == (0, COMPLETION_TEXT, "stop")
    assert choice.logprobs is None
    assert _completion_usage(completion.usage) == (7 + 18 // 4, 9, 11 + 9)
    # Legacy usage has the three counts and nothing else.
    assert json.loads(completion.to_json())["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 9,
        "total_tokens": 20,
    }
    (recorded,) = provider.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/completions")


def test_completions_bill_every_answer_to_every_prompt(client: openai.OpenAI) -> None:
    # Two prompts (4 + 8 chars), two answers each, five tokens an answer.
    batch = client.completions.create(
        model=INSTRUCT, prompt=["abcd", "12345678"], n=2, max_tokens=5
    )
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert {c.finish_reason for c in batch.choices} == {"length"}
    assert _completion_usage(batch.usage) == (7 + 12 // 4, 4 * 5, 10 + 20)

    # Token ids count one each; the suffix counts as prompt; best_of is not billed.
    ids = client.completions.create(
        model="davinci-002", prompt=[[1, 2, 3], [4, 5]], suffix="12345678", best_of=3
    )
    assert ids.model == "davinci-002"
    assert len(ids.choices) == 2
    assert _completion_usage(ids.usage) == (7 + 8 // 4 + 5, 2 * 9, 14 + 18)
    flat = client.completions.create(model=INSTRUCT, prompt=[1, 2, 3], max_tokens=0)
    assert _completion_usage(flat.usage) == (7 + 3, 0, 10)

    overridden = client.completions.create(
        model=INSTRUCT,
        prompt="x",
        extra_headers={"x-fake-usage-prompt": "1000", "x-fake-usage-completion": "250"},
    )
    assert _completion_usage(overridden.usage) == (1000, 250, 1250)


def test_completions_stream_with_include_usage_ends_with_usage_chunk(
    client: openai.OpenAI,
) -> None:
    chunks = list(
        client.completions.create(
            model=INSTRUCT,
            prompt="12345678",
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content_chunks, usage_chunk = chunks
    assert usage_chunk.choices == []
    assert _completion_usage(usage_chunk.usage) == (9, 4, 13)
    # The other chunks say "usage": null, as OpenAI's do once usage was asked for.
    assert all(c.to_dict()["usage"] is None for c in content_chunks)
    assert all(c.object == "text_completion" for c in chunks)
    assert {c.model for c in chunks} == {INSTRUCT_SNAPSHOT}
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in content_chunks) == COMPLETION_TEXT
    assert [c.choices[0].finish_reason for c in content_chunks][-2:] == [None, "length"]


def test_completions_stream_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model=INSTRUCT, prompt="hi", n=2, stream=True))
    assert len(chunks) == 2 * 6  # five text deltas and a finish, for each of the two answers
    assert all(len(c.choices) == 1 for c in chunks)
    # Absent, not null: that is what OpenAI sends without include_usage.
    assert all("usage" not in c.to_dict() for c in chunks)
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert "".join(choice.text for choice in mine) == COMPLETION_TEXT
        assert [choice.finish_reason for choice in mine] == [None] * 5 + ["stop"]


def test_completions_transcript(raw: httpx2.Client) -> None:
    body = {"model": INSTRUCT, "prompt": "hi", "stream": True}
    with raw.stream("POST", "/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    assert lines[-2:] == ["data: [DONE]", ""]
    first = json.loads(lines[0].removeprefix("data: "))
    # OpenAI's streamed text_completion puts the model after the choices.
    assert list(first) == ["id", "object", "created", "choices", "model"]
    assert first["choices"] == [
        {"text": "\n\n", "index": 0, "logprobs": None, "finish_reason": None}
    ]
    plain = raw.post("/v1/completions", json={"model": INSTRUCT, "prompt": "hi"}).json()
    assert list(plain) == ["id", "object", "created", "model", "choices", "usage"]

    for bad in ({"model": INSTRUCT}, {"model": INSTRUCT, "prompt": [1, "a"]}):
        refused = raw.post("/v1/completions", json=bad)
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "prompt"
    assert raw.post("/v1/completions", content=b"not json").status_code == 400


# -- OpenAI Embeddings ------------------------------------------------------------------------

EMBEDDING = [0.0023064255, -0.009327292, 0.015797377]


def test_embeddings_one_input(client: openai.OpenAI, provider: FakeProvider) -> None:
    result = client.embeddings.create(model="text-embedding-3-small", input="Say hello")  # 9
    assert (result.object, result.model) == ("list", "text-embedding-3-small")
    (embedding,) = result.data
    assert (embedding.object, embedding.index) == ("embedding", 0)
    # The SDK asked for base64 and decoded the float32 bytes back into floats.
    assert embedding.embedding == pytest.approx(EMBEDDING, rel=1e-6)
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (1 + 9 // 4, 3)
    (recorded,) = provider.requests
    assert recorded.path == "/v1/embeddings"
    assert json.loads(recorded.body)["encoding_format"] == "base64"


def test_embeddings_several_inputs_and_float_format(client: openai.OpenAI) -> None:
    inputs = ["a", "12345678", "x" * 13]
    result = client.embeddings.create(model="text-embedding-3-large", input=inputs)
    assert [e.index for e in result.data] == [0, 1, 2]
    assert all(e.embedding == pytest.approx(EMBEDDING, rel=1e-6) for e in result.data)
    assert result.usage.prompt_tokens == (1 + 0) + (1 + 2) + (1 + 3)
    assert result.usage.total_tokens == 8

    floats = client.embeddings.create(
        model="text-embedding-3-small", input=inputs[:2], encoding_format="float"
    )
    assert [e.embedding for e in floats.data] == [EMBEDDING, EMBEDDING]


def test_embeddings_override_and_bad_input(client: openai.OpenAI, raw: httpx2.Client) -> None:
    overridden = client.embeddings.create(
        model="text-embedding-3-small", input="x", extra_headers={"x-fake-usage-prompt": "8"}
    )
    assert (overridden.usage.prompt_tokens, overridden.usage.total_tokens) == (8, 8)

    bad = raw.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": []})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "input"


def test_fake_status_on_responses_and_embeddings(
    client: openai.OpenAI, provider: FakeProvider
) -> None:
    with pytest.raises(openai.InternalServerError) as excinfo:
        client.responses.create(
            model="gpt-4o-mini", input="hi", extra_headers={"x-fake-status": "500"}
        )
    assert excinfo.value.body == {"message": "fake failure", "type": "server_error", "code": None}
    with pytest.raises(openai.RateLimitError):
        client.responses.create(
            model="gpt-4o-mini", input="hi", stream=True, extra_headers={"x-fake-status": "429"}
        )
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(
            model="text-embedding-3-small", input="hi", extra_headers={"x-fake-status": "503"}
        )
    # x-should-retry: false stops the SDK's default retries.
    assert [r.path for r in provider.requests] == ["/v1/responses"] * 2 + ["/v1/embeddings"]


# -- gemini ------------------------------------------------------------------------------------

GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_STREAM_PATH = f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent"
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


def _gemini_headers(**headers: str) -> types.GenerateContentConfig:
    """A config that sends the fake's control headers (`x_fake_usage_thoughts="5"`, ...)."""
    return types.GenerateContentConfig(
        http_options=types.HttpOptions(
            headers={name.replace("_", "-"): value for name, value in headers.items()}
        )
    )


def _gemini_usage_tuple(
    usage: types.GenerateContentResponseUsageMetadata | None,
) -> tuple[int | None, ...]:
    assert usage is not None
    return (
        usage.prompt_token_count,
        usage.candidates_token_count,
        usage.thoughts_token_count,
        usage.cached_content_token_count,
        usage.total_token_count,
    )


def test_gemini_generate_content_usage_follows_rule(
    gemini: genai.Client, provider: FakeProvider
) -> None:
    response = gemini.models.generate_content(model=GEMINI_MODEL, contents="hello")
    assert response.text == "The sky looks blue because of Rayleigh scattering."
    assert response.model_version == GEMINI_MODEL
    assert response.response_id
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    # "hello" is 5 chars: 7 + 5 // 4 = 8 prompt, 9 candidates, no thoughts, no cache.
    assert _gemini_usage_tuple(response.usage_metadata) == (8, 9, None, None, 17)
    assert response.usage_metadata is not None
    details = response.usage_metadata.prompt_tokens_details
    assert details is not None
    assert [(d.modality, d.token_count) for d in details] == [(types.MediaModality.TEXT, 8)]

    (request,) = provider.requests
    assert request.method == "POST"
    assert request.path == f"/v1beta/models/{GEMINI_MODEL}:generateContent"
    assert request.headers["x-goog-api-key"] == "test"
    assert json.loads(request.body)["contents"] == GEMINI_BODY["contents"]


def test_gemini_system_instruction_max_output_and_candidates(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model=GEMINI_MODEL,
        contents=[
            types.Content(role="user", parts=[types.Part(text="Say hello")]),  # 9 chars
            types.Content(role="model", parts=[types.Part(text="Hello")]),  # 5 chars
            types.Content(role="user", parts=[types.Part(text="Again")]),  # 5 chars
        ],
        config=types.GenerateContentConfig(
            system_instruction="You are terse.",  # 14 chars
            max_output_tokens=4,
            candidate_count=2,
        ),
    )
    # 7 + 33 // 4 = 15 prompt; 4 candidate tokens each, two candidates.
    assert _gemini_usage_tuple(response.usage_metadata) == (15, 8, None, None, 23)
    assert response.candidates is not None
    assert [c.index for c in response.candidates] == [0, 1]


def test_gemini_thoughts_cache_and_overrides(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model=GEMINI_MODEL,
        contents="hello",
        config=_gemini_headers(x_fake_usage_thoughts="40", x_fake_usage_cache_read="6"),
    )
    # Thoughts are on top of candidates and in the total; cached tokens are part of the prompt.
    assert _gemini_usage_tuple(response.usage_metadata) == (8, 9, 40, 6, 57)
    assert response.usage_metadata is not None
    cache_details = response.usage_metadata.cache_tokens_details
    assert cache_details is not None
    assert [d.token_count for d in cache_details] == [6]

    response = gemini.models.generate_content(
        model=GEMINI_MODEL,
        contents="hello",
        config=_gemini_headers(x_fake_usage_prompt="2059", x_fake_usage_completion="11"),
    )
    assert _gemini_usage_tuple(response.usage_metadata) == (2059, 11, None, None, 2070)


def test_gemini_stream_last_chunk_has_full_usage(
    gemini: genai.Client, provider: FakeProvider
) -> None:
    chunks = list(
        gemini.models.generate_content_stream(
            model=GEMINI_MODEL,
            contents="hello",
            config=_gemini_headers(x_fake_usage_thoughts="465"),
        )
    )
    assert len(chunks) == 3
    assert "".join(chunk.text or "" for chunk in chunks) == "The sky is blue."
    # Early chunks carry a partial snapshot; the last (with finishReason) the complete usage.
    assert [_gemini_usage_tuple(c.usage_metadata) for c in chunks] == [
        (8, None, None, None, 8),
        (8, None, None, None, 8),
        (8, 9, 465, None, 482),
    ]
    assert [c.candidates[0].finish_reason if c.candidates else None for c in chunks] == [
        None,
        None,
        types.FinishReason.STOP,
    ]
    assert {c.model_version for c in chunks} == {GEMINI_MODEL}
    assert len({c.response_id for c in chunks}) == 1
    (request,) = provider.requests
    assert request.path == f"{GEMINI_STREAM_PATH}?alt=sse"


def test_gemini_count_tokens_is_free(gemini: genai.Client, provider: FakeProvider) -> None:
    assert gemini.models.count_tokens(model=GEMINI_MODEL, contents="hello").total_tokens == 8
    counted = gemini.models.count_tokens(
        model=GEMINI_MODEL,
        contents="hello",
        config=types.CountTokensConfig(
            http_options=types.HttpOptions(headers={"x-fake-usage-prompt": "77"})
        ),
    )
    assert counted.total_tokens == 77
    assert [r.path for r in provider.requests] == [f"/v1beta/models/{GEMINI_MODEL}:countTokens"] * 2


@pytest.mark.parametrize(
    ("status", "error"), [(500, genai.errors.ServerError), (429, genai.errors.ClientError)]
)
def test_gemini_fake_status_raises(
    gemini: genai.Client,
    provider: FakeProvider,
    status: int,
    error: type[genai.errors.APIError],
) -> None:
    with pytest.raises(error) as excinfo:
        gemini.models.generate_content(
            model=GEMINI_MODEL, contents="hello", config=_gemini_headers(x_fake_status=str(status))
        )
    assert excinfo.value.code == status
    assert excinfo.value.status == "INTERNAL"
    assert excinfo.value.message == "fake failure"
    with pytest.raises(genai.errors.APIError):
        list(
            gemini.models.generate_content_stream(
                model=GEMINI_MODEL,
                contents="hello",
                config=_gemini_headers(x_fake_status=str(status)),
            )
        )
    # The SDK does not retry by default: one request each.
    assert len(provider.requests) == 2


def test_gemini_sse_transcript_uses_crlf(raw: httpx2.Client) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    pieces: list[bytes] = []
    with raw.stream(
        "POST",
        f"{GEMINI_STREAM_PATH}?alt=sse",
        json=GEMINI_BODY,
        headers={"x-goog-api-key": "test", "x-fake-delay-ms": "40"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for piece in response.iter_raw():
            arrivals.append(time.monotonic())
            pieces.append(piece)
    body = b"".join(pieces)
    # Every event is `data: <one line of JSON>` CRLF CRLF; no bare LF, no [DONE].
    events = body.split(b"\r\n\r\n")
    assert events[-1] == b""
    events = events[:-1]
    assert len(events) == 3
    assert pieces == [event + b"\r\n\r\n" for event in events]
    assert b"\n" not in body.replace(b"\r\n", b"")
    assert b"[DONE]" not in body
    assert all(event.startswith(b"data: {") for event in events)
    data = [json.loads(event.removeprefix(b"data: ")) for event in events]
    assert [d["candidates"][0]["content"]["parts"][0]["text"] for d in data] == [
        "The",
        " sky is blue.",
        "",
    ]
    assert [d["usageMetadata"] for d in data[:2]] == [
        {"promptTokenCount": 8, "totalTokenCount": 8}
    ] * 2
    assert data[2]["candidates"][0]["finishReason"] == "STOP"
    assert data[2]["usageMetadata"] == {
        "promptTokenCount": 8,
        "candidatesTokenCount": 9,
        "totalTokenCount": 17,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
    }
    # Flushed event by event: the first at once, then 40 ms before each of the other 2.
    assert arrivals[0] - started < 0.5
    assert arrivals[-1] - arrivals[0] >= 2 * 0.04 - 0.01


def test_gemini_stream_without_alt_sse_is_a_json_array(
    raw: httpx2.Client, provider: FakeProvider
) -> None:
    with raw.stream(
        "POST",
        f"{GEMINI_STREAM_PATH}?key=test",
        json=GEMINI_BODY,
        headers={"x-fake-delay-ms": "20", "x-fake-usage-cache-read": "3"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        pieces = list(response.iter_raw())
    body = b"".join(pieces)
    # `[{..}` then `\r\n,\r\n{..}` per further element, the last closing the array.
    assert len(pieces) == 3
    assert pieces[0].startswith(b"[{")
    assert all(piece.startswith(b"\r\n,\r\n{") for piece in pieces[1:])
    assert body.endswith(b"}]")
    elements = json.loads(body)
    assert isinstance(elements, list)
    assert len(elements) == 3
    assert elements[-1]["usageMetadata"]["cachedContentTokenCount"] == 3
    assert elements[-1]["usageMetadata"]["totalTokenCount"] == 17
    assert elements[0]["modelVersion"] == GEMINI_MODEL
    assert provider.requests[0].path == f"{GEMINI_STREAM_PATH}?key=test"


def test_gemini_errors_use_google_shape(raw: httpx2.Client) -> None:
    missing = raw.post(f"/v1beta/models/{GEMINI_MODEL}:embedContent", json=GEMINI_BODY)
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"
    assert missing.json()["error"]["code"] == 404

    bad = raw.post(f"/v1beta/models/{GEMINI_MODEL}:generateContent", content=b"{nope")
    assert bad.status_code == 400
    assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    empty = raw.post(f"/v1beta/models/{GEMINI_MODEL}:generateContent", json={})
    assert empty.status_code == 400
    assert "contents" in empty.json()["error"]["message"]

    failed = raw.post(
        f"/v1/models/{GEMINI_MODEL}:generateContent",
        json=GEMINI_BODY,
        headers={"x-fake-status": "503"},
    )
    assert failed.status_code == 503
    assert failed.json() == {
        "error": {"code": 503, "message": "fake failure", "status": "INTERNAL"}
    }
    # OpenAI's colon-less /v1/models stays OpenAI's.
    assert raw.get("/v1/models").json()["error"]["type"] == "invalid_request_error"


# -- OpenAI-compatible hosts and Azure OpenAI ---------------------------------------------------

# Each host's base URL path, as its users give it to the openai SDK.
COMPATIBLE_BASES = {
    "api.mistral.ai": "/v1",
    "api.groq.com": "/openai/v1",
    "api.deepseek.com": "",
    "api.x.ai": "/v1",
    "openrouter.ai": "/api/v1",
    "api.together.xyz": "/v1",
    "api.fireworks.ai": "/inference/v1",
    "api.perplexity.ai": "",
}
# 40 characters: 7 + 40 // 4 = 17 prompt tokens.
HOST_MESSAGES = [{"role": "user", "content": "Why is the sky blue? Answer in one line."}]


def _host_client(pki: TestPKI, provider: FakeProvider, host: str) -> openai.OpenAI:
    """The SDK pointed at ``host`` by its Host header (the fake tells hosts apart by it)."""
    return openai.OpenAI(
        base_url=f"https://127.0.0.1:{provider.port}{COMPATIBLE_BASES[host]}",
        api_key="sk-test",
        default_headers={"Host": host},
        http_client=openai.DefaultHttpxClient(verify=_strict_context(pki)),
        max_retries=0,
    )


@pytest.fixture(scope="module")
def azure(pki: TestPKI, provider: FakeProvider) -> Iterator[openai.AzureOpenAI]:
    sdk = openai.AzureOpenAI(
        azure_endpoint=f"https://127.0.0.1:{provider.port}",
        api_version="2024-10-21",
        api_key="azure-test",
        default_headers={"Host": AZURE_TEST_HOST},
        http_client=openai.DefaultHttpxClient(verify=_strict_context(pki)),
        max_retries=0,
    )
    yield sdk
    sdk.close()


def _stream(client: openai.OpenAI, model: str, **arguments: Any) -> list[dict[str, Any]]:
    chunks = client.chat.completions.create(
        model=model, messages=HOST_MESSAGES, stream=True, **arguments
    )
    return [chunk.to_dict() for chunk in chunks]


@pytest.mark.parametrize("host", list(COMPATIBLE_BASES))
def test_each_compatible_host_answers_on_its_own_chat_path_only(
    pki: TestPKI, provider: FakeProvider, host: str
) -> None:
    with _host_client(pki, provider, host) as client:
        completion = client.chat.completions.create(model="some-model", messages=HOST_MESSAGES)
        assert completion.model == "some-model"
        assert completion.choices[0].message.content == "Hello! How can I help you today?"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (17, 9)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="some-model", input="hi")
    (chat, responses) = provider.requests
    assert chat.headers["host"] == host
    assert chat.path == COMPATIBLE_BASES[host] + "/chat/completions"
    assert responses.path == COMPATIBLE_BASES[host] + "/responses"


@pytest.mark.parametrize("host", ["api.mistral.ai", "api.together.xyz", "api.perplexity.ai"])
def test_some_hosts_put_usage_on_the_finish_chunk_unasked(
    pki: TestPKI, provider: FakeProvider, host: str
) -> None:
    with _host_client(pki, provider, host) as client:
        chunks = _stream(client, "some-model")
    *content, finish = chunks
    assert all("usage" not in c or c["usage"] is None for c in content)
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["usage"] == {
        "prompt_tokens": 17,
        "completion_tokens": 9,
        "total_tokens": 26,
        **({"search_context_size": "low"} if host == "api.perplexity.ai" else {}),
    }
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello! How can I help?"


@pytest.mark.parametrize(
    "host", ["api.groq.com", "api.deepseek.com", "api.x.ai", "api.fireworks.ai"]
)
def test_other_hosts_end_with_a_usage_chunk_only_when_asked(
    pki: TestPKI, provider: FakeProvider, host: str
) -> None:
    with _host_client(pki, provider, host) as client:
        unasked = _stream(client, "some-model")
        asked = _stream(client, "some-model", stream_options={"include_usage": True})
    assert all(c["choices"] and "usage" not in c for c in unasked)
    usage_chunks = [c for c in asked if c["choices"] == [] and c.get("usage")]
    (usage_chunk,) = usage_chunks
    usage = usage_chunk["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (17, 9)
    assert all("usage" in c for c in asked)  # "usage": null on the others, as OpenAI does


def test_groq_reports_timings_and_usage_in_x_groq_on_the_finish_chunk(
    pki: TestPKI, provider: FakeProvider
) -> None:
    with _host_client(pki, provider, "api.groq.com") as client:
        completion = client.chat.completions.create(model="llama-3.3-70b", messages=HOST_MESSAGES)
        chunks = _stream(client, "llama-3.3-70b")
    dumped = json.loads(completion.to_json())
    assert dumped["usage"]["queue_time"] > 0
    assert dumped["x_groq"]["id"].startswith("req_")
    assert dumped["service_tier"] == "on_demand"
    assert chunks[0]["x_groq"] == {"id": chunks[-1]["x_groq"]["id"]}
    assert chunks[-1]["x_groq"]["usage"]["total_tokens"] == 26


def test_deepseek_reports_cache_hits_and_misses(pki: TestPKI, provider: FakeProvider) -> None:
    with _host_client(pki, provider, "api.deepseek.com") as client:
        completion = client.chat.completions.create(
            model="deepseek-reasoner",
            messages=HOST_MESSAGES,
            extra_headers={"x-fake-usage-cache-read": "10", "x-fake-usage-reasoning": "30"},
        )
    usage = json.loads(completion.to_json())["usage"]
    assert usage["prompt_cache_hit_tokens"] == 10
    assert usage["prompt_cache_miss_tokens"] == 7
    assert usage["prompt_tokens_details"] == {"cached_tokens": 10}
    # DeepSeek counts the reasoning in completion_tokens.
    assert (usage["completion_tokens"], usage["total_tokens"]) == (39, 56)
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 30}
    assert json.loads(completion.to_json())["choices"][0]["message"]["reasoning_content"]


def test_xai_leaves_reasoning_out_of_completion_tokens_and_states_the_cost(
    pki: TestPKI, provider: FakeProvider
) -> None:
    headers = {"x-fake-usage-reasoning": "200", "x-fake-usage-cost": "0.00042"}
    with _host_client(pki, provider, "api.x.ai") as client:
        completion = client.chat.completions.create(
            model="grok-3-mini", messages=HOST_MESSAGES, extra_headers=headers
        )
        chunks = _stream(
            client, "grok-3-mini", stream_options={"include_usage": True}, extra_headers=headers
        )
    usage = json.loads(completion.to_json())["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        17,
        9,
        226,
    )
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 200
    assert usage["cost_in_usd_ticks"] == 4_200_000
    # The usage chunk, then one more empty chunk before [DONE].
    usage_chunk, last = chunks[-2:]
    assert (usage_chunk["choices"], usage_chunk["usage"]["total_tokens"]) == ([], 226)
    assert (last["choices"], last["usage"]) == ([], None)


def test_openrouter_states_its_cost_and_on_the_callers_own_key_its_fee(
    pki: TestPKI, provider: FakeProvider
) -> None:
    with _host_client(pki, provider, "openrouter.ai") as client:
        plain = client.chat.completions.create(model="openai/gpt-4o-mini", messages=HOST_MESSAGES)
        credits = client.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=HOST_MESSAGES,
            extra_headers={"x-fake-usage-cost": "0.0002"},
        )
        own_key = client.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=HOST_MESSAGES,
            extra_headers={"x-fake-usage-cost": "0.00001", "x-fake-usage-upstream-cost": "0.0002"},
        )
    assert "cost" not in json.loads(plain.to_json())["usage"]
    assert plain.id.startswith("gen-")
    paid = json.loads(credits.to_json())["usage"]
    assert (paid["cost"], paid["is_byok"], paid["cost_details"]) == (
        0.0002,
        False,
        {"upstream_inference_cost": 0.0002},
    )
    byok = json.loads(own_key.to_json())["usage"]
    assert (byok["cost"], byok["is_byok"], byok["cost_details"]) == (
        0.00001,
        True,
        {"upstream_inference_cost": 0.0002},
    )


def test_openrouter_stream_transcript(raw: httpx2.Client) -> None:
    response = raw.post(
        "/api/v1/chat/completions",
        json={"model": "openai/gpt-4o-mini", "messages": HOST_MESSAGES, "stream": True},
        headers={"Host": "openrouter.ai"},
    )
    events = response.text.split("\n\n")
    assert events[0] == ": OPENROUTER PROCESSING"
    assert events[-2:] == ["data: [DONE]", ""]
    last = json.loads(events[-3].removeprefix("data: "))
    # Usage always ends an OpenRouter stream, asked for or not.
    assert (last["choices"], last["usage"]["total_tokens"]) == ([], 26)
    assert last["provider"] == "OpenAI"


def test_a_bad_cost_header_is_a_loud_400(pki: TestPKI, provider: FakeProvider) -> None:
    with (
        _host_client(pki, provider, "openrouter.ai") as client,
        pytest.raises(
            openai.BadRequestError, match="x-fake-usage-cost: 'lots' is not a dollar amount"
        ),
    ):
        client.chat.completions.create(
            model="m", messages=HOST_MESSAGES, extra_headers={"x-fake-usage-cost": "lots"}
        )


def test_azure_answers_a_deployment_with_the_model_behind_it(
    azure: openai.AzureOpenAI, provider: FakeProvider
) -> None:
    completion = azure.chat.completions.create(model="chat-prod", messages=HOST_MESSAGES)
    assert completion.model == "gpt-4o-2024-11-20"
    dumped = json.loads(completion.to_json())
    assert dumped["prompt_filter_results"][0]["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "safe",
    }
    assert "content_filter_results" in dumped["choices"][0]
    assert (dumped["usage"]["prompt_tokens"], dumped["usage"]["completion_tokens"]) == (17, 9)
    (recorded,) = provider.requests
    assert recorded.path == "/openai/deployments/chat-prod/chat/completions?api-version=2024-10-21"


def test_an_azure_stream_opens_with_the_prompts_filter_results(
    azure: openai.AzureOpenAI,
) -> None:
    chunks = _stream(azure, "chat-prod", stream_options={"include_usage": True})
    first, *content, usage_chunk = chunks
    # Not a usage chunk, for all its empty choices: no model, no usage, the filter results.
    assert (first["choices"], first["model"], "usage" in first) == ([], "", False)
    assert first["prompt_filter_results"]
    assert {c["model"] for c in content} == {"gpt-4o-2024-11-20"}
    assert all(c["usage"] is None for c in content)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] == 26


def test_azure_routes_need_a_deployment_and_an_api_version(raw: httpx2.Client) -> None:
    host = {"Host": AZURE_TEST_HOST}
    body = {"messages": HOST_MESSAGES}
    no_version = raw.post("/openai/deployments/chat-prod/chat/completions", json=body, headers=host)
    assert no_version.status_code == 404
    assert no_version.json() == {"error": {"code": "404", "message": "Resource not found"}}
    elsewhere = raw.post("/v1/chat/completions?api-version=2024-10-21", json=body, headers=host)
    assert elsewhere.status_code == 404
