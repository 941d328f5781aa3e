#!/usr/bin/env python3
"""Coverage-guided fuzzing of the provider parsers and stream meters with atheris.

The hypothesis properties in tests/test_fuzz_*.py run in every ``scripts/test``; this harness
checks the same contract for as long as you let it, guided by coverage. atheris is not a
project dependency, so it runs from a throwaway virtualenv that borrows the project's:

    .venv/bin/python -m venv /tmp/atheris-venv
    /tmp/atheris-venv/bin/pip install atheris
    /tmp/atheris-venv/bin/python scripts/fuzz_atheris.py -max_total_time=600 /tmp/sb-corpus

(Arguments are libFuzzer's; a corpus directory is seeded with every route's valid request,
answer and stream the first time.) The contract, per input:

- a request parser returns a CallRequest or raises UnreadableRequest; the estimate of a parsed
  request raises nothing but UnknownModel, and its rewrites parse again;
- a usage parser raises nothing and reports no negative count or cost;
- a stream meter raises nothing, relays every byte (less the proxy's own usage chunk), and meters
  the same usage whatever the chunking.

Anything else is a crash: libFuzzer stops and writes the input to ./crash-<sha1>.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import site
import sys
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("spendbrake") is None:  # borrow the project's virtualenv
    site.addsitedir(str(ROOT / ".venv" / "lib" / "python3.12" / "site-packages"))
sys.path.insert(0, str(ROOT / "tests"))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["spendbrake"]):
    from spendbrake import governor
    from spendbrake.pricing import UnknownModel
    from spendbrake.providers import provider_for_host
    from spendbrake.providers.base import MeteredUsage, Rewrite, UnreadableRequest
    from spendbrake.tokens import TokenEstimator

from fuzzing import ROUTES, Route, dumps  # noqa: E402

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
ESTIMATOR = TokenEstimator()
MODES = ("request", "answer", "stream", "stream-stripped")


def check_request(route: Route, body: bytes) -> None:
    try:
        request = route.api.parse(body, route.path)
    except UnreadableRequest:
        return
    provider = provider_for_host(route.host)
    assert provider is not None
    try:
        estimate = governor.estimate_call(request, ESTIMATOR, provider_id=provider.id, at=NOW)
    except UnknownModel:
        pass
    else:
        assert estimate.cost_nanos >= 0, estimate
    after, path = route.api.rewritten(body, route.path, Rewrite(model="gpt-4o-mini", max_output=5))
    route.api.parse(after, path)
    if request.wants_usage_injection:
        route.api.parse(route.api.with_usage_requested(body), route.path)


def check_usage(usage: MeteredUsage | None) -> None:
    if usage is None:
        return
    for field in fields(usage.tokens):
        assert getattr(usage.tokens, field.name) >= 0, usage
    assert usage.reported_cost_nanos is None or usage.reported_cost_nanos >= 0, usage


def check_answer(route: Route, body: bytes) -> None:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return  # the settlement's json.loads, not a parser's concern
    check_usage(route.api.usage_from_json(obj))


def relay(route: Route, chunks: list[bytes], strip: bool) -> tuple[bytes, object]:
    meter = route.api.stream_meter(strip_injected_usage=strip)
    out = b""
    for chunk in [*chunks, b""]:
        result = meter(chunk)
        out += b"".join(result) if isinstance(result, list) else result
    check_usage(meter.usage)
    return out, (meter.usage, meter.usage_is_final, meter.relayed_text_bytes)


def check_stream(route: Route, stream: bytes, cuts: list[int], strip: bool) -> None:
    bounds = [0, *sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    whole, metered_whole = relay(route, [stream] if stream else [], strip)
    pieces, metered_pieces = relay(route, chunks, strip)
    assert pieces == whole
    assert strip or whole == stream
    assert metered_pieces == metered_whole, (metered_pieces, metered_whole)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    route = ROUTES[provider.ConsumeIntInRange(0, len(ROUTES) - 1)]
    mode = MODES[provider.ConsumeIntInRange(0, len(MODES) - 1)]
    cuts = [provider.ConsumeUInt(2) for _ in range(provider.ConsumeIntInRange(0, 8))]
    payload = provider.ConsumeBytes(provider.remaining_bytes())
    if mode == "request":
        check_request(route, payload)
    elif mode == "answer":
        check_answer(route, payload)
    else:
        check_stream(route, payload, cuts, strip=mode == "stream-stripped")


def seed(corpus: Path) -> None:
    """Every route's valid request, answer and stream, framed as test_one_input reads them."""
    from test_stream_chunking import chat, gemini_array, gemini_sse, messages, responses

    streams = {"chat": chat, "responses": responses, "messages": messages}
    corpus.mkdir(parents=True, exist_ok=True)
    for index, route in enumerate(ROUTES):
        if route.name.startswith("gemini"):
            transcripts = [gemini_sse("\r\n"), gemini_array("\n")]
        else:
            kind = next((k for k in streams if k in route.name), "chat")
            kind = "messages" if "anthropic" in route.name else kind
            transcripts = [streams[kind]("\n")]
        payloads = [(0, dumps(route.body)), (1, json.dumps(route.response).encode())]
        payloads += [(2, t) for t in transcripts] + [(3, t) for t in transcripts]
        for mode, payload in payloads:
            # ConsumeIntInRange reads whole bytes, little end first; then no cuts.
            framed = bytes([index, mode, 0]) + payload
            (corpus / f"seed-{index}-{mode}-{len(payload)}").write_bytes(framed)


def main() -> None:
    corpora = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    for corpus in corpora:
        if not corpus.exists() or not any(corpus.iterdir()):
            seed(corpus)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
