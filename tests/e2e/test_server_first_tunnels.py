"""A tunnel to any other host carries any protocol, also one whose server speaks first (SSH,
SMTP, IMAP, FTP greet the client before it sends a byte). LLM hosts are still dialled only for
a call spendbrake forwards."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from e2e_support import (
    SPENDBRAKE,
    Certs,
    Proxy,
    basic_auth,
    clean_environment,
    raw_client,
    running_proxy,
)

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

# How long a read may wait before the test gives up on it (a guard against hanging, not a
# measurement): a greeting that does not come through would otherwise block the test forever.
READ_GUARD_S = 10.0
GREETING = b"SSH-2.0-spendbrake-test-server\r\n"


class Greeter(socketserver.StreamRequestHandler):
    """Speaks first, as an SSH server does, then answers the client's first line."""

    def handle(self) -> None:
        self.wfile.write(GREETING)
        self.wfile.write(b"you said: " + self.rfile.readline())


@pytest.fixture(scope="module")
def greeter() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Greeter)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def open_tunnel(proxy: Proxy, host: str, port: int) -> socket.socket:
    """A socket on which the proxy has answered ``CONNECT host:port`` with 200, and nothing of
    the tunnel's own bytes has been read yet."""
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=READ_GUARD_S)
    raw.sendall(
        f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Proxy-Authorization: {basic_auth('tunnel-bot', 'tunnel')}\r\n\r\n".encode()
    )
    reply = b""
    while not reply.endswith(b"\r\n\r\n"):  # byte by byte: the tunnel's bytes come next
        data = raw.recv(1)
        assert data, f"the proxy closed the connection after {reply!r}"
        reply += data
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return raw


def read_line(connection: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        try:
            data = connection.recv(1)
        except TimeoutError:
            pytest.fail(f"nothing more came through the tunnel after {line!r}")
        assert data, f"the tunnel closed after {line!r}"
        line += data
    return line


def der(pem_file: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_the_client_hears_a_server_that_speaks_first(
    proxy: Proxy, greeter: socketserver.ThreadingTCPServer
) -> None:
    host, port = greeter.server_address[:2]
    with open_tunnel(proxy, str(host), port) as tunnel:
        # The client sends nothing before the server's greeting, as an SSH client does.
        assert read_line(tunnel) == GREETING
        tunnel.sendall(b"SSH-2.0-client\r\n")
        assert read_line(tunnel) == b"you said: SSH-2.0-client\r\n"


def test_an_https_host_is_still_tunnelled_with_its_own_certificate(
    proxy: Proxy, fake: FakeProvider, pki: TestPKI
) -> None:
    with open_tunnel(proxy, "localhost", fake.port) as tunnel:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))  # not the proxy's CA
        with context.wrap_socket(tunnel, server_hostname="localhost") as tls:
            assert tls.getpeercert(binary_form=True) == der(pki.server_cert)
            tls.sendall(
                b"GET /_fake/hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            response = b""
            while data := tls.recv(65536):
                response += data
    assert response.startswith(b"HTTP/1.1 200")
    assert response.endswith(b"\r\n\r\nhello")


def test_a_refused_call_opens_no_connection_to_the_provider(
    tmp_path: Path, pki: TestPKI, certs: Certs, cache_dir: Path
) -> None:
    # The "provider" only listens: a connection to it would wait in its backlog, to be found.
    with socket.create_server(("127.0.0.1", 0)) as provider:
        ledger = tmp_path / "ledger.db"
        command: list[str | Path] = [
            SPENDBRAKE,
            "up",
            "--listen",
            "127.0.0.1:0",
            "--ledger",
            ledger,
            "--set",
            f"spendbrake_upstream=127.0.0.1:{provider.getsockname()[1]}",
            "--set",
            f"ssl_verify_upstream_trusted_ca={pki.ca_cert}",
        ]
        env = clean_environment(
            SPENDBRAKE_CERTS=str(certs.directory), XDG_CACHE_HOME=str(cache_dir)
        )
        with (
            running_proxy(
                command,
                log=tmp_path / "proxy.log",
                ledger=ledger,
                config=None,
                certs=certs,
                env=env,
            ) as proxy,
            raw_client(proxy, "refused-bot") as client,
        ):
            response = client.post(
                "https://api.openai.com/v1/chat/completions",
                json={"model": "gpt-nonexistent", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 400, response.text
            assert response.headers["x-spendbrake-reason"] == "unknown_model"
            provider.setblocking(False)
            with pytest.raises(BlockingIOError):  # nothing connected, not even for the tunnel
                provider.accept()
