"""JSON work on giant request bodies, in a process of its own.

Python's json module holds the GIL through a whole load or dump: about 0.1 s each for a 50 MB
body, and parsing a call also dumps it sorted for its fingerprint. On a thread of the proxy
that still stops every other agent's flows for as long. The worker process parses, counts the
prompt's tokens, fingerprints and rewrites, and hands back only what the proxy needs: the parsed
call with its prompt already counted, and the rewritten body when there is one.

The proxy talks to the worker with blocking pipe I/O on a thread: the GIL is released while the
bytes move, so the loop keeps running. One worker serves one body at a time (giant bodies queue,
so their memory does not add up). It is started by the first giant body and again after it dies;
a body it could not answer fails its call closed.

Run as ``python -m spendbrake.body_worker`` by ``BodyWorker``; frames on stdin and stdout.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Literal

from spendbrake.governor import count_prompt
from spendbrake.providers.base import Api, CallRequest, Rewrite
from spendbrake.tokens import TokenEstimator

# A frame: the length of a pickled header, the header, the length of a body, the body. The body
# travels as raw bytes, never inside a pickle, so it is not copied on its way through.
_LENGTH = struct.Struct(">Q")

Operation = Literal["parse", "rewritten", "with_usage_requested"]


@dataclass(frozen=True)
class _Job:
    operation: Operation
    api: Api
    path: str = ""
    change: Rewrite | None = None


@dataclass(frozen=True)
class _Answer:
    parsed: tuple[str, CallRequest] | None = None  # the path and the call, for parse and rewritten
    error: BaseException | None = None


class BodyWorkerFailed(RuntimeError):
    """The worker died or answered nonsense: the call it was working on cannot be metered."""


def counted(request: CallRequest, estimator: TokenEstimator) -> CallRequest:
    """``request`` with its prompt counted, and without the texts (they stay in the worker)."""
    return replace(request, prompt_texts=(), counted_prompt=count_prompt(request, estimator))


def _write_frame(stream: IO[bytes], header: object, body: bytes) -> None:
    packed = pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(packed)) + packed + _LENGTH.pack(len(body)))
    stream.write(body)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _read_frame(stream: IO[bytes]) -> tuple[object, bytes]:
    """Raises EOFError when the other side has gone."""
    (header_size,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    header = pickle.loads(_read_exactly(stream, header_size))
    (body_size,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    return header, _read_exactly(stream, body_size)


def _work(job: _Job, owned: list[bytes], estimator: TokenEstimator) -> tuple[_Answer, bytes]:
    """``owned`` holds the body and nothing else does: once rewritten, the original is freed
    before the new body is parsed, so a giant body is never held twice over."""
    body = owned.pop()
    if job.operation == "with_usage_requested":
        return _Answer(), job.api.with_usage_requested(body)
    path = job.path
    if job.operation == "rewritten":
        assert job.change is not None
        body, path = job.api.rewritten(body, path, job.change)
    parsed = counted(job.api.parse(body, path), estimator)
    return _Answer(parsed=(path, parsed)), body if job.operation == "rewritten" else b""


def _sendable(error: BaseException) -> BaseException:
    """``error`` itself when it survives pickling (UnreadableRequest does), else its words."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return BodyWorkerFailed(f"{type(error).__name__}: {error}")
    return error


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    estimator = TokenEstimator()
    while True:
        try:
            job, body = _read_frame(requests)
        except EOFError:
            return  # the proxy has gone
        owned = [body]
        del body
        try:
            assert isinstance(job, _Job)
            answer, out = _work(job, owned, estimator)
        except Exception as e:
            answer, out = _Answer(error=_sendable(e)), b""
        _write_frame(answers, answer, out)
        del answer, out  # not kept until the next body arrives


# A 50 MB prompt of ordinary text takes ~2.5 s here. Some texts take the tokenizer far longer
# (a long run of letters without a space is one pre-token, merged in superlinear time: 3.2 MB
# of random letters took 2.8 s, 50 MB would take minutes), and giant bodies queue behind the
# one being worked on, so a body that takes longer than this is refused.
TIMEOUT_S = 120.0


def _import_paths() -> list[str]:
    """Where the worker finds spendbrake and its dependencies: where this process found them
    (``mitmdump -s`` may have added paths), but never the current directory."""
    here = os.getcwd()
    package_root = str(Path(__file__).resolve().parent.parent)
    found = [p for p in sys.path if p and os.path.isabs(p) and os.path.abspath(p) != here]
    return [package_root, *(p for p in found if p != package_root)]


