"""mitmproxy options that would undo spendbrake's promises, wherever the addon is loaded: a call's
body is never sent on before it is read and held for, and long silent calls are not cut."""

import json
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons

from spendbrake.mitm.addon import Spendbrake
from spendbrake.mitm.mitmproxy_options import TCP_TIMEOUT_S, keep_long_silent_calls
from test_mitm_enforcement import chat_body, chat_flow, configured_proxy


def test_stream_large_bodies_is_refused_because_a_large_call_would_go_out_unread() -> None:
    addon = Spendbrake()
    # The option belongs to mitmproxy's proxy server addon.
    with taddons.context(Proxyserver(), addon) as tctx:  # type: ignore[no-untyped-call]
        with pytest.raises(exceptions.OptionsError, match="stream_large_bodies"):
            tctx.configure(addon, stream_large_bodies="1k")
        assert tctx.options.stream_large_bodies is None  # mitmproxy rolled it back
        tctx.configure(addon, body_size_limit="50m")  # limits that refuse, not stream, are fine


def test_mitmproxys_default_idle_timeout_is_raised_for_long_silent_calls() -> None:
    with taddons.context() as tctx:  # type: ignore[no-untyped-call]
        assert tctx.options.tcp_timeout < TCP_TIMEOUT_S  # mitmproxy's default (600 s)
        keep_long_silent_calls()
        assert tctx.options.tcp_timeout == TCP_TIMEOUT_S


def test_an_idle_timeout_the_operator_chose_is_kept() -> None:
    with taddons.context() as tctx:  # type: ignore[no-untyped-call]
        tctx.options.update(tcp_timeout=120)
        keep_long_silent_calls()
        assert tctx.options.tcp_timeout == 120


async def test_a_call_another_addon_asked_to_stream_is_read_and_metered(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, "[agents.bot]\ndaily_usd = 1\n") as proxy:
        flow = chat_flow()
        flow.request.stream = True  # as a script's requestheaders hook could set it
        proxy.enforcement.requestheaders(flow)
        assert flow.request.stream is False
        await proxy.send(flow)
        assert flow.response is None  # held and forwarded
        [row] = proxy.rows()
        assert row["state"] == "held"


def test_streaming_stays_untouched_on_hosts_spendbrake_does_not_meter(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, "") as proxy:
        flow = chat_flow(host="uploads.example.com", path="/big")
        flow.request.stream = True
        proxy.enforcement.requestheaders(flow)
        assert flow.request.stream is True


async def test_a_call_streamed_on_before_it_could_be_metered_is_cut(tmp_path: Path) -> None:
    with configured_proxy(tmp_path, "[agents.bot]\ndaily_usd = 1\n") as proxy:
        flow = chat_flow(json.dumps(chat_body()).encode())
        flow.request.stream = True  # set after the headers: the body already went out unread
        await proxy.send(flow)
        assert flow.error is not None
        assert flow.error.msg == "Connection killed."
        assert proxy.rows() == []  # nothing was held for it, and nothing pretends it was
        assert flow.response is None  # no refusal either: the provider has the call already
