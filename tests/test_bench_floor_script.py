"""scripts/bench_floor_script.py: the side-process floor's echo link answers each caller with its
own frame, however the frames are split or interleaved, and the variant name is checked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_floor_script import VARIANT_ENV, _SideProcess


def test_concurrent_round_trips_each_get_their_own_frame_back() -> None:
    # Sizes from empty to several socket buffers, so answers arrive split and bunched.
    payloads = [bytes([n % 251]) * size for n, size in enumerate([0, 1, 7, 65_536, 300_000] * 8)]

    async def ask_all() -> list[bytes]:
        side = _SideProcess()
        try:
            return await asyncio.gather(*(side.round_trip(p) for p in payloads))
        finally:
            side.stop()

    assert asyncio.run(ask_all()) == payloads


def test_an_unknown_variant_stops_the_script_loading() -> None:
    scripts = Path(__file__).resolve().parent.parent / "scripts"
    result = subprocess.run(
        [sys.executable, "-c", "import bench_floor_script"],
        cwd=scripts,
        env={**os.environ, VARIANT_ENV: "free-lunch"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "SPENDBRAKE_BENCH_FLOOR='free-lunch': choose from no-call-work, side-process" in (
        result.stderr
    )
