"""``spendbrake run``'s process handling short of a proxy: the configuration file and the CA
bundle it writes for its proxy, the proxy's settings, the rows it reads back from the ledger,
and how signals reach the command and what the command started."""

import contextlib
import itertools
import os
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from spendbrake import certs
from spendbrake.config import parse_config
from spendbrake.ledger import CallIntent, HoldGranted, Limits, Settlement, TokenCounts
from spendbrake.run import CallRow, RunOptions
from spendbrake.sandbox import (
    EphemeralProxy,
    RunError,
    SignalRelay,
    _proxy_for,
    prepare_config,
    read_calls,
    run_sandboxed,
)
from spendbrake.sqlite_ledger import SQLiteLedger

NOW = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)


def test_the_users_config_is_merged_under_the_runs_budget(tmp_path: Path) -> None:
    user = tmp_path / "spendbrake.toml"
    user.write_text(
        'timezone = "Europe/Berlin"\nledger = "shared.db"\n'
        "[agents.ci-bot]\ndaily_usd = 0.10\nsession_usd = 5\n"
        '[prices."ft:gpt-4o-mini:acme"]\ninput_usd_per_mtok = 0.30\noutput_usd_per_mtok = 1.20\n'
    )
    options = RunOptions(agent="ci-bot", budget_nanos=500_000_000, config_path=user)

    text, config = prepare_config(options)

    assert parse_config(tomllib.loads(text)) == config
    assert config.timezone.key == "Europe/Berlin"
    assert config.ledger is None  # the run keeps its own ledger
    assert config.daily_limit("ci-bot") == 100_000_000
    assert config.limits("ci-bot").session_nanos == 500_000_000
    assert "ft:gpt-4o-mini:acme" in config.prices


def test_a_mistake_in_the_users_config_is_named_in_the_users_file(tmp_path: Path) -> None:
    user = tmp_path / "spendbrake.toml"
    user.write_text("[agents.ci-bot]\ndialy_usd = 0.10\n")
    with pytest.raises(RunError, match=f"{user}: unknown key agents.ci-bot.dialy_usd"):
        prepare_config(RunOptions(agent="ci-bot", config_path=user))


def test_a_missing_config_file_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="config file not found"):
        prepare_config(RunOptions(config_path=tmp_path / "nope.toml"))


def intent(session: str, agent: str = "ci-bot") -> CallIntent:
    return CallIntent(
        agent=agent,
        session=session,
        provider="openai",
        endpoint="/v1/chat/completions",
        requested_model="gpt-4o",
        forwarded_model="gpt-4o",
        stream=False,
        day="2026-11-22",
        started_at=NOW,
    )


def test_the_runs_rows_are_read_back_from_the_ledger_and_no_others(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    try:
        granted = ledger.hold(intent("run-1"), 4_035_000, 5_000_000_000)
        assert isinstance(granted, HoldGranted)
        usage = TokenCounts(input_tokens=12, output_tokens=400)
        ledger.settle(granted.call_id, Settlement(4_030_000, usage, "ok"), 5_000_000_000)
        ledger.hold(intent("run-1"), 4_035_000, 5_000_000_000)  # still held
        ledger.hold(intent("run-1"), 4_035_000, 5_000_000_000, Limits(session_nanos=8_000_000))
        ledger.hold(intent("run-2"), 1, 5_000_000_000)  # another run of the same agent
        ledger.hold(intent("run-1", agent="other"), 1, 5_000_000_000)
    finally:
        ledger.close()

    assert read_calls(path, "ci-bot", "run-1") == [
        CallRow(NOW, "gpt-4o", "settled", "", 12, 400, 4_035_000, 4_030_000),
        CallRow(NOW, "gpt-4o", "held", "", 0, 0, 4_035_000, None),
        CallRow(NOW, "gpt-4o", "refused", "session_budget_exceeded", 0, 0, 4_035_000, None),
    ]


def test_a_ledger_the_proxy_never_wrote_has_no_rows(tmp_path: Path) -> None:
    assert read_calls(tmp_path / "ledger.db", "ci-bot", "run-1") == []


# -- the proxy's settings and the CA bundle ---------------------------------------------------

CORP_CA = b"-----BEGIN CERTIFICATE-----\nY29ycG9yYXRl\n-----END CERTIFICATE-----\n"


def settings_list(proxy: EphemeralProxy) -> list[str]:
    return [value for flag, value in itertools.pairwise(proxy.arguments) if flag == "--set"]


def proxy_settings(proxy: EphemeralProxy) -> dict[str, str]:
    return dict(setting.partition("=")[::2] for setting in settings_list(proxy))


def make_proxy(
    tmp_path: Path, environment: dict[str, str], *, upstream: str | None = None, **options: Any
) -> tuple[EphemeralProxy, Path]:
    workdir = tmp_path / "run"
    workdir.mkdir(exist_ok=True)
    run = RunOptions(agent="ci-bot", **options)
    proxy, bundle, _ = _proxy_for(workdir, run, "", upstream, environment, "run-1")
    return proxy, bundle


def test_the_runs_proxy_counts_calls_without_credentials_in_the_run(tmp_path: Path) -> None:
    proxy, _ = make_proxy(tmp_path, {})
    settings = proxy_settings(proxy)
    assert settings["spendbrake_default_agent"] == "ci-bot"
    assert settings["spendbrake_default_session"] == "run-1"


def test_the_runs_ca_bundle_keeps_the_callers_own_cas(tmp_path: Path) -> None:
    corp = tmp_path / "corp.pem"
    corp.write_bytes(CORP_CA)
    environment = {
        "SSL_CERT_FILE": str(corp),
        "REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem"),  # skipped, as clients fail on it
        "CURL_CA_BUNDLE": str(tmp_path),  # a directory: skipped too
    }

    _, bundle = make_proxy(tmp_path, environment)

    proxy_ca = (bundle.parent / certs.CA_CERT_NAME).read_bytes()
    system = certs.system_ca_bundle().read_bytes()
    assert bundle.read_bytes() == system.rstrip(b"\n") + b"\n" + CORP_CA + proxy_ca
    _, same = make_proxy(tmp_path, {"SSL_CERT_FILE": str(certs.system_ca_bundle())})
    assert same.read_bytes() == system.rstrip(b"\n") + b"\n" + proxy_ca  # the system's once


