"""The agent of every request, and nothing that identified it reaches the provider."""

import base64

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from spendbrake.access import Access
from spendbrake.attribution import Identity
from spendbrake.config import Config
from spendbrake.mitm.access_cache import AccessCache
from spendbrake.mitm.identification import Identification
from spendbrake.mitm.state import flow_state


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def connect_flow(authorization: str | None) -> http.HTTPFlow:
    flow = tflow.tflow(req=http.Request.make("CONNECT", "http://api.openai.com:443/"))
    if authorization:
        flow.request.headers["proxy-authorization"] = authorization
    return flow


def request_in_tunnel(
    connect: http.HTTPFlow, headers: dict[str, str] | None = None
) -> http.HTTPFlow:
    request = http.Request.make(
        "POST", "https://api.openai.com/v1/chat/completions", b"{}", headers or {}
    )
    return tflow.tflow(req=request, client_conn=connect.client_conn)


def test_credentials_of_a_tunnel_count_for_every_request_in_it() -> None:
    identification = Identification()
    connect = connect_flow(basic("research-bot", "run-1"))
    identification.http_connect(connect)
    assert "proxy-authorization" not in connect.request.headers
    for _ in range(2):
        flow = request_in_tunnel(connect, {"x-spendbrake-agent": "impostor"})
        identification.requestheaders(flow)
        state = flow_state(flow)
        assert state is not None
        assert state.identity == Identity("research-bot", "run-1", "proxy-auth")
        assert "x-spendbrake-agent" not in flow.request.headers


def test_mitmproxys_own_proxyauth_is_used_when_it_is_on() -> None:
    identification = Identification()
    flow = request_in_tunnel(connect_flow(None))
    flow.metadata["proxyauth"] = ("ops", "s")
    identification.requestheaders(flow)
    state = flow_state(flow)
    assert state is not None
    assert state.identity == Identity("ops", "s", "proxy-auth")


def test_without_credentials_the_header_and_then_default_apply() -> None:
    identification = Identification()
    connect = connect_flow(None)
    identification.http_connect(connect)
    named = request_in_tunnel(connect, {"X-Spendbrake-Agent": "ci", "X-Spendbrake-Session": "7"})
    anonymous = request_in_tunnel(connect)
    identification.requestheaders(named)
    identification.requestheaders(anonymous)
    named_state, anonymous_state = flow_state(named), flow_state(anonymous)
    assert named_state is not None
    assert anonymous_state is not None
    assert named_state.identity == Identity("ci", "7", "header")
    assert anonymous_state.identity == Identity("default", "", "default")
    assert "x-spendbrake-session" not in named.request.headers


def test_plain_http_proxy_requests_carry_and_lose_their_credentials() -> None:
    identification = Identification()
    flow = tflow.tflow(
        req=http.Request.make(
            "GET", "http://example.com/", b"", {"proxy-authorization": basic("bot", "")}
        )
    )
    identification.requestheaders(flow)
    state = flow_state(flow)
    assert state is not None
    assert state.identity == Identity("bot", "", "proxy-auth")
    assert "proxy-authorization" not in flow.request.headers


def test_an_unusable_name_is_recorded_as_an_error_not_an_identity() -> None:
    identification = Identification()
    flow = request_in_tunnel(connect_flow(None), {"x-spendbrake-agent": "no spaces please"})
    identification.requestheaders(flow)
    state = flow_state(flow)
    assert state is not None
    assert state.identity is None
    assert state.identity_error is not None
    assert "not usable" in state.identity_error


def test_credentials_are_forgotten_when_the_client_disconnects() -> None:
    identification = Identification()
    connect = connect_flow(basic("bot", "s"))
    identification.http_connect(connect)
    identification.client_disconnected(connect.client_conn)
    flow = request_in_tunnel(connect)
    identification.requestheaders(flow)
    state = flow_state(flow)
    assert state is not None
    assert state.identity == Identity("default", "", "default")


def test_identifying_headers_are_removed_whatever_their_case_and_the_rest_kept_in_order() -> None:
    request = http.Request.make("POST", "https://api.openai.com/v1/chat/completions", b"{}")
    request.headers.fields = (
        (b"Authorization", b"Bearer sk-test"),
        (b"X-Spendbrake-Agent", b"triage-bot"),
        (b"x-other", b"1"),
        (b"X-SPENDBRAKE-SESSION", b"run-7"),
        (b"Proxy-Authorization", b"Basic !!not-base64"),
        (b"x-other", b"2"),
    )
    flow = tflow.tflow(req=request)
    Identification().requestheaders(flow)
    state = flow_state(flow)
    assert state is not None
    assert state.identity == Identity("triage-bot", "run-7", "header")
    assert flow.request.headers.fields == (
        (b"Authorization", b"Bearer sk-test"),
        (b"x-other", b"1"),
        (b"x-other", b"2"),
    )


def test_an_agent_header_sent_twice_names_no_usable_agent() -> None:
    request = http.Request.make("POST", "https://api.openai.com/v1/chat/completions", b"{}")
    request.headers.fields = ((b"x-spendbrake-agent", b"a"), (b"x-spendbrake-agent", b"b"))
    flow = tflow.tflow(req=request)
    Identification().requestheaders(flow)
    state = flow_state(flow)
    assert state is not None
    assert state.identity is None
    assert "'a, b'" in (state.identity_error or "")
    assert "x-spendbrake-agent" not in flow.request.headers


def test_a_call_that_names_no_agent_gets_the_proxys_default_agent_and_session() -> None:
    identification = Identification()
    with taddons.context(identification) as tctx:
        tctx.configure(
            identification, spendbrake_default_agent="ci-run", spendbrake_default_session="r-7"
        )
        anonymous = request_in_tunnel(connect_flow(None))
        identification.requestheaders(anonymous)
        named = request_in_tunnel(connect_flow(None), {"x-spendbrake-agent": "bot"})
        identification.requestheaders(named)
        with pytest.raises(exceptions.OptionsError, match="is not usable"):
            tctx.configure(identification, spendbrake_default_agent="no spaces")
    assert (state := flow_state(anonymous)) is not None
    assert state.identity == Identity("ci-run", "r-7", "default")
    assert (state := flow_state(named)) is not None
    assert state.identity == Identity("bot", "r-7", "header")


def test_a_listener_beyond_loopback_stops_the_start_unless_access_allows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    identification = Identification()
    with taddons.context(identification) as tctx:
        tctx.configure(identification, listen_host="")
        identification.running()
        assert "would listen on every interface" in caplog.text
        assert caplog.records[-1].levelname == "ERROR"  # mitmdump exits on it
        caplog.clear()
        tctx.configure(identification, listen_host="127.0.0.1", mode=["regular@0.0.0.0:8081"])
        identification.running()
        assert "would listen on 0.0.0.0" in caplog.text
        caplog.clear()
        identification.use(Config(access=Access(strict=True)), AccessCache())
        identification.running()
        assert caplog.text == ""
        tctx.configure(identification, listen_host="127.0.0.1", mode=["regular"])
        identification.use(Config(), AccessCache())
        identification.running()
        assert caplog.text == ""
