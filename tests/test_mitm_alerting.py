"""Alerts fired from what enforcement saw: each once, to the log and the webhooks, off the
request path. Driven through the enforcement addon on a real ledger, with receivers on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mitmproxy import http

from spendbrake.mitm.alerting import Alerting
from test_mitm_enforcement import Proxy, chat_body, chat_flow, completion, configured_proxy
from webhook_receiver import down_url, never_answering, receiving

# A call of "hi" on gpt-4o-mini answered with 8 in / 9 out costs 8 * 150 + 9 * 600 = 6 600
# nanos; its hold (max_tokens 10) is 7 200. In $0.00003 the 3rd call passes 50 %, the 4th 80 %,
# and the 5th does not fit: the day's limit is reached.
TIGHT = "[agents.bot]\ndaily_usd = 0.00003\n"


def alerts_toml(*webhooks: tuple[str, str], extra: str = "") -> str:
    hooks = ", ".join(f'{{ url = "{url}", format = "{form}" }}' for url, form in webhooks)
    return f"[alerts]\ndelivery_attempts = 3\nretry_backoff_s = 0.01\nwebhooks = [{hooks}]\n{extra}"


@contextmanager
def alerting_proxy(tmp_path: Path, config_toml: str) -> Iterator[tuple[Proxy, Alerting]]:
    with configured_proxy(tmp_path, config_toml) as proxy:
        alerting = proxy.enforcement.alerts
        alerting.use(proxy.enforcement.config.alerts, proxy.enforcement.worker)
        try:
            yield proxy, alerting
        finally:
            alerting.done()


async def call(proxy: Proxy, content: str = "hi") -> http.HTTPFlow:
    """One call through the addon as mitmproxy drives it; answered by the 'provider' if it was
    let through."""
    flow = await proxy.send(chat_flow(chat_body(messages=[{"role": "user", "content": content}])))
    if flow.response is None:
        flow.response = http.Response.make(200, completion(), {"content-type": "application/json"})
    proxy.enforcement.responseheaders(flow)
    await proxy.enforcement.response(flow)
    return flow


def deliveries(ledger: Path) -> list[tuple[str, str, str, int, str]]:
    with sqlite3.connect(ledger) as db:
        return db.execute(
            """
            SELECT a.threshold, d.target, d.state, d.attempts, d.last_error
            FROM alert_deliveries AS d JOIN alerts AS a ON a.id = d.alert_id
            ORDER BY a.id, d.webhook
            """
        ).fetchall()


async def test_each_threshold_fires_exactly_once_to_every_webhook(tmp_path: Path) -> None:
    with receiving() as receiver:
        config = TIGHT + alerts_toml(
            (f"{receiver.url}/json", "json"), (f"{receiver.url}/services/T0/B0/token", "slack")
        )
        with alerting_proxy(tmp_path, config) as (proxy, alerting):
            statuses = []
            for i in range(8):
                flow = await call(proxy, f"call {i}")
                statuses.append(flow.response.status_code if flow.response else None)
                await alerting.drain()
            bodies = receiver.wait_for(6)

    assert statuses == [200, 200, 200, 200, 402, 402, 402, 402]
    assert len(bodies) == 6  # three thresholds, two webhooks, and nothing more
    json_bodies = [b for p, b in zip(receiver.paths, bodies, strict=True) if p == "/json"]
    assert [(b["alert"], b["window"], b["threshold"]) for b in json_bodies] == [
        ("threshold", "daily", "50%"),
        ("threshold", "daily", "80%"),
        ("threshold", "daily", "100%"),
    ]
    assert [(b["spent_usd"], b["limit_usd"]) for b in json_bodies] == [
        ("0.000019800", "0.000030000"),
        ("0.000026400", "0.000030000"),
        ("0.000026400", "0.000030000"),
    ]
    assert json_bodies[1]["message"].startswith(
        "bot has spent 80% of its daily limit: $0.0000264 of $0.00003"
    )
    assert json_bodies[2]["message"] == (
        f"bot hit its daily limit ({json_bodies[2]['period']}): a call was refused with "
        "$0.0000264 of $0.00003 spent"
    )
    slack = [b for p, b in zip(receiver.paths, bodies, strict=True) if p != "/json"]
    assert [set(b) for b in slack] == [{"text"}] * 3  # an incoming webhook's message
    assert slack[0]["text"].startswith(":money_with_wings: spendbrake: bot has spent 50%")
    assert [(t, target, state) for t, target, state, *_ in deliveries(proxy.ledger)] == [
        (threshold, receiver.url, "delivered")
        for threshold in ("50%", "50%", "80%", "80%", "100%", "100%")
    ]


async def test_a_second_proxy_and_a_restart_on_the_same_ledger_do_not_fire_again(
    tmp_path: Path,
) -> None:
    with receiving() as receiver:
        config = TIGHT + alerts_toml((receiver.url, "json"))
        with alerting_proxy(tmp_path, config) as (proxy, alerting):
            for i in range(4):  # 50 % and 80 %
                await call(proxy, f"call {i}")
            await alerting.drain()
        receiver.wait_for(2)
        # The same day, the same ledger: a new process knows nothing in memory.
        with alerting_proxy(tmp_path, config) as (proxy, alerting):
            flow = await call(proxy, "call 5")
            await alerting.drain()
            assert flow.response is not None
            assert flow.response.status_code == 402
        bodies = receiver.wait_for(3)
    assert sorted(b["threshold"] for b in bodies) == ["100%", "50%", "80%"]  # once each


async def test_a_receiver_that_is_down_is_retried_then_recorded_as_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = down_url() + "/services/T0/B0/the-token"
    with alerting_proxy(tmp_path, TIGHT + alerts_toml((url, "slack"))) as (proxy, alerting):
        for i in range(3):
            await call(proxy, f"call {i}")
        await alerting.drain()
    [(threshold, target, state, attempts, error)] = deliveries(proxy.ledger)
    assert (threshold, state, attempts) == ("50%", "failed", 3)
    assert target == url.split("/hook")[0]  # scheme and host only
    assert "refused" in error.lower()
    assert "the-token" not in caplog.text  # the URL's secret part is never logged
    assert "gave up delivering an alert to http://127.0.0.1:" in caplog.text


async def test_calls_go_on_while_a_delivery_hangs(tmp_path: Path) -> None:
    """A receiver that never answers holds a delivery thread, never a call: calls are admitted
    and settled while the delivery is still under way."""
    with never_answering() as url:
        config = TIGHT + alerts_toml((url, "json"))
        with alerting_proxy(tmp_path, config) as (proxy, alerting):
            for i in range(3):  # the third crosses 50 %: its alert is fired and being posted
                await call(proxy, f"call {i}")
            await wait_until(lambda: deliveries(proxy.ledger) != [])
            flows = [await call(proxy, f"more {i}") for i in range(3)]
            assert [f.response.status_code for f in flows if f.response] == [200, 402, 402]
            # 50 %, 80 % and 100 %: fired, and all three still waiting on the receiver.
            await wait_until(lambda: len(deliveries(proxy.ledger)) == 3)
            assert [row[2] for row in deliveries(proxy.ledger)] == ["pending"] * 3
            assert alerting.pending_deliveries == 3


async def test_an_alert_goes_to_the_log_even_without_webhooks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with alerting_proxy(tmp_path, TIGHT) as (proxy, alerting):
        for i in range(3):
            await call(proxy, f"call {i}")
        await alerting.drain()
    alerts = [r.getMessage() for r in caplog.records if "spendbrake alert" in r.getMessage()]
    assert len(alerts) == 1
    assert alerts[0].startswith(
        "spendbrake alert: bot has spent 50% of its daily limit: $0.0000198 of $0.00003 ("
    )


async def test_a_loop_suspension_is_an_alert_of_its_own(tmp_path: Path) -> None:
    with receiving() as receiver:
        config = "[agents.bot]\nloop_repeats = 3\n" + alerts_toml((receiver.url, "json"))
        with alerting_proxy(tmp_path, config) as (proxy, alerting):
            codes = []
            for _ in range(5):
                flow = await call(proxy, "the same")
                codes.append(
                    flow.response.headers.get("x-spendbrake-reason") if flow.response else ""
                )
            await alerting.drain()
        [body] = receiver.wait_for(1)
    assert codes == [None, None, "loop_detected", "agent_suspended", "agent_suspended"]
    assert body["alert"] == "loop_detected"
    assert body["message"].startswith("bot was suspended for a loop: the same request 3 times")
    assert body["message"].endswith("resume it with: spendbrake resume bot")


async def test_a_monthly_limit_has_thresholds_too(tmp_path: Path) -> None:
    with receiving() as receiver:
        config = "[agents.bot]\nmonthly_usd = 0.00003\n" + alerts_toml(
            (receiver.url, "json"), extra="thresholds = [0.5]\n"
        )
        with alerting_proxy(tmp_path, config) as (proxy, alerting):
            for i in range(4):  # the month is read after each settlement, as it then stands
                await call(proxy, f"call {i}")
                await alerting.drain()
        [body] = receiver.wait_for(1)
    assert (body["window"], body["threshold"], body["spent_usd"]) == (
        "monthly",
        "50%",
        "0.000019800",
    )


async def test_group_and_session_windows_have_thresholds_and_tokens_count_in_tokens(
    tmp_path: Path,
) -> None:
    with receiving() as receiver:
        config = (
            '[agents.bot]\ngroup = "team"\nsession_tokens = 60\n'
            "[groups.team]\ndaily_usd = 0.00003\n"
            + alerts_toml((receiver.url, "json"), extra="thresholds = [0.5]\n")
        )
        with alerting_proxy(tmp_path, config) as (proxy, alerting):
            for i in range(3):  # 17 tokens and $0.0000066 a call
                await call(proxy, f"call {i}")
                await alerting.drain()
        bodies = sorted(receiver.wait_for(2), key=lambda body: body["window"])
    assert [(body["window"], body["threshold"]) for body in bodies] == [
        ("group_daily", "50%"),  # $0.0000198 of $0.00003 after the third call
        ("session_tokens", "50%"),  # 34 of 60 tokens after the second
    ]
    assert "34 tokens of 60" in bodies[1]["message"]


async def test_a_burn_rate_above_the_alert_fires_once_a_day(tmp_path: Path) -> None:
    with receiving() as receiver:
        config = alerts_toml((receiver.url, "json"), extra="thresholds = []\n")
        config += "[alerts.agents.bot]\nburn_usd_per_min = 0.00001\n"
        with alerting_proxy(tmp_path, config) as (proxy, alerting):
            for i in range(4):  # $0.0000132 after the second call, within the minute
                await call(proxy, f"call {i}")
            await alerting.drain()
        [body] = receiver.wait_for(1)
    assert body["alert"] == "burn_rate"
    assert body["message"].startswith("bot is spending $0.000014/min, above the alert's")


async def wait_until(probe: object, timeout: float = 10.0) -> None:
    assert callable(probe)
    deadline = asyncio.get_running_loop().time() + timeout
    while not probe():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
