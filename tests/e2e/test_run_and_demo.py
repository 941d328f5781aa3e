"""``spendbrake run -- CMD`` and ``spendbrake demo runaway``, end to end: real commands (the openai
SDK, curl) through the run's own ephemeral proxy to the fake provider."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    CLIENTS_DIR,
    MITMDUMP,
    SPENDBRAKE,
    TEST_ID_HEADER,
    Certs,
    clean_environment,
    ledger_calls,
    requests_of,
    running_proxy,
    upstream_settings,
    wait_for,
)

from spendbrake.testing.fake_provider import FakeProvider
from spendbrake.testing.tls import TestPKI

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 60
SESSION = re.compile(r"run-\d{8}T\d{6}Z-[0-9a-f]{6}")

# Each call of the loop: gpt-4o ($2.50/M in, $10/M out), max_tokens 400, all of them billed.
# The prompt "Step NN: keep going." bills as 7 + 20 // 4 = 12 input tokens:
#   actual = 12 * 2 500 + 400 * 10 000 = 4 030 000 nanos; the hold is 4 035 000.
# With a budget of $0.02, after 4 calls $0.01612 is spent and 0.01612 + 0.004035 > 0.02: the
# 5th call is refused.
RUNAWAY_SPEC: dict[str, Any] = {
    "model": "gpt-4o",
    "content": "Step {i}: keep going.",
    "max_tokens": 400,
    "calls": 100,  # sdk_chat.py stops at the first error, which it catches and reports
}


@pytest.fixture
def run_env(tmp_path: Path, cache_dir: Path) -> dict[str, str]:
    """The environment of ``spendbrake run``, with a TMPDIR of its own to check it cleans up."""
    (tmp_path / "tmp").mkdir()
    return clean_environment(
        TMPDIR=str(tmp_path / "tmp"),
        XDG_CACHE_HOME=str(cache_dir),
        OPENAI_API_KEY="sk-e2e-test-key",
    )


def spendbrake_run(
    fake: FakeProvider, pki: TestPKI, env: dict[str, str], *args: str | Path
) -> subprocess.CompletedProcess[str]:
    settings = [part for s in upstream_settings(fake, pki) for part in ("--set", s)]
    return subprocess.run(
        [str(SPENDBRAKE), "run", *settings, *(str(a) for a in args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def sdk_chat(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, str(CLIENTS_DIR / "sdk_chat.py"), json.dumps(spec)]


def test_a_script_that_swallows_the_budget_error_still_fails_the_run_with_87(
    fake: FakeProvider, pki: TestPKI, run_env: dict[str, str], tmp_path: Path, test_id: str
) -> None:
    ledger, summary_file = tmp_path / "kept.db", tmp_path / "summary.json"
    spec = {
        **RUNAWAY_SPEC,
        "headers": {"x-fake-usage-completion": "400", TEST_ID_HEADER: test_id},
    }
    result = spendbrake_run(
        fake, pki, run_env,
        "--agent", "ci-bot", "--budget", "0.02", "--ledger", ledger,
        "--summary-json", summary_file,
        "--", *sdk_chat(spec),
    )  # fmt: skip

    assert result.returncode == 87, result.stderr
    # The script caught the SDK's error and ended normally: only the run says it failed.
    calls = json.loads(result.stdout.splitlines()[-1])["calls"]
    assert [c["status"] for c in calls] == [200] * 4 + [402]
    assert calls[-1]["error_body"]["error"]["code"] == "session_budget_exceeded"
    assert {c["headers"]["x-spendbrake-agent"] for c in calls} == {"ci-bot"}
    assert len(requests_of(fake, test_id)) == 4

    summary = json.loads(summary_file.read_text())
    assert SESSION.fullmatch(summary["session"])
    assert 0 < summary["seconds"] < RUN_TIMEOUT_S
    assert summary == {
        "agent": "ci-bot",
        "session": summary["session"],
        "calls": 4,
        "refused": 1,
        "spent_usd": "0.016120000",
        "budget_usd": "0.020000000",
        "stopped_by": "session_budget_exceeded",
        "by_model": {
            "gpt-4o": {
                "calls": 4,
                "input_tokens": 48,
                "output_tokens": 1600,
                "spent_usd": "0.016120000",
            }
        },
        "seconds": summary["seconds"],
    }
    rows = ledger_calls(ledger, "ci-bot")  # --ledger keeps the run's rows
    assert [(r["state"], r["session"]) for r in rows] == [("settled", summary["session"])] * 4 + [
        ("refused", summary["session"])
    ]
    assert "  calls   4 forwarded, 1 refused (session_budget_exceeded: 1)\n" in result.stderr
    assert "  spent   $0.01612 of the $0.02 budget\n" in result.stderr
    assert result.stderr.endswith(
        "spendbrake run: exit 87: session_budget_exceeded refused an LLM call "
        "(the command itself exited with 0)\n"
    )


def test_a_curl_call_is_attributed_to_the_run_and_the_commands_exit_code_kept(
    fake: FakeProvider, pki: TestPKI, run_env: dict[str, str], tmp_path: Path, test_id: str
) -> None:
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}
    )
    script = (
        "curl -sS --fail-with-body https://api.openai.com/v1/chat/completions "
        '-H "authorization: Bearer sk-e2e-test-key" -H "content-type: application/json" '
        f'-H "{TEST_ID_HEADER}: {test_id}" -d "$1" -o "$2" || exit 1; exit 3'
    )
    ledger, summary_file, answer = tmp_path / "kept.db", tmp_path / "s.json", tmp_path / "a.json"
    result = spendbrake_run(
        fake, pki, {**run_env, "SPENDBRAKE_LEDGER": str(ledger)},  # as --ledger
        "--agent", "curl-bot", "--summary-json", summary_file,
        "--", "sh", "-c", script, "sh", body, answer,
    )  # fmt: skip

    assert result.returncode == 3, result.stderr
    assert json.loads(answer.read_text())["choices"][0]["message"]["content"]
    summary = json.loads(summary_file.read_text())
    (row,) = ledger_calls(ledger, "curl-bot")
    assert (row["session"], row["state"], row["requested_model"]) == (
        summary["session"],
        "settled",
        "gpt-4o-mini",
    )
    assert (summary["calls"], summary["refused"], summary["stopped_by"]) == (1, 0, None)
    assert summary["budget_usd"] is None  # no --budget: no session limit
    (received,) = requests_of(fake, test_id)
    assert "proxy-authorization" not in received.headers
    assert result.stderr.endswith("spendbrake run: exit 3, the command's own\n")


def test_calls_that_try_to_leave_the_run_still_count_in_it(
    fake: FakeProvider, pki: TestPKI, run_env: dict[str, str], tmp_path: Path, test_id: str
) -> None:
    """A client that drops the run's credentials from the proxy URL, behind a NO_PROXY that
    exempts the provider: its calls are the run's, and the budget stops them."""
    body = json.dumps(
        {
            "model": "gpt-4o",
            "max_tokens": 400,
            "messages": [{"role": "user", "content": "Step 1: keep going."}],
        }
    )
    script = (
        'p="${HTTPS_PROXY#http://*@}"; export HTTPS_PROXY="http://$p" https_proxy="http://$p"; '
        'echo "$https_proxy"; for i in 1 2; do '
        "curl -sS https://api.openai.com/v1/chat/completions -o /dev/null -w '%{http_code}\\n' "
        '-H "authorization: Bearer sk-e2e-test-key" -H "content-type: application/json" '
        f'-H "x-fake-usage-completion: 400" -H "{TEST_ID_HEADER}: {test_id}" -d "$1"; done'
    )
    ledger, summary_file = tmp_path / "kept.db", tmp_path / "s.json"
    env = {**run_env, "NO_PROXY": "intranet.corp,.openai.com"}
    result = spendbrake_run(
        fake, pki, env,
        "--agent", "curl-bot", "--budget", "0.006", "--ledger", ledger,
        "--summary-json", summary_file,
        "--", "sh", "-c", script, "sh", body,
    )  # fmt: skip

    assert result.returncode == 87, result.stderr
    proxy, *codes = result.stdout.splitlines()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", proxy)  # no agent, no session
    assert codes == ["200", "402"]
    assert len(requests_of(fake, test_id)) == 1
    summary = json.loads(summary_file.read_text())
    assert (summary["agent"], summary["calls"], summary["refused"]) == ("curl-bot", 1, 1)
    assert summary["stopped_by"] == "session_budget_exceeded"
    rows = ledger_calls(ledger, "curl-bot")
    assert [(r["session"], r["state"]) for r in rows] == [
        (summary["session"], "settled"),
        (summary["session"], "refused"),
    ]
    assert result.stderr.startswith(
        "spendbrake run: NO_PROXY entries left out, they would send LLM calls past the budget: "
        ".openai.com\n"
    )
    assert (
        "  raise   --budget to let the run go further ('spendbrake limit set' does not change a "
        "run's limits)\n"
    ) in result.stderr


