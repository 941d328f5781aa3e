"""The mitmproxy glue: thin addons that move data between flows and the pure modules."""

from __future__ import annotations

from spendbrake.mitm.enforcement import Enforcement
from spendbrake.mitm.identification import Identification
from spendbrake.mitm.interception import Interception


def spendbrake_addons() -> list[object]:
    """The addons in hook order: identification must run before enforcement reads it."""
    return [Interception(), Identification(), Enforcement()]
