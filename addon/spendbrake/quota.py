"""Rewrites that keep an agent working instead of refusing it: a cheaper model when its monthly
token bucket runs low, and a lower max output when its budget cannot pay the full one.

Pure: the addon reads the bucket and the room left from the ledger, asks here, and rewrites
the request in the provider's own fields (``Api.rewritten``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

DEFAULT_CAP_MINIMUM = 256  # below this many output tokens an answer is rarely of use


@dataclass(frozen=True)
class Quota:
    """An agent's monthly token bucket and what happens as it empties."""

    monthly_tokens: int | None = None
    downgrade_below: Decimal | None = None  # a share of monthly_tokens, e.g. 0.2
    downgrade: Mapping[str, str] = field(default_factory=dict)  # model -> cheaper model
    keep_downgraded_when_empty: bool = False  # else an empty bucket refuses
    group: str = ""  # the bucket is this group's, shared by its agents ("" : the agent's own)


def downgraded_model(model: str, used_tokens: int, quota: Quota) -> str | None:
    """The cheaper model this call should go to, or None to leave it as asked."""
    cheaper = quota.downgrade.get(model)
    if quota.monthly_tokens is None or cheaper is None:
        return None
    left = quota.monthly_tokens - used_tokens
    if left <= 0:
        return cheaper if quota.keep_downgraded_when_empty else None  # the hold refuses
    if quota.downgrade_below is not None and left < quota.downgrade_below * quota.monthly_tokens:
        return cheaper
    return None


def affordable_output(
    cost_with_output: Callable[[int], int], room_nanos: int, wanted: int, minimum: int
) -> int | None:
    """The largest max output in [minimum, wanted] whose worst case fits ``room_nanos``;
    ``wanted`` itself when it fits, None when not even ``minimum`` does.

    ``cost_with_output`` must not decrease as the output grows (prices are never negative),
    which makes a binary search exact.
    """
    if cost_with_output(wanted) <= room_nanos:
        return wanted
    if minimum > wanted or cost_with_output(minimum) > room_nanos:
        return None
    low, high = minimum, wanted  # cost(low) fits, cost(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        if cost_with_output(middle) <= room_nanos:
            low = middle
        else:
            high = middle
    return low
