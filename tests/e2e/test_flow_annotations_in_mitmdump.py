"""mitmweb's view of the calls, from a real ``mitmdump -s "$(spendbrake addon-path)"`` run: the
flows it saved (``save_stream_file``) carry spendbrake's comment, refusals are marked, and the
metadata holds the call's record; the proxy's log has one line per call."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    MITMDUMP,
    TEST_ID_HEADER,
    Certs,
    Proxy,
    clean_environment,
    run_client,
    running_proxy,
    spendbrake_cli,
    upstream_settings,
)
from mitmproxy import http
from mitmproxy.io import FlowReader

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

AGENT = "annotated-bot"


def test_saved_flows_carry_the_comment_the_mark_and_the_record(
    tmp_path: Path,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
    test_id: str,
) -> None:
    config = tmp_path / "spendbrake.toml"
    config.write_text(f"[agents.{AGENT}]\ndaily_usd = 0.00002\n")
    flows_file = tmp_path / "flows.mitm"
    command: list[str | Path] = [MITMDUMP, "-s", spendbrake_cli("addon-path").stdout.strip()]
    command += ["--listen-host", "127.0.0.1", "--listen-port", "0"]
    for setting in [
        f"spendbrake_config={config}",
        f"spendbrake_ledger={tmp_path / 'ledger.db'}",
        f"confdir={certs.directory}",
        f"save_stream_file={flows_file}",
        *upstream_settings(fake, pki),
    ]:
        command += ["--set", setting]

    def call(**spec: Any) -> dict[str, Any]:
        spec = {"content": "hi", "max_tokens": 5, "headers": {TEST_ID_HEADER: test_id}, **spec}
        [report] = run_client("sdk_chat.py", spec, proxy.client_env(AGENT))["calls"]
        return report

    with running_proxy(
        command,
        log=tmp_path / "mitmdump.log",
        ledger=tmp_path / "ledger.db",
        config=config,
        certs=certs,
        env=clean_environment(XDG_CACHE_HOME=str(cache_dir)),
    ) as proxy:
        statuses = [
            call()["status"],
            call(stream=True)["status"],
            call(max_tokens=1000, max_retries=0)["status"],  # its hold does not fit: refused
        ]
        output = proxy.output()
    assert statuses == [200, 200, 402]

    with flows_file.open("rb") as f:
        flows = [flow for flow in FlowReader(f).stream() if isinstance(flow, http.HTTPFlow)]
    assert len(flows) == 3
    plain, streamed, refused = flows

    # "hi" on gpt-4o-mini, max_tokens 5: billed (7 + 0) * 150 + 5 * 600 = 4 050 nanos.
    assert plain.comment == (
        f"{AGENT} · gpt-4o-mini · 7 in / 5 out · $0.00000405 · remaining $0.00001595"
    )
    assert not plain.marked
    record = plain.metadata["spendbrake_call"]
    assert (record["agent"], record["provider"], record["forwarded_model"]) == (
        AGENT,
        "openai",
        "gpt-4o-mini",
    )
    assert (record["cost_usd"], record["held_usd"], record["outcome"]) == (
        "0.000004050",
        "0.000004200",
        "ok",
    )
    assert record["tokens"]["output"] == 5
    assert "spendbrake" not in plain.metadata  # the live state left with the flow's end

    assert re.fullmatch(
        rf"{AGENT} · gpt-4o-mini · \d+ in / \d+ out · \$0\.\d+ · remaining \$0\.\d+",
        streamed.comment,
    ), streamed.comment
    assert streamed.metadata["spendbrake_call"]["stream"] is True

    assert refused.marked == ":no_entry:"
    assert refused.comment == f"{AGENT} · gpt-4o-mini · refused: daily_budget_exceeded (402)"
    refusal = refused.metadata["spendbrake_call"]["refusal"]
    assert (refusal["code"], refusal["status"]) == ("daily_budget_exceeded", 402)

    # One concise line per call in the terminal, no prompt in any of them.
    lines = [line for line in output.splitlines() if f"spendbrake: {AGENT} " in line]
    assert len(lines) == 3, output
    assert lines[0].endswith(
        f"spendbrake: {AGENT} gpt-4o-mini 7 in/5 out $0.00000405 (remaining $0.00001595)"
    )
    assert lines[2].endswith(f"spendbrake: {AGENT} gpt-4o-mini refused 402 daily_budget_exceeded")


def test_spendbrake_up_saves_annotated_flows_too(
    start_proxy: Callable[..., AbstractContextManager[Proxy]], tmp_path: Path, test_id: str
) -> None:
    """``spendbrake up --set save_stream_file=F`` saves after spendbrake's addon, so the flows
    are written, with their comments (mitmproxy's own Save addon would otherwise run first)."""
    flows_file = tmp_path / "up-flows.mitm"
    with start_proxy(config_toml=None, settings=[f"save_stream_file={flows_file}"]) as proxy:
        spec = {"content": "hi", "max_tokens": 5, "headers": {TEST_ID_HEADER: test_id}}
        [report] = run_client("sdk_chat.py", spec, proxy.client_env("up-bot"))["calls"]
        assert report["status"] == 200
    with flows_file.open("rb") as f:
        [flow] = [flow for flow in FlowReader(f).stream() if isinstance(flow, http.HTTPFlow)]
    assert flow.comment.startswith("up-bot · gpt-4o-mini · 7 in / 5 out · $")
    assert flow.metadata["spendbrake_call"]["agent"] == "up-bot"
