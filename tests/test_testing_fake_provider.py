"""The fake OpenAI provider, exercised with the real `openai` SDK (no proxy in between)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
from cryptography import x509

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI, make_test_pki


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
    assert sans.get_values_for_type(x509.DNSName) == ["api.openai.com", "localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


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
