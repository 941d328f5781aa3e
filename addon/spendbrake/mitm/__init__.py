"""The mitmproxy glue: thin addons that move data between flows and the pure modules."""

from __future__ import annotations

from spendbrake.mitm.addon import Spendbrake


def spendbrake_addons() -> list[object]:
    """What mitmproxy loads: one addon, which hands each hook to interception, identification
    and enforcement in that order."""
    return [Spendbrake()]