def test_the_proxy_trusts_the_callers_cas_upstream_only_behind_another_proxy(
    tmp_path: Path,
) -> None:
    corp = tmp_path / "corp.pem"
    corp.write_bytes(CORP_CA)
    caller = {"SSL_CERT_FILE": str(corp)}
    upstream = "http://proxy.corp:3128"

    behind, _ = make_proxy(tmp_path, caller, upstream=upstream)
    trusted = Path(proxy_settings(behind)["ssl_verify_upstream_trusted_ca"])
    system = certs.system_ca_bundle().read_bytes()
    assert trusted.read_bytes() == system.rstrip(b"\n") + b"\n" + CORP_CA

    direct, _ = make_proxy(tmp_path, caller)
    assert "ssl_verify_upstream_trusted_ca" not in proxy_settings(direct)
    plain, _ = make_proxy(tmp_path, {}, upstream=upstream)  # nothing beyond the system's CAs
    assert "ssl_verify_upstream_trusted_ca" not in proxy_settings(plain)
    own = ("ssl_verify_upstream_trusted_ca=/mine.pem",)
    chosen, _ = make_proxy(tmp_path, caller, upstream=upstream, sets=own)
    assert proxy_settings(chosen)["ssl_verify_upstream_trusted_ca"] == "/mine.pem"
    assert settings_list(chosen).count("ssl_verify_upstream_trusted_ca=/mine.pem") == 1


def test_a_run_refuses_settings_that_would_replace_its_own(tmp_path: Path) -> None:
    options = RunOptions(sets=("spendbrake_ledger=/tmp/elsewhere.db",))
    with pytest.raises(RunError, match="spendbrake_ledger is set by the run itself: use --ledger"):
        run_sandboxed(["true"], options, environment={})


# -- signals ----------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids a test started; whatever of them is still alive at the end is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def shell_with_a_background_job(spawned: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    """``sh`` in a process group of its own, waiting for the ``sleep`` it started."""
    child = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, process_group=0
    )
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    spawned += [child.pid, grandchild]
    return child, grandchild


def test_a_signal_that_arrived_while_the_command_started_is_passed_on(
    spawned: list[int],
) -> None:
    with SignalRelay() as relay:
        os.kill(os.getpid(), signal.SIGTERM)  # the CI runner cancels the job right then
        assert relay.received == [signal.SIGTERM]
        child = subprocess.Popen(["sleep", "60"])
        spawned.append(child.pid)
        relay.adopt(child, own_group=False)
        assert child.wait(timeout=5) == -signal.SIGTERM


def test_a_signal_reaches_what_the_command_started_and_the_end_kills_the_rest(
    spawned: list[int],
) -> None:
    with SignalRelay() as relay:
        child, grandchild = shell_with_a_background_job(spawned)
        relay.adopt(child, own_group=True)
        os.kill(os.getpid(), signal.SIGTERM)
        assert child.wait(timeout=5) == -signal.SIGTERM
        assert gone(grandchild)

    with SignalRelay() as relay:
        child, grandchild = shell_with_a_background_job(spawned)
        relay.adopt(child, own_group=True)
        os.kill(os.getpid(), signal.SIGINT)  # sh's background jobs ignore SIGINT
        assert child.wait(timeout=5) == -signal.SIGINT
        assert alive(grandchild)
        relay.end()
        assert gone(grandchild)
