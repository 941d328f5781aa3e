"""Only LLM hosts are opened up: every other HTTPS host is tunnelled with its own certificate."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from e2e_support import TEST_ID_HEADER, Proxy, basic_auth, requests_of, run_client

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Exchange:
    peer_cert_der: bytes
    response: bytes


def get_through_proxy(
    proxy: Proxy, host: str, port: int, path: str, *, trust: Path, agent: str
) -> Exchange:
    """CONNECT host:port through the proxy explicitly (no NO_PROXY shortcut for localhost),
    then TLS with a client that trusts only ``trust``; return the peer's certificate and the
    raw HTTP response."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT_S) as raw:
        raw.sendall(
            f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Proxy-Authorization: {basic_auth(agent, 'tunnel')}\r\n\r\n".encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = raw.recv(4096)
            assert data, f"the proxy closed the connection after {reply!r}"
            reply += data
        assert reply.startswith(b"HTTP/1.1 200"), reply
        context = ssl.create_default_context(cafile=str(trust))
        with context.wrap_socket(raw, server_hostname=host) as tls:
            peer = tls.getpeercert(binary_form=True)
            assert peer is not None
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            response = b""
            while data := tls.recv(65536):
                response += data
    return Exchange(peer, response)


def der(pem_file: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_non_llm_host_is_tunnelled_untouched(
    proxy: Proxy, fake: FakeProvider, pki: TestPKI
) -> None:
    exchange = get_through_proxy(
        proxy, "localhost", fake.port, "/_fake/hello", trust=pki.ca_cert, agent="tunnel-bot"
    )
    # The client, trusting only the fake's CA, verified the fake's own certificate.
    assert exchange.peer_cert_der == der(pki.server_cert)
    assert exchange.response.startswith(b"HTTP/1.1 200")
    assert exchange.response.endswith(b"\r\n\r\nhello")
    assert b"x-spendbrake" not in exchange.response.lower()


def test_non_llm_host_cannot_be_verified_with_the_proxy_ca(
    proxy: Proxy, fake: FakeProvider
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        get_through_proxy(
            proxy,
            "localhost",
            fake.port,
            "/_fake/hello",
            trust=proxy.certs.ca_cert,
            agent="tunnel-bot",
        )


def test_llm_host_is_intercepted_with_the_proxy_ca(
    proxy: Proxy, fake: FakeProvider, pki: TestPKI
) -> None:
    exchange = get_through_proxy(
        proxy,
        "api.openai.com",
        443,
        "/_fake/hello",
        trust=proxy.certs.ca_cert,
        agent="tunnel-bot",
    )
    leaf = x509.load_der_x509_certificate(exchange.peer_cert_der)
    proxy_ca = x509.load_pem_x509_certificate(proxy.certs.ca_cert.read_bytes())
    assert exchange.peer_cert_der != der(pki.server_cert)
    assert leaf.issuer == proxy_ca.subject
    leaf.verify_directly_issued_by(proxy_ca)
    # A free route (GET) passes unmetered, to the fake behind the proxy.
    assert exchange.response.startswith(b"HTTP/1.1 200")
    assert exchange.response.endswith(b"\r\n\r\nhello")

    # And a client that trusts only the real server's CA refuses the proxy's certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        get_through_proxy(
            proxy, "api.openai.com", 443, "/_fake/hello", trust=pki.ca_cert, agent="tunnel-bot"
        )


def test_many_calls_on_one_connection_reach_the_provider(
    proxy: Proxy, fake: FakeProvider, test_id: str
) -> None:
    calls = 7
    report = run_client(
        "sdk_chat.py",
        {
            "max_tokens": 5,
            "calls": calls,
            "max_retries": 0,
            "timeout": 2,
            "headers": {TEST_ID_HEADER: test_id},
        },
        proxy.client_env("keepalive-bot"),
    )
    assert [c["status"] for c in report["calls"]] == [200] * calls, report["calls"][-1]
    assert len(requests_of(fake, test_id)) == calls
