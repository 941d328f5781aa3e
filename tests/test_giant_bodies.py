"""A 50 MB prompt: held for at least its real token count, within a memory bound, and tokenized
without stalling anyone else's calls.

Memory is measured in a subprocess of its own (``ru_maxrss``, the process's high-water mark), so
nothing else in the test run counts towards it. Not stalling is shown by order, not by time: the
big call's tokenization is made to wait until a small call has been admitted, which can only
happen if the tokenization is off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from spendbrake.mitm.state import flow_state
from spendbrake.tokens import TokenEstimator
from test_mitm_enforcement import chat_flow, configured_proxy

SIZE = 50_000_000
# Ordinary text: words, digits, punctuation, escaped non-ASCII, line ends (a run of one letter
# would measure the tokenizer's worst case, not a prompt's).
WORDS = b"The quick brown fox jumps over 13 lazy dogs; na\\u00efve caf\\u00e9s close at 9.\\n "
HEAD = b'{"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "'


def giant_body(size: int = SIZE) -> bytes:
    return HEAD + WORDS * (size // len(WORDS)) + b'"}]}'


# What a proxy holds beyond the body itself while it parses and estimates it, as a multiple of
# the body's size: the decoded prompt (a str as large as the body), the fingerprint's JSON, and
# tiktoken's list of token ids (a Python int each, ~36 bytes per 4-byte token). Measured ~9x.
MEMORY_PER_BODY_BYTE = 12

MEASURE = """
import json, resource, sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from test_giant_bodies import giant_body
from spendbrake import governor
from spendbrake.providers import OPENAI, classify_route
from spendbrake.tokens import TokenEstimator

def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

exact = TokenEstimator()
exact.warm_up()
body = giant_body()
api = classify_route(OPENAI, "POST", "/v1/chat/completions").api
before = peak()
request = api.parse(body, "/v1/chat/completions")
estimate = governor.estimate_call(request, exact, provider_id="openai", at=datetime.now(UTC))
after = peak()

import tiktoken
content = json.loads(body)["messages"][0]["content"]
real = len(tiktoken.get_encoding("o200k_base").encode_ordinary(content))
by_bytes = TokenEstimator(cache_dir=Path("/dev/null/none"))
bound = governor.estimate_call(request, by_bytes, provider_id="openai", at=datetime.now(UTC))
print(json.dumps({
    "body_bytes": len(body),
    "extra_peak_bytes": after - before,
    "estimate": estimate.prompt_tokens,
    "estimate_without_tokenizer": bound.prompt_tokens,
    "real": real,
}))
"""


def test_a_50_mb_prompt_is_held_above_its_real_count_within_a_memory_bound() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    print(measured)  # for the record: pytest -s shows it

    assert measured["body_bytes"] >= SIZE
    assert measured["estimate"] >= measured["real"] > 10_000_000
    assert measured["estimate_without_tokenizer"] >= measured["real"]
    assert measured["extra_peak_bytes"] <= MEMORY_PER_BODY_BYTE * measured["body_bytes"]


class GatedEstimator(TokenEstimator):
    """Tokenizes a giant text only once the gate opens; says when it has started."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.gate = threading.Event()

    def count(self, text: str, model: str) -> int:
        if len(text) > 1_000_000:
            self.started.set()
            # Only a safety valve: had this run on the event loop, the small call below could
            # not be admitted meanwhile, and the order asserted would come out the other way.
            self.gate.wait(timeout=60)
        return super().count(text, model)


async def test_a_50_mb_prompt_is_tokenized_while_other_calls_are_admitted(
    tmp_path: Path,
) -> None:
    with configured_proxy(tmp_path, "[defaults]\ndaily_usd = 1000\n") as proxy:
        estimator = GatedEstimator()
        estimator.warm_up()
        proxy.enforcement.estimator = estimator
        loop = asyncio.get_running_loop()
        finished: list[str] = []

        def send(name: str, body: Any) -> asyncio.Future[Any]:
            future = asyncio.ensure_future(proxy.send(chat_flow(body)))
            future.add_done_callback(lambda _: finished.append(name))
            return future

        big = send("big", giant_body())
        await loop.run_in_executor(None, estimator.started.wait, 60)
        small = await send("small", None)  # a small chat call, while the big one tokenizes
        estimator.gate.set()
        big_flow = await big

        assert finished == ["small", "big"]
        for flow in (small, big_flow):
            state = flow_state(flow)
            assert flow.response is None
            assert state is not None
            assert state.call is not None  # held and forwarded
        assert [row["state"] for row in proxy.rows()] == ["held", "held"]
