"""Alerts: what is worth telling a person, in words, and as webhooks carry it.

Pure: the proxy part (``mitm/alerting``) decides when to ask, the ledger (``sqlite_alerts``)
decides which proxy fires, and this module says what fires and how it reads. An alert is known
by its key (agent, kind, window, period, threshold); the same key fires once, ever.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache

from spendbrake.brakes import Brake
from spendbrake.burn import format_duration, format_rate
from spendbrake.ledger import TOKEN_WINDOWS
from spendbrake.money import format_usd, format_usd_exact

type AlertKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class Alert:
    agent: str
    kind: str  # threshold, suspended, loop_detected, burn_rate, downgraded, silent, busy
    window: str  # daily, monthly, monthly_tokens, or ""
    period: str  # the window's day or month, or when the episode began
    threshold: str  # "80%" for a threshold, else ""
    message: str  # one line for a person
    at: datetime
    spent_nanos: int | None = None  # in the window, for thresholds
    limit_nanos: int | None = None

    @property
    def key(self) -> AlertKey:
        return (self.agent, self.kind, self.window, self.period, self.threshold)


@cache  # asked on every settlement, of the same few shares
def percent(share: Decimal) -> str:
    """0.8 → "80%", 0.125 → "12.5%"."""
    return f"{(share * 100).normalize():f}%"


def reached(spent: int, limit: int, share: Decimal) -> bool:
    """Whether ``spent`` is at least ``share`` of ``limit`` (exact: integers and a Decimal)."""
    return limit > 0 and Decimal(spent) >= share * limit


def thresholds_reached(
    agent: str,
    window: str,
    period: str,
    spent: int,
    limit: int,
    shares: Sequence[Decimal],
    at: datetime,
    *,
    refused: bool = False,
) -> Iterator[Alert]:
    """The threshold alerts a window's spend has reached. A window that refused a call for want
    of room has reached its limit (100 %) whatever was spent: the holds kept spend below it."""
    used, of = _amounts(window, spent, limit)
    for share in shares:
        if not (reached(spent, limit, share) or (refused and share >= 1)):
            continue
        figures = f"{used} of {of} ({period})"
        if refused and share >= 1:
            # Spend itself stays below the limit (the holds see to that): a call that did not
            # fit is how a window says it is full.
            message = (
                f"{agent} hit its {window} limit ({period}): a call was refused with "
                f"{used} of {of} spent"
            )
        else:
            message = f"{agent} has spent {percent(share)} of its {window} limit: {figures}"
        yield Alert(
            agent,
            "threshold",
            window,
            period,
            percent(share),
            message,
            at,
            spent_nanos=spent,
            limit_nanos=limit,
        )


def _amounts(window: str, spent: int, limit: int) -> tuple[str, str]:
    """Dollars, or tokens for the windows counted in tokens."""
    if window in TOKEN_WINDOWS:
        return f"{spent:,} tokens", f"{limit:,}"
    return format_usd(spent), format_usd(limit)


def suspended(agent: str, brake: Brake, at: datetime) -> Alert:
    loop = brake.code == "loop_detected"
    what = "for a loop" if loop else f"({brake.code})"
    return Alert(
        agent,
        "loop_detected" if loop else "suspended",
        "",
        at.isoformat(timespec="seconds"),
        "",
        f"{agent} was suspended {what}: {brake.detail}; resume it with: spendbrake resume {agent}",
        at,
    )


def burn_rate(agent: str, nanos_per_minute: int, limit: int, day: str, at: datetime) -> Alert:
    return Alert(
        agent,
        "burn_rate",
        "",
        day,
        "",
        f"{agent} is spending {format_rate(nanos_per_minute)}, above the alert's "
        f"{format_rate(limit)}",
        at,
    )


def downgraded(agent: str, month: str, detail: str, at: datetime) -> Alert:
    return Alert(
        agent,
        "downgraded",
        "monthly_tokens",
        month,
        "",
        f"{agent}'s calls now go to a cheaper model: {detail}",
        at,
    )


def silent(agent: str, last_call: datetime, at: datetime) -> Alert:
    quiet = format_duration(at - last_call)
    return Alert(
        agent,
        "silent",
        "",
        last_call.isoformat(timespec="microseconds"),
        "",
        f"{agent} went silent: no call for {quiet} (the last at "
        f"{last_call.strftime('%Y-%m-%d %H:%M:%S %Z')})",
        at,
    )


def busy(agent: str, since: datetime, at: datetime) -> Alert:
    return Alert(
        agent,
        "busy",
        "",
        since.isoformat(timespec="microseconds"),
        "",
        f"{agent} has been calling without a pause for {format_duration(at - since)} "
        f"(since {since.strftime('%Y-%m-%d %H:%M:%S %Z')})",
        at,
    )


# -- webhooks ---------------------------------------------------------------------------------


def json_payload(alert: Alert) -> bytes:
    """spendbrake's own shape: one flat object, money as exact decimal strings."""
    body: dict[str, object] = {
        "source": "spendbrake",
        "alert": alert.kind,
        "agent": alert.agent,
        "window": alert.window or None,
        "period": alert.period,
        "threshold": alert.threshold or None,
        "message": alert.message,
        "at": alert.at.isoformat(),
    }
    if alert.spent_nanos is not None:
        body["spent_usd"] = format_usd_exact(alert.spent_nanos)
    if alert.limit_nanos is not None:
        body["limit_usd"] = format_usd_exact(alert.limit_nanos)
    return json.dumps(body).encode()


_SLACK_ICON = {"threshold": ":money_with_wings:", "silent": ":zzz:", "busy": ":repeat:"}


def slack_payload(alert: Alert) -> bytes:
    """A Slack (or Mattermost, Discord /slack, Teams-compatible) incoming webhook's message."""
    icon = _SLACK_ICON.get(alert.kind, ":rotating_light:")
    return json.dumps({"text": f"{icon} spendbrake: {alert.message}"}).encode()


def payload(alert: Alert, format: str) -> bytes:
    return slack_payload(alert) if format == "slack" else json_payload(alert)