class BodyWorker:
    """The proxy's side: one worker process, started when first needed, one body at a time.

    Its methods block (on pipes, with the GIL released): call them on a thread.
    """

    def __init__(self, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        # The worker while a body is in the works, and why work on it was stopped, if it was.
        self._working: subprocess.Popen[bytes] | None = None
        self._stopped_why: str | None = None
        self._stopping = threading.Lock()  # the watchdog's thread and the loop's may both stop

    def parse(self, api: Api, body: bytes, path: str) -> CallRequest:
        answer, _ = self._ask(_Job("parse", api, path), body)
        assert answer.parsed is not None
        return answer.parsed[1]

    def rewritten(
        self, api: Api, body: bytes, path: str, change: Rewrite
    ) -> tuple[bytes, str, CallRequest]:
        """The rewritten body and path (as ``Api.rewritten``) and the call they now make."""
        answer, rewritten = self._ask(_Job("rewritten", api, path, change), body)
        assert answer.parsed is not None
        return rewritten, *answer.parsed

    def with_usage_requested(self, api: Api, body: bytes) -> bytes:
        return self._ask(_Job("with_usage_requested", api), body)[1]

    def close(self) -> None:
        """Ends the worker at once: the proxy is stopping. A body in the works, or waiting for
        its turn, is refused, and no new worker is started."""
        self._closed = True
        if (process := self._process) is not None:
            process.kill()  # a body in the works fails at once, and its thread lets go
        with self._lock:
            self._stop()

    def abandon(self) -> None:
        """Stops work on the body in the works, whose client has left: a pathological body
        would otherwise keep every other giant body waiting until the timeout. Nothing to do
        when no body is in the works yet."""
        self._stop_current("its client left, so the body worker stopped working on it")

    def _stop_current(self, why: str) -> None:
        with self._stopping:
            if self._working is not None and self._stopped_why is None:
                self._stopped_why = why
                self._working.kill()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _ask(self, job: _Job, body: bytes) -> tuple[_Answer, bytes]:
        with self._lock:
            process = self._running()
            assert process.stdin is not None
            assert process.stdout is not None
            with self._stopping:
                self._working, self._stopped_why = process, None
            too_long = (
                f"the body worker took longer than {self.timeout_s:g} s over this request body "
                "and was stopped"
            )
            watchdog = threading.Timer(self.timeout_s, self._stop_current, (too_long,))
            watchdog.start()
            try:
                _write_frame(process.stdin, job, body)
                answer, out = _read_frame(process.stdout)
            except Exception as e:  # a pipe gone, a frame cut short or garbled
                self._stop()
                if (why := self._stopped_why) is not None:
                    raise BodyWorkerFailed(f"{why}; started afresh") from None
                raise BodyWorkerFailed(f"the body worker failed ({e!r}); started afresh") from e
            finally:
                watchdog.cancel()
                with self._stopping:
                    self._working = None
            if self._stopped_why is not None:
                self._stop()  # killed just as its answer came: the next body starts afresh
        if not isinstance(answer, _Answer):
            raise BodyWorkerFailed(f"the body worker answered {type(answer).__name__}")
        if answer.error is not None:
            raise answer.error
        return answer, out

    def _running(self) -> subprocess.Popen[bytes]:
        if self._closed:
            raise BodyWorkerFailed("the proxy is stopping; its body worker has ended")
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        self._process = subprocess.Popen(
            # -P: nothing is imported from the directory the proxy was started in (under
            # spendbrake run, the agent's own, where it could write a json.py of its choosing).
            [sys.executable, "-P", "-m", "spendbrake.body_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(_import_paths())},
            cwd="/",
            # Not in the proxy's process group: a Ctrl-C at the terminal is for the proxy, which
            # then closes the pipe; the worker ends when it reads the end of it.
            start_new_session=True,
        )
        return self._process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        assert process.stdout is not None
        with contextlib.suppress(OSError):  # a dead worker's pipe
            process.stdin.close()
        try:
            process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


if __name__ == "__main__":
    # Answers go out on a descriptor of their own; file descriptor 1 becomes stderr, so nothing
    # a library prints (from Python or native code) lands among the frames.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # Frames carry this module's classes under its own name, not __main__'s.
    from spendbrake import body_worker

    with contextlib.suppress(BrokenPipeError):  # the proxy went away mid-answer
        body_worker.serve(sys.stdin.buffer, answers)