def test_block_all_lets_no_call_reach_the_provider(
    fake: FakeProvider, pki: TestPKI, run_env: dict[str, str], tmp_path: Path, test_id: str
) -> None:
    summary_file = tmp_path / "summary.json"
    spec = {"headers": {TEST_ID_HEADER: test_id}}
    result = spendbrake_run(
        fake, pki, run_env, "--block-all", "--summary-json", summary_file, "--", *sdk_chat(spec)
    )

    assert result.returncode == 87, result.stderr
    (call,) = json.loads(result.stdout.splitlines()[-1])["calls"]
    assert call["status"] == 402
    assert call["error_body"]["error"]["code"] == "llm_calls_blocked"
    assert "this run allows no LLM calls" in call["error_body"]["error"]["message"]
    assert requests_of(fake, test_id) == []
    summary = json.loads(summary_file.read_text())
    assert (summary["agent"], summary["calls"], summary["refused"]) == ("run", 0, 1)
    assert summary["stopped_by"] == "llm_calls_blocked"
    assert os.listdir(run_env["TMPDIR"]) == []  # the temporary ledger went with the run


def test_an_https_proxy_already_set_becomes_the_runs_way_out(
    fake: FakeProvider, pki: TestPKI, run_env: dict[str, str], tmp_path: Path, test_id: str
) -> None:
    """A corporate proxy that wants credentials, and tunnels without looking inside."""
    corp_dir = tmp_path / "corp"
    corp_dir.mkdir()
    corp_command: list[str | Path] = [
        MITMDUMP, "--listen-host", "127.0.0.1", "--listen-port", "0",
        "--set", f"confdir={corp_dir}", "--set", "proxyauth=alice:s3cret", "--ignore-hosts", ".*",
    ]  # fmt: skip
    with running_proxy(
        corp_command,
        log=corp_dir / "corp.log",
        ledger=corp_dir / "unused.db",
        config=None,
        certs=Certs(corp_dir),
        env=clean_environment(),
    ) as corp:
        env = {**run_env, "HTTPS_PROXY": f"http://alice:s3cret@127.0.0.1:{corp.port}"}
        result = spendbrake_run(
            fake, pki, env, "--", *sdk_chat({"headers": {TEST_ID_HEADER: test_id}})
        )
        corp_log = corp.output()

    assert result.returncode == 0, result.stdout + result.stderr
    (call,) = json.loads(result.stdout.splitlines()[-1])["calls"]
    assert call["status"] == 200
    assert call["headers"]["x-spendbrake-agent"] == "run"
    assert len(requests_of(fake, test_id)) == 1
    # The call left through the corporate proxy, which let it pass with the credentials.
    assert f"server connect 127.0.0.1:{fake.port}" in corp_log
    assert "407 Proxy Authentication Required" not in corp_log


