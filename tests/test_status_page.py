"""The status app (page, per-agent pages, JSON API, /metrics) on the fixed ledger: what it
shows, and that nothing is shown without the admin token."""

import json
import re
from collections.abc import Iterator

import pytest

import fixed_ledger
from fixed_ledger import NOW
from spendbrake.access_book import access_book_of
from spendbrake.agent_keys import secret_hash
from spendbrake.ledger_url import LedgerLocation, open_ledger
from spendbrake.metrics import AddedLatency
from spendbrake.mitm import status_app
from spendbrake.mitm.access_cache import AccessCache
from spendbrake.mitm.ledger_worker import LedgerWorker
from spendbrake.mitm.status_app import StatusApp, WebRequest, WebResponse

TOKEN = "the-admin-token-for-these-tests"
BEARER = {"authorization": f"Bearer {TOKEN}"}
AGENTS = ("research-bot", "summarizer", "translator", "idle-bot")


BOTH_BACKENDS = True  # each test on a SQLite file and on a PostgreSQL schema (conftest)


def make_app(location: LedgerLocation) -> Iterator[StatusApp]:
    worker = LedgerWorker(open_ledger(location))
    books = open_ledger(location)
    access = AccessCache(access_book_of(books))
    app = StatusApp(fixed_ledger.config(), worker, access, AddedLatency(), location)
    yield app
    app.close()
    worker.close()
    books.close()


@pytest.fixture
def app(path: LedgerLocation, monkeypatch: pytest.MonkeyPatch) -> Iterator[StatusApp]:
    fixed_ledger.write(path)
    ledger = open_ledger(path)
    access_book_of(ledger).set_admin_token(secret_hash(TOKEN), "test")
    ledger.close()
    monkeypatch.setattr(status_app, "utc_now", lambda: NOW)
    yield from make_app(path)


async def get(
    app: StatusApp, target: str, headers: dict[str, str] | None = None, *, secure: bool = False
) -> WebResponse:
    return await app.handle(WebRequest("GET", target, headers or {}, secure=secure))


def text(response: WebResponse) -> str:
    return response.body.decode()


# -- the admin token -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/api/status", "/api/calls", "/api/events", "/metrics"])
async def test_the_api_and_metrics_need_the_admin_token(app: StatusApp, target: str) -> None:
    for headers in ({}, {"authorization": "Bearer not-it"}, {"cookie": "spendbrake_admin=no"}):
        denied = await get(app, target, headers)
        assert denied.status == 401
        assert json.loads(denied.body) == {
            "error": "this needs the admin token: Authorization: Bearer TOKEN"
        }
        assert denied.headers["www-authenticate"] == 'Bearer realm="spendbrake"'
    assert (await get(app, target, BEARER)).status == 200


@pytest.mark.parametrize("target", ["/", "/agents/research-bot"])
async def test_a_page_without_the_token_asks_for_it_and_shows_no_spend(
    app: StatusApp, target: str
) -> None:
    denied = await get(app, target)
    assert denied.status == 401
    assert '<form class="login" method="post" action="/login">' in text(denied)
    assert f'name="next" value="{target}"' in text(denied)
    assert not any(agent in text(denied) for agent in AGENTS if agent not in target)
    assert "$0.017" not in text(denied)


async def test_without_an_admin_token_set_nothing_is_served(
    path: LedgerLocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed_ledger.write(path)
    for app in make_app(path):
        refused = await get(app, "/api/status", BEARER)
        assert refused.status == 403
        assert "run 'spendbrake admin-token'" in json.loads(refused.body)["error"]
        assert (await get(app, "/", BEARER)).status == 403


async def test_a_login_link_sets_an_httponly_strict_cookie_and_drops_the_token_from_the_url(
    app: StatusApp,
) -> None:
    answer = await get(app, f"/agents/summarizer?token={TOKEN}&x=1")
    assert answer.status == 303
    assert answer.headers["location"] == "/agents/summarizer?x=1"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"spendbrake_admin={TOKEN}; ")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(cookie.split("; "))
    assert "Secure" not in cookie  # plain http: a Secure cookie would never be sent back
    over_https = await get(app, f"/?token={TOKEN}", secure=True)
    assert over_https.headers["set-cookie"].endswith("; Secure")
    page = await get(app, "/", {"cookie": f"other=1; spendbrake_admin={TOKEN}"})
    assert page.status == 200


async def test_a_wrong_token_in_a_link_or_the_form_is_refused(app: StatusApp) -> None:
    assert (await get(app, "/?token=guess")).status == 401
    form = WebRequest("POST", "/login", {}, b"token=guess&next=%2F")
    refused = await app.handle(form)
    assert refused.status == 401
    assert "That is not the admin token." in text(refused)
    assert "set-cookie" not in refused.headers


