"""Where a request body's JSON work runs, by its size: on the loop, on a thread, or in the body
worker process. Every agent's flows share the one event loop, so none may wait on another's
giant prompt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from spendbrake.body_worker import BodyWorker, BodyWorkerFailed
from spendbrake.providers.base import Api, CallRequest, Rewrite

# Parsing ~100 kB takes about a millisecond: cheaper than handing it over.
ON_LOOP_MAX_BYTES = 100_000
# The json module holds the GIL through a load or dump (~2 ms a MB here), so on a thread a body
# still pauses the loop that long; above this, the worker process does the work.
ON_THREAD_MAX_BYTES = 1_000_000


# While a giant body is in the worker, how often the loop looks whether its client is still there.
CLIENT_CHECK_S = 0.5

type ClientLeft = Callable[[], bool]


def _client_stays() -> bool:
    return False


class RequestBodies:
    """Each method takes ``client_left``: a giant body whose client has gone is not worked on
    (or no longer), so an agent that times out and retries cannot keep others waiting."""

    def __init__(self) -> None:
        self.worker = BodyWorker()
        # Giant bodies take turns in the worker. They wait for their turn on the loop, and the
        # one in the worker is waited for on a thread of its own: waiting on the loop's shared
        # threads would leave none for identification and mid-size bodies.
        self._turn = asyncio.Lock()
        self._worker_thread = ThreadPoolExecutor(1, thread_name_prefix="spendbrake-bodies")

    async def _in_worker[**P, T](
        self, client_left: ClientLeft, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        async with self._turn:
            if client_left():
                raise BodyWorkerFailed("its client left before the body worker's turn came")
            answer = asyncio.get_running_loop().run_in_executor(
                self._worker_thread, partial(work, *args, **kwargs)
            )
            while not answer.done():
                await asyncio.wait([answer], timeout=CLIENT_CHECK_S)
                if not answer.done() and client_left():
                    self.worker.abandon()  # again at the next check, if not yet in the works
            return answer.result()

    async def parse(
        self, api: Api, body: bytes, path: str, client_left: ClientLeft = _client_stays
    ) -> CallRequest:
        if len(body) > ON_THREAD_MAX_BYTES:
            return await self._in_worker(client_left, self.worker.parse, api, body, path)
        return await _off_the_loop_if_large(body, api.parse, body, path)

    async def rewritten(
        self,
        api: Api,
        body: bytes,
        path: str,
        change: Rewrite,
        client_left: ClientLeft = _client_stays,
    ) -> tuple[bytes, str, CallRequest]:
        """The body and path with ``change`` made, and the call they now make."""
        if len(body) > ON_THREAD_MAX_BYTES:
            return await self._in_worker(
                client_left, self.worker.rewritten, api, body, path, change
            )
        body, path = await _off_the_loop_if_large(body, api.rewritten, body, path, change)
        return body, path, await self.parse(api, body, path, client_left)

    async def with_usage_requested(
        self, api: Api, body: bytes, client_left: ClientLeft = _client_stays
    ) -> bytes:
        if len(body) > ON_THREAD_MAX_BYTES:
            return await self._in_worker(client_left, self.worker.with_usage_requested, api, body)
        return await _off_the_loop_if_large(body, api.with_usage_requested, body)

    def close(self) -> None:
        """Ends the worker; bodies still waiting for it are refused as their turn comes."""
        self.worker.close()


async def _off_the_loop_if_large[**P, T](
    body: bytes, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    if len(body) > ON_LOOP_MAX_BYTES:
        return await asyncio.to_thread(work, *args, **kwargs)
    return work(*args, **kwargs)