def children_of(pid: int) -> dict[int, str]:
    """Live child processes of ``pid`` → their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found[int(entry.name)] = cmdline
    return found


def test_ctrl_c_stops_the_command_then_the_proxy_and_leaves_nothing_behind(
    fake: FakeProvider, pki: TestPKI, run_env: dict[str, str], tmp_path: Path
) -> None:
    pid_file = tmp_path / "command.pid"
    command = (
        "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "while True: time.sleep(0.05)"
    )
    settings = [part for s in upstream_settings(fake, pki) for part in ("--set", s)]
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [SPENDBRAKE, "run", *settings, "--", sys.executable, "-c", command, pid_file],
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(pid_file.exists, timeout=30, what="the command to start")
        children = children_of(run.pid)
        command_pid = int(wait_for(pid_file.read_text, what="the command's pid"))
        (proxy_pid,) = [pid for pid, cmd in children.items() if "spendbrake.proxy" in cmd]
        assert set(children) == {command_pid, proxy_pid}
        assert os.listdir(run_env["TMPDIR"]) != []

        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=20) == 130  # the command's: ended by SIGINT
    finally:
        if run.poll() is None:  # a failure: stop what it would leave behind, then the run
            for pid in children_of(run.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run.kill()
            run.wait()
    output = (tmp_path / "run.log").read_text()
    assert "KeyboardInterrupt" in output  # the command got the signal
    assert output.endswith("spendbrake run: exit 130, the command's own\n")
    for pid in (command_pid, proxy_pid):
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} is left behind"
    assert os.listdir(run_env["TMPDIR"]) == []


def process_group_of(pid: int) -> int | None:
    """The process group of a live process (not a zombie), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[2])


