"""The addon on its own: ``mitmdump -s "$(spendbrake addon-path)"`` meters and refuses too."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import (
    MITMDUMP,
    TEST_ID_HEADER,
    Certs,
    clean_environment,
    ledger_calls,
    requests_of,
    run_client,
    running_proxy,
    spendbrake_cli,
    upstream_settings,
)

from spendbrake.mitm.mitmproxy_options import TCP_TIMEOUT_S
from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

AGENT = "mitmdump-bot"


def test_mitmdump_with_the_addon_script_meters_and_refuses(
    tmp_path: Path,
    fake: FakeProvider,
    pki: TestPKI,
    certs: Certs,
    cache_dir: Path,
    test_id: str,
) -> None:
    addon_path = spendbrake_cli("addon-path").stdout
    assert addon_path.count("\n") == 1  # the path alone, on one line
    assert Path(addon_path.strip()).is_file()

    config = tmp_path / "spendbrake.toml"
    config.write_text(f"[agents.{AGENT}]\ndaily_usd = 0.00001\n")
    ledger = tmp_path / "ledger.db"
    command: list[str | Path] = [MITMDUMP, "-s", addon_path.strip()]
    command += ["--listen-host", "127.0.0.1", "--listen-port", "0"]
    for setting in [
        f"spendbrake_config={config}",
        f"spendbrake_ledger={ledger}",
        f"confdir={certs.directory}",
        *upstream_settings(fake, pki),
    ]:
        command += ["--set", setting]

    with running_proxy(
        command,
        log=tmp_path / "mitmdump.log",
        ledger=ledger,
        config=config,
        certs=certs,
        env=clean_environment(XDG_CACHE_HOME=str(cache_dir)),
    ) as proxy:
        # "hi" on gpt-4o-mini with max_tokens 5: held 8 * 150 + 5 * 600 = 4 200 nanos, billed
        # (7 + 0) * 150 + 5 * 600 = 4 050. Two calls fit in $0.00001; the third hold does not.
        report = run_client(
            "sdk_chat.py",
            {"content": "hi", "max_tokens": 5, "calls": 5, "headers": {TEST_ID_HEADER: test_id}},
            proxy.client_env(AGENT),
        )

    # Without `spendbrake up` to set it, the addon raises mitmproxy's 600 s idle timeout itself.
    assert f"tcp_timeout raised to {TCP_TIMEOUT_S} s" in (tmp_path / "mitmdump.log").read_text()
    calls = report["calls"]
    assert [c["status"] for c in calls] == [200, 200, 402]
    assert [c["headers"]["x-spendbrake-cost-usd"] for c in calls[:2]] == ["0.000004050"] * 2
    assert calls[1]["headers"]["x-spendbrake-remaining-usd"] == "0.000001900"
    error = calls[2]["error_body"]["error"]
    assert error["code"] == "daily_budget_exceeded"
    assert f"agent '{AGENT}': spent $0.0000081 of $0.00001 today" in error["message"]
    assert len(requests_of(fake, test_id)) == 2
    rows = ledger_calls(ledger, AGENT)
    assert [(r["state"], r["held_nanos"], r["actual_nanos"]) for r in rows] == [
        ("settled", 4_200, 4_050),
        ("settled", 4_200, 4_050),
        ("refused", 4_200, None),
    ]
