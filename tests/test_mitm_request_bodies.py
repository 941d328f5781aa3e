"""Giant bodies take turns in the body worker without taking the event loop's shared threads,
and a proxy that stops refuses the bodies in and waiting for the worker."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import pytest

from spendbrake.body_worker import BodyWorkerFailed
from spendbrake.mitm.request_bodies import ON_THREAD_MAX_BYTES, RequestBodies
from spendbrake.providers import OPENAI, classify_route
from spendbrake.providers.base import CallRequest

GIANT = b"x" * (ON_THREAD_MAX_BYTES + 1)  # what goes to the worker (its content is not read)


@dataclass(frozen=True)
class SleepyApi:
    """Works on a body for a while in the worker (as the tokenizer does on a slow text)."""

    seconds: float

    def parse(self, body: bytes, path: str = "") -> CallRequest:
        time.sleep(self.seconds)
        raise AssertionError("the test is over before this body is")


async def in_the_worker(bodies: RequestBodies) -> None:
    """Until the worker has started on the first body."""
    for _ in range(3000):
        if bodies.worker.pid is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker never started")


async def test_giant_bodies_waiting_for_the_worker_leave_the_loops_threads_free() -> None:
    """The loop's default threads identify agents and parse mid-size bodies: a queue of giant
    bodies (more than there are such threads) must not take them all."""
    bodies = RequestBodies()
    waiting = [asyncio.ensure_future(bodies.parse(SleepyApi(5), GIANT, "")) for _ in range(12)]  # type: ignore[arg-type]
    try:
        await in_the_worker(bodies)
        served = await asyncio.to_thread(lambda: "served")

        assert served == "served"
        assert not any(body.done() for body in waiting)  # the first is still in the worker
    finally:
        bodies.close()
        await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_stopping_proxy_refuses_the_bodies_in_and_waiting_for_the_worker() -> None:
    bodies = RequestBodies()
    waiting = [asyncio.ensure_future(bodies.parse(SleepyApi(30), GIANT, "")) for _ in range(3)]  # type: ignore[arg-type]
    await in_the_worker(bodies)

    bodies.close()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)

    assert [type(outcome) for outcome in outcomes] == [BodyWorkerFailed] * 3
    assert "has ended" in str(outcomes[-1])  # refused without starting a worker of its own
    assert bodies.worker.pid is None


class ClientGone:
    """``client_left`` for a body: False until the test says the agent has gone."""

    def __init__(self, gone: bool = False) -> None:
        self.gone = gone

    def __call__(self) -> bool:
        return self.gone


CHAT_API = classify_route(OPENAI, "POST", "/v1/chat/completions").api
GIANT_CHAT = json.dumps(
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi " * 400_000}]}
).encode()


async def test_a_body_whose_client_leaves_is_stopped_in_the_worker_and_the_next_one_served() -> (
    None
):
    """An agent that times out on a slow body (a text the tokenizer takes minutes over) and
    retries would otherwise keep every other giant body waiting up to the worker's timeout."""
    bodies = RequestBodies()
    agent = ClientGone()
    slow = asyncio.ensure_future(bodies.parse(SleepyApi(60), GIANT, "", agent))  # type: ignore[arg-type]
    try:
        await in_the_worker(bodies)
        stuck_in = bodies.worker.pid
        other = asyncio.ensure_future(bodies.parse(CHAT_API, GIANT_CHAT, ""))

        agent.gone = True

        with pytest.raises(BodyWorkerFailed, match="its client left"):
            await slow
        # Served long before the 60 s the slow body would have kept the worker.
        assert (await asyncio.wait_for(other, timeout=30)).model == "gpt-4o"
        assert bodies.worker.pid not in (None, stuck_in)  # started afresh
    finally:
        bodies.close()
        await asyncio.gather(slow, return_exceptions=True)


async def test_a_body_whose_client_left_while_it_waited_for_its_turn_is_never_worked_on() -> None:
    bodies = RequestBodies()
    ahead = asyncio.ensure_future(bodies.parse(SleepyApi(1), GIANT, ""))  # type: ignore[arg-type]
    left = asyncio.ensure_future(bodies.parse(SleepyApi(60), GIANT, "", ClientGone(True)))  # type: ignore[arg-type]
    try:
        await in_the_worker(bodies)
        outcomes = await asyncio.wait_for(
            asyncio.gather(ahead, left, return_exceptions=True), timeout=30
        )
        assert type(outcomes[0]) is AssertionError  # worked on: SleepyApi's own end
        assert isinstance(outcomes[1], BodyWorkerFailed)
        assert "its client left before the body worker's turn came" in str(outcomes[1])
    finally:
        bodies.close()
