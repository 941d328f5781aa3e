"""scripts/bench_streams.py's verdict on the added gap: only events relayed in time compare."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_streams import events_bunched


@pytest.mark.parametrize(
    ("spacing", "bare", "spendbrake", "bunched"),
    [
        (200, 200.20, 200.28, False),  # measured at 8ed3a40: relayed in time
        (50, 50.24, 50.31, False),
        # Measured at 8ed3a40 with events 50 ms apart: both proxies fell behind and caught up
        # in bursts, so spendbrake's shorter median gap was no win.
        (50, 46.21, 33.99, True),
        (50, 50.20, 44.00, True),  # one of the two behind is enough
    ],
)
def test_a_median_gap_short_of_the_spacing_means_the_events_arrived_bunched(
    spacing: float, bare: float, spendbrake: float, bunched: bool
) -> None:
    assert events_bunched(spacing, bare, spendbrake) is bunched
