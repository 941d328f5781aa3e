"""Exact money: integer nano-dollars inside, Decimal only at the edges.

A float can not hold $0.1 exactly, and a budget that drifts by rounding is not a budget. Every
amount in the ledger and the governor is an ``int`` of 1e-9 USD ("nanos"). Prices arrive as
``Decimal`` and are rounded *up* to whole nanos, so a recorded cost is never below the true one.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

NANOS_PER_USD = 1_000_000_000
_NANO = Decimal("1e-9")


class MoneyError(ValueError):
    """A dollar amount that cannot be used as money (negative, not a number, too precise)."""


def usd_to_nanos(amount: Decimal) -> int:
    """Round a dollar amount up to whole nanos (costs and holds must never be understated)."""
    return int((amount / _NANO).to_integral_value(rounding=ROUND_CEILING))


def parse_usd(text: str | int | float | Decimal, *, what: str = "amount") -> int:
    """Parse a user-written dollar amount (``"0.05"``, ``5``, ``"$1.50"``) into nanos.

    Floats from TOML are converted through their shortest decimal repr, so ``0.05`` stays
    ``0.05`` and not ``0.05000000000000000277``.
    """
    raw = str(text).strip() if not isinstance(text, Decimal) else text
    if isinstance(raw, str):
        raw = raw.removeprefix("$").replace("_", "")
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        raise MoneyError(f"{what} must be a dollar amount like 0.05, not {text!r}") from None
    if not amount.is_finite() or amount < 0:
        raise MoneyError(f"{what} must be a non-negative dollar amount, not {text!r}")
    nanos = amount / _NANO
    if nanos != nanos.to_integral_value():
        raise MoneyError(f"{what} has more than 9 decimals: {text!r}")
    return int(nanos)


def nanos_to_decimal(nanos: int) -> Decimal:
    return Decimal(nanos) * _NANO


def format_usd_exact(nanos: int) -> str:
    """The wire format for headers and JSON: a decimal string with exactly 9 decimals."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    return f"{sign}{whole}.{frac:09d}"


def format_usd(nanos: int) -> str:
    """The human format for messages: ``$0.0455``, ``$0.05``, ``$5.00``; no digit is lost."""
    exact = format_usd_exact(nanos)
    whole, frac = exact.split(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"-${whole.lstrip('-')}.{frac}" if nanos < 0 else f"${whole}.{frac}"
