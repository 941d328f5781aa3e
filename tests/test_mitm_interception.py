"""Only LLM hosts are TLS-intercepted; a test upstream can stand in for the provider."""

import contextlib
import ssl

import pytest
from mitmproxy import connection, exceptions, http, tls
from mitmproxy.proxy import context, server_hooks
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.test import taddons, tflow

from spendbrake.mitm.interception import Interception


def client_hello(sni: str | None, connect_host: str) -> tls.ClientHelloData:
    """A real ClientHello, as Python's ssl writes it, for a tunnel to ``connect_host``."""
    client = ssl.create_default_context()
    client.check_hostname = False
    outgoing = ssl.MemoryBIO()
    tls_object = client.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls_object.do_handshake()
    hello = parse_client_hello(outgoing.read())
    assert hello is not None
    assert hello.sni == sni
    ctx = context.Context(tflow.tclient_conn(), None)  # type: ignore[arg-type]
    ctx.server = connection.Server(address=(connect_host, 443))
    return tls.ClientHelloData(ctx, hello)


@pytest.mark.parametrize(
    ("sni", "host", "ignored"),
    [
        ("api.openai.com", "api.openai.com", False),
        (None, "api.openai.com", False),
        ("acme.openai.azure.com", "acme.openai.azure.com", False),
        ("generativelanguage.googleapis.com", "generativelanguage.googleapis.com", False),
        ("example.com", "example.com", True),
        ("localhost", "127.0.0.1", True),
    ],
)
def test_only_llm_hosts_are_opened_up(sni: str | None, host: str, ignored: bool) -> None:
    interception = Interception()
    data = client_hello(sni, host)
    interception.tls_clienthello(data)
    assert data.ignore_connection is ignored


def test_the_test_upstream_replaces_only_llm_host_addresses() -> None:
    interception = Interception()
    with taddons.context(interception) as tctx:
        tctx.configure(interception, spendbrake_upstream="127.0.0.1:8443")
        for host, expected in [
            ("api.openai.com", ("127.0.0.1", 8443)),
            ("example.com", ("example.com", 443)),
        ]:
            server = connection.Server(address=(host, 443))
            interception.server_connect(
                server_hooks.ServerConnectionHookData(server, tflow.tclient_conn())
            )
            assert server.address == expected


@pytest.mark.parametrize("value", ["127.0.0.1", "host:port", ":80", "h:70000"])
def test_a_bad_upstream_is_an_option_error(value: str) -> None:
    interception = Interception()
    with (
        taddons.context(interception) as tctx,
        pytest.raises(exceptions.OptionsError, match="HOST:PORT"),
    ):
        tctx.configure(interception, spendbrake_upstream=value)


def test_requests_to_llm_hosts_are_sent_to_the_test_upstream_keeping_their_host_header() -> None:
    interception = Interception()
    with taddons.context(interception) as tctx:
        tctx.configure(interception, spendbrake_upstream="127.0.0.1:8443")
        request = http.Request.make(
            "POST", "https://api.openai.com/v1/chat/completions", b"", {"host": "api.openai.com"}
        )
        flow = tflow.tflow(req=request)
        interception.requestheaders(flow)
        assert (flow.request.host, flow.request.port) == ("127.0.0.1", 8443)
        assert flow.request.host_header == "api.openai.com"
        other = tflow.tflow(req=http.Request.make("GET", "https://example.com/"))
        interception.requestheaders(other)
        assert other.request.host == "example.com"
