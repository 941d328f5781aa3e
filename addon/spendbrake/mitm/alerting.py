"""Fires alerts from what enforcement saw, and delivers them to webhooks, never in a call's way.

Enforcement tells this part of each settlement and refusal; the checks against the thresholds
are arithmetic on the totals the settlement already returned, in memory. Only an alert not
fired yet touches the ledger (on the LedgerWorker, like every ledger write): its row there
decides which proxy fires it, so several proxies on one ledger, or a restart, fire it once.

Delivery runs in background tasks: each attempt is an HTTP POST on a thread of this part's own
(never the loop's default executor, which parses large bodies for calls), retried with a
doubling wait, and its end, delivered or failed, is recorded in the ledger. A dead receiver
costs threads and retries here, and nothing on any call.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import sqlite3
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from typing import Any

from spendbrake import alerts
from spendbrake.alerts import Alert, AlertKey
from spendbrake.alerts_config import AlertsConfig, Webhook
from spendbrake.brakes import BURN_WINDOW
from spendbrake.burn import burn_rate
from spendbrake.heartbeat import Heartbeat
from spendbrake.ledger import (
    CallIntent,
    DayTotals,
    HoldBraked,
    HoldRefused,
    Ledger,
    LedgerUnavailable,
    Limits,
    Settlement,
)
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.sqlite_alerts import SQLiteAlertBook, calls_after, open_reader
from spendbrake.sqlite_ledger import SQLiteLedger
from spendbrake.windows import utc_now

log = logging.getLogger(__name__)

POST_TIMEOUT_S = 10.0
MAX_PENDING = 1_000  # deliveries in flight: past this a storm of alerts is logged, not posted
_MAX_REMEMBERED = 100_000


class Alerting:
    def __init__(self) -> None:
        self.config = AlertsConfig()
        self.worker: LedgerWorker | None = None
        self._fired: set[AlertKey] = set()  # fired (by this proxy or another): never again
        self._spent: dict[str, deque[tuple[datetime, int]]] = {}  # the burn window, per agent
        self._tasks: set[asyncio.Task[None]] = set()
        self._deliveries = 0
        self._posting: dict[int, asyncio.Semaphore] = {}  # per webhook: at most 2 posts at once
        self._heartbeat: asyncio.Task[None] | None = None
        self._reader: sqlite3.Connection | None = None
        self.heartbeat_checks = 0  # passes of the heartbeat so far

    def use(self, config: AlertsConfig, worker: LedgerWorker | None) -> None:
        if worker is not self.worker:
            self._fired.clear()
        self.config, self.worker = config, worker

    def running(self) -> None:
        if self.config.heartbeat_on and self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    def done(self) -> None:
        """Stop delivering; what was not delivered by now stays 'pending' in the ledger."""
        for task in [*self._tasks, *([self._heartbeat] if self._heartbeat else [])]:
            task.cancel()
        self._heartbeat = None
        self._posting.clear()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def pending_deliveries(self) -> int:
        return self._deliveries

    async def drain(self) -> None:
        """Wait for every firing and delivery under way (tests, and an orderly stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- what enforcement tells ----------------------------------------------------------------

    def settled(
        self,
        intent: CallIntent,
        settlement: Settlement,
        totals: DayTotals,
        limits: Limits,
    ) -> None:
        """After a settlement: the day's thresholds from its totals; the other windows the
        configuration limits (month, group, session, tokens), read from the ledger off the
        call's path until their thresholds have fired; the burn rate from the costs this proxy
        settled."""
        if self.worker is None:
            return
        agent, now = intent.agent, utc_now()
        shares = self.config.thresholds_for(agent)
        # Once a day's thresholds fired, a settlement costs this set lookup and nothing more.
        due = [
            s
            for s in shares
            if (agent, "threshold", "daily", totals.day, alerts.percent(s)) not in self._fired
        ]
        if due:
            self._fire_all(
                alerts.thresholds_reached(
                    agent, "daily", totals.day, totals.spent_nanos, totals.limit_nanos, due, now
                )
            )
        if any(
            (agent, "threshold", window, period_of(window, intent), alerts.percent(s))
            not in self._fired
            for window in limited_windows(limits)
            for s in shares
        ):
            self._spawn(self._check_windows(intent, limits, now))
        if (limit := self.config.burn_for(agent)) is not None:
            self._check_burn(agent, settlement.actual_nanos, limit, totals.day, now)

    def refused(self, intent: CallIntent, result: HoldRefused | HoldBraked) -> None:
        """After a hold was refused: the window without room has reached its limit; a brake
        that suspended the agent is an alert of its own."""
        if self.worker is None:
            return
        agent, now = intent.agent, utc_now()
        if isinstance(result, HoldBraked):
            if result.brake.suspends:
                self._fire(alerts.suspended(agent, result.brake, intent.started_at))
            return
        use = result.blocked_by
        window = use.window if use else "daily"
        period = period_of(window, intent)
        spent = use.spent if use else result.totals.spent_nanos
        limit = use.limit if use else result.totals.limit_nanos
        shares = self.config.thresholds_for(agent)
        reached = alerts.thresholds_reached(
            agent, window, period, spent, limit, shares, now, refused=True
        )
        self._fire_all(reached)

    def downgraded(self, agent: str, month: str, detail: str) -> None:
        if self.worker is not None:
            self._fire(alerts.downgraded(agent, month, detail, utc_now()))

    # -- firing --------------------------------------------------------------------------------

    def _fire_all(self, found: Iterable[Alert]) -> None:
        for alert in found:
            self._fire(alert)

    def _fire(self, alert: Alert, unless_since: datetime | None = None) -> None:
        if alert.key in self._fired:
            return
        if len(self._fired) >= _MAX_REMEMBERED:
            self._fired.clear()  # the ledger still knows; this only saves it the question
        self._fired.add(alert.key)
        self._spawn(self._claim_and_deliver(alert, unless_since))

    async def _claim_and_deliver(self, alert: Alert, unless_since: datetime | None) -> None:
        worker, webhooks = self.worker, self.config.webhooks
        if worker is None:
            return
        try:
            alert_id = await worker.run(
                lambda ledger: _book(ledger).claim(alert, webhooks, unless_since)
            )
        except LedgerUnavailable as e:
            self._fired.discard(alert.key)  # asked again on the next occasion
            log.warning("spendbrake: could not record an alert (%s): %s", e, alert.message)
            return
        if alert_id is None:
            return  # fired before: by another proxy, or by this one before a restart
        log.warning("spendbrake alert: %s", alert.message)
        for index, webhook in enumerate(webhooks):
            if self._deliveries >= MAX_PENDING:
                log.warning(
                    "spendbrake: %d alert deliveries pending; %s gets none",
                    MAX_PENDING,
                    webhook.target,
                )
                await self._record(worker, alert_id, index, False, 0, "too many pending")
                continue
            self._spawn(self._deliver(worker, alert_id, index, webhook, alert))

    async def _check_windows(self, intent: CallIntent, limits: Limits, now: datetime) -> None:
        worker = self.worker
        if worker is None:
            return
        try:
            uses = await worker.run(lambda ledger: ledger.window_uses(intent, limits))
        except LedgerUnavailable:
            return  # the next settlement asks again
        shares = self.config.thresholds_for(intent.agent)
        for use in uses:
            period = period_of(use.window, intent)
            self._fire_all(
                alerts.thresholds_reached(
                    intent.agent, use.window, period, use.spent, use.limit, shares, now
                )
            )

    def _check_burn(self, agent: str, nanos: int, limit: int, day: str, now: datetime) -> None:
        spent = self._spent.get(agent)
        if spent is None:
            if len(self._spent) > 10_000:
                self._spent.clear()
            spent = self._spent[agent] = deque()
        spent.append((now, nanos))
        while spent and spent[0][0] < now - BURN_WINDOW:
            spent.popleft()
        rate = burn_rate(spent, now, BURN_WINDOW)
        if rate > limit:
            self._fire(alerts.burn_rate(agent, rate, limit, day, now))

    # -- delivery ------------------------------------------------------------------------------

    async def _deliver(
        self, worker: LedgerWorker, alert_id: int, index: int, webhook: Webhook, alert: Alert
    ) -> None:
        body = alerts.payload(alert, webhook.format)
        attempts, error, wait = 0, "", self.config.retry_backoff_s
        self._deliveries += 1
        try:
            while attempts < self.config.delivery_attempts:
                if attempts:
                    await asyncio.sleep(wait)
                    wait *= 2
                attempts += 1
                try:
                    async with self._posting.setdefault(index, asyncio.Semaphore(2)):
                        await _off_the_loop(_post, webhook.url, body)
                except (OSError, http.client.HTTPException) as e:
                    error = _describe(e)
                    log.info(
                        "spendbrake: alert to %s failed (attempt %d): %s",
                        webhook.target,
                        attempts,
                        error,
                    )
                else:
                    await self._record(worker, alert_id, index, True, attempts, "")
                    return
            log.warning(
                "spendbrake: gave up delivering an alert to %s after %d attempts: %s",
                webhook.target,
                attempts,
                error,
            )
            await self._record(worker, alert_id, index, False, attempts, error)
        finally:
            self._deliveries -= 1

    async def _record(
        self,
        worker: LedgerWorker,
        alert_id: int,
        index: int,
        delivered: bool,
        attempts: int,
        error: str,
    ) -> None:
        if worker is not self.worker:
            return  # reconfigured or stopped meanwhile: that ledger is closed
        try:
            await worker.run(
                lambda ledger: _book(ledger).record_delivery(
                    alert_id, index, delivered=delivered, attempts=attempts, error=error
                )
            )
        except LedgerUnavailable as e:
            log.warning("spendbrake: could not record an alert's delivery: %s", e)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            log.error("spendbrake: an alert failed", exc_info=e)

    # -- heartbeat -----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        config = self.config
        silent = config.heartbeat_silent_after_s
        busy = config.heartbeat_busy_for_s
        tracker = Heartbeat(
            gap=timedelta(seconds=config.heartbeat_gap_s),
            silent_after=timedelta(seconds=silent) if silent else None,
            busy_for=timedelta(seconds=busy) if busy else None,
        )
        # Far enough back to find runs that began before this proxy started.
        lookback = timedelta(seconds=(silent or 0) + (busy or 0) + 2 * config.heartbeat_gap_s)
        last_id = 0
        while True:
            try:
                now = utc_now()
                seen, last_id = await _off_the_loop(self._read_calls, last_id, now - lookback)
                for agent, at in seen:
                    tracker.saw(agent, at)
                for due in tracker.due(utc_now()):
                    self._fire(due.alert, due.unless_since)
            except (sqlite3.Error, OSError) as e:
                log.warning("spendbrake: the heartbeat could not read the ledger: %s", e)
            self.heartbeat_checks += 1
            await asyncio.sleep(config.heartbeat_every_s)

    def _read_calls(self, after_id: int, since: datetime) -> tuple[list[tuple[str, datetime]], int]:
        ledger = self.worker.inline if self.worker else None
        if ledger is None:
            return [], after_id
        if self._reader is None:
            self._reader = open_reader(ledger.path)
        return calls_after(self._reader, after_id, since)


async def _off_the_loop[T](work: Callable[..., T], *arguments: object) -> T:
    """``work`` on a daemon thread of its own: never the loop's default executor (which parses
    large bodies for calls), and a post stuck on a receiver that never answers cannot hold up
    the proxy's exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work(*arguments)
        except BaseException as e:
            error = e
        # RuntimeError: the loop closed meanwhile (the proxy stopped); nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="spendbrake-alerts", daemon=True).start()
    return await done


def limited_windows(limits: Limits) -> list[str]:
    """The windows besides the day that the configuration limits for an agent."""
    configured = {
        "monthly": limits.monthly_nanos,
        "group_daily": limits.group_daily_nanos if limits.group else None,
        "group_monthly": limits.group_monthly_nanos if limits.group else None,
        "session_usd": limits.session_nanos,
        "session_tokens": limits.session_tokens,
        "monthly_tokens": limits.monthly_tokens,
        "group_monthly_tokens": limits.group_monthly_tokens if limits.group else None,
    }
    return [window for window, limit in configured.items() if limit is not None]


def period_of(window: str, intent: CallIntent) -> str:
    """What an alert of the window is once per: the day, the month, or the session."""
    if window.startswith("session"):
        return f"session {intent.session}" if intent.session else "the unnamed session"
    return intent.day[:7] if "monthly" in window else intent.day


def _book(ledger: Ledger) -> SQLiteAlertBook:
    if not isinstance(ledger, SQLiteLedger):
        raise LedgerUnavailable("alerts are kept in a SQLite ledger only")
    return SQLiteAlertBook(ledger)


def _post(url: str, body: bytes) -> None:
    """One attempt; raises OSError (urllib's errors are OSErrors) unless the answer is 2xx."""
    request = urllib.request.Request(
        url,
        data=body,
        headers={"content-type": "application/json", "user-agent": "spendbrake-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:
        response.read()


def _describe(e: OSError | http.client.HTTPException) -> str:
    """Why an attempt failed, without the URL (it may carry a token)."""
    if isinstance(e, http.client.HTTPException):
        return f"bad answer: {type(e).__name__}"
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        return str(reason.strerror if isinstance(reason, OSError) and reason.strerror else reason)
    return e.strerror or type(e).__name__