def group_members(pgid: int) -> list[int]:
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if process_group_of(pid) == pgid]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_cancelled_job_leaves_none_of_the_commands_processes_behind(
    fake: FakeProvider,
    pki: TestPKI,
    run_env: dict[str, str],
    tmp_path: Path,
    signum: signal.Signals,
    code: int,
) -> None:
    """CI cancels a job with a signal to ``spendbrake run``, with no terminal: what the command
    started goes too, even a background job that ignores SIGINT as sh's do."""
    pid_file = tmp_path / "sleep.pid"
    settings = [part for s in upstream_settings(fake, pki) for part in ("--set", s)]
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [SPENDBRAKE, "run", *settings, "--", "sh", "-c", 'sleep 60 & echo $! > "$1"; wait',
             "sh", pid_file],
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    sleep_pid: int | None = None
    try:
        written = wait_for(
            lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30, what="sleep"
        )
        sleep_pid = int(written)
        group = process_group_of(sleep_pid)
        assert group is not None
        assert group != os.getpgid(run.pid)  # the command's own group
        run.send_signal(signum)
        assert run.wait(timeout=20) == code
        assert group_members(group) == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if sleep_pid is not None and process_group_of(sleep_pid) is not None:
            os.kill(sleep_pid, signal.SIGKILL)
    output = (tmp_path / "run.log").read_text()
    assert output.endswith(f"spendbrake run: exit {code}, the command's own\n")


def test_the_runaway_demo_stops_the_agent_at_its_limit(run_env: dict[str, str]) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [str(SPENDBRAKE), "demo", "runaway", "--limit", "0.02", "--interval", "0.05"],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "spendbrake demo: a runaway agent (the openai SDK, a gpt-4o call every 0.05 s) "
        "against a daily limit of $0.02"
    )
    assert re.fullmatch(
        r"spendbrake stopped the runaway agent \d+\.\d\d s in \(daily_budget_exceeded\)", lines[2]
    )
    # "Step N: keep going." bills 11 input tokens below N = 10, and 400 output tokens.
    assert lines[3] == "  spent       $0.01611 in 4 calls (limit $0.02)"
    assert lines[4] == "  refused     1 call, worth up to $0.004035"
    assert re.fullmatch(r"  no governor \$[\d,]+\.\d\d an hour at the observed rate .*", lines[5])
    assert lines[6].startswith("  agent saw   402: spendbrake: daily budget exceeded for agent")
    assert time.monotonic() - started < 30
