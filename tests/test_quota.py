"""Downgrades as the monthly token bucket runs low, and the largest output a budget can pay."""

from decimal import Decimal

import pytest

from spendbrake.quota import Quota, affordable_output, downgraded_model

QUOTA = Quota(
    monthly_tokens=1_000_000,
    downgrade_below=Decimal("0.2"),
    downgrade={"gpt-4o": "gpt-4o-mini", "claude-opus-4-5": "claude-haiku-4-5"},
)


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        (0, None),
        (800_000, None),  # exactly 20 % left: not below it
        (800_001, "gpt-4o-mini"),
        (1_000_000, None),  # empty: the hold refuses, unless the config keeps the downgrade
    ],
)
def test_a_model_is_downgraded_below_the_share_left(used: int, expected: str | None) -> None:
    assert downgraded_model("gpt-4o", used, QUOTA) == expected


def test_an_empty_bucket_may_keep_the_downgraded_model() -> None:
    keep = Quota(monthly_tokens=10, downgrade={"gpt-4o": "gpt-4o-mini"},
                 keep_downgraded_when_empty=True)  # fmt: skip
    assert downgraded_model("gpt-4o", 10, keep) == "gpt-4o-mini"
    assert downgraded_model("gpt-4o", 5, keep) is None  # no threshold set: only when empty


def test_models_without_a_cheaper_one_and_agents_without_a_bucket_are_left_alone() -> None:
    assert downgraded_model("gpt-4o-mini", 999_999, QUOTA) is None
    assert downgraded_model("gpt-4o", 10**9, Quota(downgrade={"gpt-4o": "x"})) is None


def cost(n: int) -> int:
    return 1_000 + 7 * n  # a prompt's cost, then 7 nanos per output token


@pytest.mark.parametrize(
    ("room", "wanted", "minimum", "expected"),
    [
        (1_000_000, 4_000, 256, 4_000),  # the whole output fits: unchanged
        (8_000, 4_000, 256, 1_000),  # (8000 - 1000) / 7
        (8_006, 4_000, 256, 1_000),  # rounded down, never over
        (1_000 + 7 * 256, 4_000, 256, 256),  # exactly the minimum
        (1_000 + 7 * 256 - 1, 4_000, 256, None),  # not even the minimum
        (500, 100, 256, None),  # wanted below the minimum and does not fit
    ],
)
def test_the_largest_affordable_output_is_found_exactly(
    room: int, wanted: int, minimum: int, expected: int | None
) -> None:
    assert affordable_output(cost, room, wanted, minimum) == expected
