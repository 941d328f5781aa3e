"""When a tunnel's host is dialled: at once for every other host (a server may speak first),
only for a forwarded call for the hosts spendbrake opens up."""

import pytest
from mitmproxy import connection, http
from mitmproxy.test import tflow, tutils

from spendbrake.mitm.interception import Interception
from test_mitm_interception import client_hello


def connect(host: str, port: int = 443) -> http.HTTPFlow:
    request = tutils.treq(
        method=b"CONNECT",
        scheme=b"",
        authority=f"{host}:{port}".encode(),
        host=host,
        port=port,
        path=b"",
        headers=http.Headers(),
        content=b"",
    )
    return tflow.tflow(req=request)


@pytest.mark.parametrize(
    "host", ["api.openai.com", "acme.openai.azure.com", "spendbrake.local", "API.Anthropic.com."]
)
def test_a_tunnel_to_a_host_spendbrake_opens_up_is_answered_without_dialling_it(
    host: str,
) -> None:
    flow = connect(host)
    Interception().http_connect(flow)
    # An answered CONNECT is one mitmproxy does not dial; it answers the same itself.
    assert flow.response is not None
    assert (flow.response.status_code, flow.response.reason) == (200, "Connection established")
    assert flow.response.http_version == "HTTP/1.1"
    assert not flow.response.headers
    assert flow.response.content == b""


@pytest.mark.parametrize(("host", "port"), [("example.com", 443), ("127.0.0.1", 22)])
def test_a_tunnel_to_any_other_host_is_left_to_mitmproxy_to_dial(host: str, port: int) -> None:
    flow = connect(host, port)
    Interception().http_connect(flow)
    assert flow.response is None


def test_a_refused_tunnel_stays_refused() -> None:
    flow = connect("api.openai.com")
    refusal = http.Response.make(407, b"who are you?\n")
    flow.response = refusal
    Interception().http_connect(flow)
    assert flow.response is refusal


@pytest.mark.parametrize(
    ("sni", "host"), [("api.openai.com", "api.openai.com"), ("spendbrake.local", "127.0.0.1")]
)
def test_an_opened_up_host_is_not_dialled_to_copy_its_tls_first(sni: str, host: str) -> None:
    data = client_hello(sni, host)
    data.establish_server_tls_first = True  # as mitmproxy's tlsconfig asks for a dialled tunnel
    Interception().tls_clienthello(data)
    assert data.ignore_connection is False
    assert data.establish_server_tls_first is False


def test_a_tunnel_mitmproxy_has_dialled_already_keeps_its_server_tls_first() -> None:
    # CONNECT by address, SNI an LLM host: the CONNECT named no host spendbrake opens up.
    data = client_hello("api.openai.com", "192.0.2.1")
    data.context.server.state = connection.ConnectionState.OPEN
    data.establish_server_tls_first = True
    Interception().tls_clienthello(data)
    assert data.ignore_connection is False
    assert data.establish_server_tls_first is True


def test_a_tunnel_to_any_other_host_is_passed_through_as_mitmproxy_opened_it() -> None:
    data = client_hello("example.com", "example.com")
    data.establish_server_tls_first = True
    Interception().tls_clienthello(data)
    assert data.ignore_connection is True
    assert data.establish_server_tls_first is True
