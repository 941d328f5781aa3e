"""A giant prompt through a real proxy: its body is parsed, counted and given a usage request in
the body worker process that ``spendbrake up`` starts, and the call is held for every token. The
worker ends with the proxy, whether it stops or is killed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    ledger_calls,
    requests_of,
    run_client,
    wait_for,
)

from spendbrake.testing.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

AGENT = "long-context-bot"
SPENDBRAKE_CONFIG = f"[agents.{AGENT}]\ndaily_usd = 100\n"
# Two tokens of o200k each time ("Lorem" and " ipsum."), 1.6 MB of prompt: over the 1 MB above
# which the body worker takes a body.
WORDS = "Lorem ipsum."
REPEAT = 200_000
PROMPT_TOKENS = 3 * REPEAT  # "Lorem", " ipsum", "."


def giant_call(proxy: Proxy, test_id: str, *, stream: bool = False) -> dict[str, Any]:
    spec = {
        "content": WORDS,
        "content_repeat": REPEAT,
        "max_tokens": 5,
        "stream": stream,
        "headers": {TEST_ID_HEADER: test_id},
    }
    [call] = run_client("sdk_chat.py", spec, proxy.client_env(AGENT))["calls"]
    assert call["ok"], call
    return call


def body_workers_of(pid: int) -> list[int]:
    """The processes ``pid`` started that run the body worker."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == pid and b"spendbrake.body_worker" in command:
            found.append(int(entry.name))
    return found


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # reaped meanwhile
    # A zombie has ended; it waits only for its (killed) parent's reaper.
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_giant_prompt_is_held_for_every_token_and_forwarded(
    proxy: Proxy, fake: FakeProvider, test_id: str, stream: bool
) -> None:
    giant_call(proxy, test_id, stream=stream)

    assert len(body_workers_of(proxy.process.pid)) == 1
    [forwarded] = requests_of(fake, test_id)
    sent = json.loads(forwarded.body)
    assert sent["messages"][0]["content"] == WORDS * REPEAT
    if stream:
        # The usage request was added in the worker, and its chunk kept from the client.
        assert sent["stream_options"] == {"include_usage": True}
    row = ledger_calls(proxy.ledger, AGENT)[-1]
    assert row["stream"] == int(stream)
    # The prompt's own tokens plus the message's few of overhead.
    assert PROMPT_TOKENS <= row["estimated_input_tokens"] <= PROMPT_TOKENS + 10


@pytest.mark.parametrize("ending", ["stopped", "killed"])
def test_the_body_worker_ends_with_its_proxy(
    start_proxy: Callable[..., AbstractContextManager[Proxy]], test_id: str, ending: str
) -> None:
    with start_proxy(config_toml=SPENDBRAKE_CONFIG) as proxy:
        giant_call(proxy, test_id)
        [worker] = body_workers_of(proxy.process.pid)
        if ending == "killed":
            proxy.sigkill()  # no done hook: the worker reads the end of its pipe
    wait_for(lambda: is_gone(worker) or None, what=f"body worker {worker} to end")