async def test_the_login_form_sends_the_browser_back_to_a_page_of_this_site_only(
    app: StatusApp,
) -> None:
    targets = [
        ("/agents/translator", "/agents/translator"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
    ]
    for next_path, location in targets:
        body = f"token={TOKEN}&next={next_path}".encode()
        answer = await app.handle(WebRequest("POST", "/login", {}, body))
        assert (answer.status, answer.headers["location"]) == (303, location)


async def test_logging_out_clears_the_cookie(app: StatusApp) -> None:
    answer = await get(app, "/logout")
    assert answer.status == 303
    assert answer.headers["set-cookie"].startswith("spendbrake_admin=; ")
    assert "Max-Age=0" in answer.headers["set-cookie"]


# -- the pages -----------------------------------------------------------------------------------


async def test_the_overview_shows_tops_facts_the_chart_and_the_refusals(app: StatusApp) -> None:
    page = await get(app, "/", BEARER)
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    html = text(page)
    assert '<meta http-equiv="refresh" content="5">' in html
    assert "as of 2026-03-14 12:00:00 (UTC)" in html
    rows = re.findall(r"<tr><td>(.*?)</td></tr>", html)
    research = next(row for row in rows if ">research-bot</a>" in row)
    for fact in ("exhausted", "$0.017 of $0.05 (34%)", "$0.02 of $20.00 (0%)", "2 min (day)",
                 "daily_budget_exceeded"):  # fmt: skip
        assert fact in research
    # The biggest spender first, as in top sorted by spend.
    order = [re.search(r'href="/agents/([^"]+)"', row)[1] for row in rows[:4]]  # type: ignore[index]
    assert order == ["summarizer", "research-bot", "translator", "idle-bot"]
    assert html.count('class="agent-line"') == 4  # one line per agent in the chart
    refusals = html.split("<h2>Recent refusals</h2>")[1]
    assert refusals.index("agent_suspended") < refusals.index("daily_budget_exceeded")  # newest
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from elsewhere


async def test_an_agents_page_shows_its_models_calls_and_events(app: StatusApp) -> None:
    page = await get(app, "/agents/summarizer", BEARER)
    assert page.status == 200
    html = text(page)
    assert "<h1>spendbrake: summarizer</h1>" in html
    assert html.count('class="agent-line"') == 1
    models = html.split("<h2>By model today</h2>")[1].split("<h2>")[0]
    for shown in ("claude-haiku-4-5", "$0.30", "6,000"):
        assert shown in models
    assert "agent_suspended" in html.split("<h2>Refusals today</h2>")[1]
    assert "run-42" in html.split("<h2>Latest calls</h2>")[1]
    assert "$0.10 spent in the last minute" in html.split("<h2>Events</h2>")[1]


async def test_an_unknown_agent_is_a_404_page(app: StatusApp) -> None:
    page = await get(app, "/agents/nobody", BEARER)
    assert page.status == 404
    assert "No such agent" in text(page)


async def test_names_from_the_ledger_are_escaped(app: StatusApp, path: LedgerLocation) -> None:
    ledger = open_ledger(path)
    ledger.refuse(fixed_ledger._call("<img src=x onerror=alert(1)>", "11:00:00"), "loop_detected")
    ledger.close()
    html = text(await get(app, "/", BEARER))
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="/agents/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"' in html


# -- JSON ----------------------------------------------------------------------------------------


async def test_api_status_is_spendbrake_status_json(app: StatusApp) -> None:
    document = json.loads((await get(app, "/api/status", BEARER)).body)
    assert document["as_of"] == "2026-03-14T12:00:00+00:00"
    research = next(a for a in document["agents"] if a["agent"] == "research-bot")
    assert (research["spent_usd"], research["held_usd"], research["remaining_usd"]) == (
        "0.017000000",
        "0.004000000",
        "0.029000000",
    )


async def test_api_calls_lists_the_days_calls_newest_first(app: StatusApp) -> None:
    document = json.loads((await get(app, "/api/calls", BEARER)).body)
    assert (document["day"], document["timezone"], document["agent"]) == ("2026-03-14", "UTC", None)
    calls = document["calls"]
    assert len(calls) == 9  # 5 of research-bot, 3 of summarizer, 1 of translator; not yesterday's
    assert [c["id"] for c in calls] == sorted((c["id"] for c in calls), reverse=True)
    mine = json.loads((await get(app, "/api/calls?agent=research-bot&limit=2", BEARER)).body)
    newest, held = mine["calls"]
    assert (newest["state"], newest["reason"]) == ("refused", "daily_budget_exceeded")
    assert (held["state"], held["held_usd"], held["actual_usd"]) == ("held", "0.004000000", None)
    assert set(held) >= {"started_at", "session", "provider", "forwarded_model", "input_tokens"}
    assert not {"fingerprint", "owner"} & set(held)
    yesterday = json.loads((await get(app, "/api/calls?day=2026-03-13", BEARER)).body)
    assert [c["actual_usd"] for c in yesterday["calls"]] == ["0.003000000"]


async def test_api_events_lists_the_ledgers_events(app: StatusApp) -> None:
    document = json.loads((await get(app, "/api/events?agent=summarizer", BEARER)).body)
    [suspended] = document["events"]
    assert (suspended["kind"], suspended["agent"]) == ("suspended", "summarizer")
    assert suspended["at"] == "2026-03-14T11:59:20+00:00"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/api/calls?limit=0", "limit must be a whole number from 1 to 1000, not '0'"),
        ("/api/events?limit=many", "limit must be a whole number from 1 to 1000, not 'many'"),
        ("/api/calls?day=yesterday", "day must be a date like 2026-03-14, not 'yesterday'"),
    ],
)
async def test_bad_parameters_are_a_400_that_says_what_is_expected(
    app: StatusApp, target: str, message: str
) -> None:
    answer = await get(app, target, BEARER)
    assert (answer.status, json.loads(answer.body)) == (400, {"error": message})


async def test_resume_lifts_a_suspension(app: StatusApp) -> None:
    resume = WebRequest("POST", "/api/agents/summarizer/resume", BEARER)
    assert json.loads((await app.handle(resume)).body) == {"agent": "summarizer", "resumed": True}
    assert json.loads((await app.handle(resume)).body)["resumed"] is False


async def test_metrics_are_served_in_prometheus_text_format(app: StatusApp) -> None:
    answer = await get(app, "/metrics", BEARER)
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b'spendbrake_limit_usd{agent="research-bot"} 0.05' in answer.body


async def test_anything_else_is_a_404(app: StatusApp) -> None:
    answer = await get(app, "/nothing", BEARER)
    assert (answer.status, json.loads(answer.body)) == (404, {"error": "no GET /nothing here"})
