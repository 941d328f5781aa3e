"""Ledger faults under a running proxy: a full disk, a read-only ledger, a lock held too long.

Each fault strikes while a stream is on the wire. Calls made during the fault are refused 503
``ledger_unavailable`` and never reach the provider; the stream in flight is not cut; once the
fault clears the proxy writes the stream's real cost by itself, before any new call and with no
restart, and serves again. (test_fail_closed covers a lone call refused under a lock; this adds
the call in flight and the other two faults.)
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import httpx2
import pytest
from e2e_support import (
    TEST_ID_HEADER,
    Proxy,
    assert_ledger_sound,
    ledger_calls,
    raw_client,
    requests_of,
    wait_for,
)

from spendbrake.testing.fake_provider import STREAM_DELTAS, FakeProvider

pytestmark = pytest.mark.e2e

CHAT_URL = "https://api.openai.com/v1/chat/completions"
STREAMING, CALLING = "lf-streaming", "lf-calling"
TMPFS_SIZE = "4m"


class Fault(Protocol):
    def ledger_dir(self, tmp_path: Path) -> Path: ...
    def strike(self, ledger: Path) -> None: ...
    def clear(self, ledger: Path) -> None: ...


class DiskFull:
    """The ledger on a small tmpfs of the test's own, filled up to the last byte. (Needs root
    to mount; RLIMIT_FSIZE would fake EFBIG instead of ENOSPC, and a loop device is slower.)"""

    def __init__(self) -> None:
        self.mount: Path | None = None

    def ledger_dir(self, tmp_path: Path) -> Path:
        mount = tmp_path / "tmpfs"
        mount.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", mount],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {result.stderr.strip()}")
        self.mount = mount
        return mount

    def strike(self, ledger: Path) -> None:
        assert self._fill(ledger.parent / "filler") == errno.ENOSPC
        assert shutil.disk_usage(ledger.parent).free == 0

    @staticmethod
    def _fill(path: Path) -> int | None:
        """Write zeros until the file system says no; return why."""
        with path.open("wb", buffering=0) as filler:
            while True:
                try:
                    filler.write(b"\0" * 65536)
                except OSError as e:
                    return e.errno

    def clear(self, ledger: Path) -> None:
        (ledger.parent / "filler").unlink()

    def unmount(self) -> None:
        if self.mount is not None:
            subprocess.run(["umount", "--lazy", self.mount], check=False)


class ReadOnly:
    """The ledger and its WAL made immutable (chattr +i): even root cannot write them, and
    unlike chmod or a read-only remount it also binds the files the proxy has open."""

    def ledger_dir(self, tmp_path: Path) -> Path:
        probe = tmp_path / "probe"
        probe.touch()
        if not self._chattr("+i", probe):
            pytest.skip("cannot make a file immutable here (chattr +i needs root and ext4/xfs)")
        self._chattr("-i", probe)
        return tmp_path

    def strike(self, ledger: Path) -> None:
        for path in self._files(ledger):
            assert self._chattr("+i", path), path

    def clear(self, ledger: Path) -> None:
        for path in self._files(ledger):
            self._chattr("-i", path)

    @staticmethod
    def _files(ledger: Path) -> list[Path]:
        # Not the -shm: SQLite maps it into memory, and a store to an immutable mapping is a
        # SIGBUS, which no program survives (no real read-only ledger has an immutable -shm).
        return [ledger, ledger.with_name(ledger.name + "-wal")]

    @staticmethod
    def _chattr(flag: str, path: Path) -> bool:
        done = subprocess.run(["chattr", flag, path], capture_output=True, check=False)
        return done.returncode == 0


class Locked:
    """Another process keeps the write lock past the proxy's busy timeout (2 s)."""

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None

    def ledger_dir(self, tmp_path: Path) -> Path:
        return tmp_path

    def strike(self, ledger: Path) -> None:
        self.conn = sqlite3.connect(ledger, isolation_level=None, timeout=5)
        self.conn.execute("BEGIN EXCLUSIVE")

    def clear(self, ledger: Path) -> None:
        assert self.conn is not None
        self.conn.execute("ROLLBACK")
        self.conn.close()


@pytest.fixture(params=["disk_full", "read_only", "locked"])
def fault(request: pytest.FixtureRequest) -> Iterator[Fault]:
    if request.param == "disk_full":
        disk = DiskFull()
        yield disk
        disk.unmount()
    else:
        yield ReadOnly() if request.param == "read_only" else Locked()


def chat(client: httpx2.Client, test_id: str, **extra: Any) -> httpx2.Response:
    body = {"model": "gpt-4o-mini", "max_tokens": 9, **extra}
    body["messages"] = [{"role": "user", "content": "Say hello."}]
    headers = {TEST_ID_HEADER: test_id, "x-fake-delay-ms": "400" if extra else "0"}
    return client.post(CHAT_URL, json=body, headers=headers)


def test_a_ledger_fault_refuses_new_calls_spares_the_stream_in_flight_and_heals(
    fault: Fault,
    tmp_path: Path,
    start_proxy: Callable[..., AbstractContextManager[Proxy]],
    fake: FakeProvider,
    test_id: str,
) -> None:
    with (
        start_proxy(ledger=fault.ledger_dir(tmp_path) / "ledger.db") as proxy,
        raw_client(proxy, CALLING) as calling,
        raw_client(proxy, STREAMING) as streaming,
    ):
        assert chat(calling, test_id).status_code == 200
        streamed: list[httpx2.Response] = []
        stream = threading.Thread(
            target=lambda: streamed.append(chat(streaming, test_id, stream=True)), daemon=True
        )
        stream.start()
        (held,) = wait_for(lambda: ledger_calls(proxy.ledger, STREAMING), what="the stream's hold")
        # On the wire: the provider has it (the hold is written a moment before it is sent).
        forwarded = 2  # the first call, then the stream
        wait_for(
            lambda: len(requests_of(fake, test_id)) == forwarded, what="the stream at the provider"
        )

        fault.strike(proxy.ledger)
        try:
            refused = chat(calling, test_id)
            assert refused.status_code == 503, refused.text
            assert refused.headers["x-spendbrake-reason"] == "ledger_unavailable"
            assert refused.json()["error"]["code"] == "ledger_unavailable"
            assert len(requests_of(fake, test_id)) == forwarded  # nothing went out unmetered

            stream.join(timeout=30)
            (response,) = streamed
            assert response.status_code == 200  # the stream was not cut
            assert all(delta in response.text for delta in STREAM_DELTAS)
            # The ledger refused the stream's settlement (not merely not written it yet).
            wait_for(
                lambda: f"could not settle call {held['id']} " in proxy.output(),
                timeout=30,
                what="the stream's settlement to be refused",
            )
            assert ledger_calls(proxy.ledger, STREAMING)[0]["state"] == "held"
        finally:
            fault.clear(proxy.ledger)

        # No call comes meanwhile: the proxy writes the stream's settlement by itself.
        (row,) = wait_for(
            lambda: [r for r in ledger_calls(proxy.ledger, STREAMING) if r["state"] != "held"],
            what="the stream's settlement",
        )
        assert (row["id"], row["outcome"]) == (held["id"], "ok")
        assert 0 < row["actual_nanos"] < row["held_nanos"]  # its real cost, not the hold
        # No restart: the next call goes through.
        assert chat(calling, test_id).status_code == 200
        assert_ledger_sound(proxy.ledger)
