"""Money is integer nanos inside, and never rounds in the agent's favour."""

from decimal import Decimal

import pytest

from spendbrake.money import (
    MoneyError,
    format_usd,
    format_usd_exact,
    parse_usd,
    usd_to_nanos,
)


@pytest.mark.parametrize(
    ("written", "nanos"),
    [
        ("0.05", 50_000_000),
        (0.05, 50_000_000),  # a TOML float keeps its written value, not its binary one
        (5, 5_000_000_000),
        ("$1.50", 1_500_000_000),
        ("0.000000001", 1),
        ("1_000", 1_000_000_000_000),
        (Decimal("0.1"), 100_000_000),
    ],
)
def test_parse_usd_reads_what_users_write(written: object, nanos: int) -> None:
    assert parse_usd(written) == nanos  # type: ignore[arg-type]


@pytest.mark.parametrize("written", ["-1", "abc", "NaN", "Infinity", "0.0000000001", ""])
def test_parse_usd_rejects_what_is_not_money(written: str) -> None:
    with pytest.raises(MoneyError, match="daily_usd"):
        parse_usd(written, what="daily_usd")


def test_prices_round_up_to_the_next_nano() -> None:
    assert usd_to_nanos(Decimal("0.0000000001")) == 1
    assert usd_to_nanos(Decimal("0.00000405")) == 4050
    assert usd_to_nanos(Decimal("0")) == 0


def test_the_wire_format_has_exactly_nine_decimals() -> None:
    assert format_usd_exact(45_500_000) == "0.045500000"
    assert format_usd_exact(5_000_000_000) == "5.000000000"
    assert format_usd_exact(-1) == "-0.000000001"


def test_the_human_format_drops_trailing_zeros_but_no_digits() -> None:
    assert format_usd(45_500_000) == "$0.0455"
    assert format_usd(50_000_000) == "$0.05"
    assert format_usd(5_000_000_000) == "$5.00"
    assert format_usd(123) == "$0.000000123"
    assert format_usd(-10_000_000) == "-$0.01"
