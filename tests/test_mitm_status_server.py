"""The plain status port: the status app over a real socket, on loopback unless an admin token
is set, with keep-alive and a clear answer to a broken request."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

import fixed_ledger
from spendbrake.access_book import SQLiteAccessBook
from spendbrake.agent_keys import secret_hash
from spendbrake.metrics import AddedLatency
from spendbrake.mitm.access_cache import AccessCache
from spendbrake.mitm.status_app import StatusApp
from spendbrake.mitm.status_server import StatusServer, is_loopback
from spendbrake.sqlite_ledger import SQLiteLedger

TOKEN = "status-port-token"


@contextmanager
def app_on(path: Path, *, token: str | None) -> Iterator[StatusApp]:
    fixed_ledger.write(path)
    ledger = SQLiteLedger(path)
    if token:
        SQLiteAccessBook(ledger).set_admin_token(secret_hash(token), "test")
    access = AccessCache(SQLiteAccessBook(ledger))
    app = StatusApp(fixed_ledger.config(), None, access, AddedLatency(), path)
    yield app
    app.close()
    ledger.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[StatusApp]:
    with app_on(tmp_path / "ledger.db", token=TOKEN) as opened:
        yield opened


async def serving(app: StatusApp, listen: str) -> StatusServer:
    server = StatusServer(lambda: app)
    with taddons.context(server) as tctx:
        tctx.configure(server, spendbrake_status_listen=listen)
    server.running()
    await asyncio.sleep(0)  # let the listening task start
    return server


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)  # the server closes after "close"
    writer.close()
    return answer


def get(path: str, *headers: str, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    lines += ["Connection: close"] if close else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_the_port_serves_the_status_app_and_asks_for_the_token(app: StatusApp) -> None:
    server = await serving(app, "127.0.0.1:0")
    try:
        assert server.bound is not None
        port = server.bound[1]
        denied = await exchange(port, get("/api/status"))
        assert denied.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        served = await exchange(port, get("/metrics", f"Authorization: Bearer {TOKEN}"))
        assert served.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b'spendbrake_limit_usd{agent="research-bot"} 0.05' in served
    finally:
        server.done()


async def test_one_connection_serves_several_requests(app: StatusApp) -> None:
    server = await serving(app, "127.0.0.1:0")
    try:
        assert server.bound is not None
        auth = f"Authorization: Bearer {TOKEN}"
        raw = get("/api/events", auth, close=False) + get("/api/status", auth)
        answers = await exchange(server.bound[1], raw)
        assert answers.count(b"HTTP/1.1 200 OK\r\n") == 2
        assert b'"events"' in answers
        assert b'"agents"' in answers
    finally:
        server.done()


async def test_a_broken_request_is_answered_400(app: StatusApp) -> None:
    server = await serving(app, "127.0.0.1:0")
    try:
        assert server.bound is not None
        answer = await exchange(server.bound[1], b"NOT HTTP AT ALL\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    finally:
        server.done()


async def test_a_taken_port_is_logged_and_the_proxy_goes_on(
    app: StatusApp, caplog: pytest.LogCaptureFixture
) -> None:
    first = await serving(app, "127.0.0.1:0")
    try:
        assert first.bound is not None
        second = await serving(app, f"127.0.0.1:{first.bound[1]}")
        assert second.bound is None
        assert "cannot serve the status page on 127.0.0.1" in caplog.text
    finally:
        first.done()


def test_beyond_loopback_the_port_needs_an_admin_token_first(tmp_path: Path) -> None:
    with app_on(tmp_path / "ledger.db", token=None) as app:
        server = StatusServer(lambda: app)
        with taddons.context(server) as tctx:
            with pytest.raises(exceptions.OptionsError, match="no admin token is set"):
                tctx.configure(server, spendbrake_status_listen="0.0.0.0:9099")
            tctx.configure(server, spendbrake_status_listen="127.0.0.1:9099")  # loopback: fine
            assert server.address == ("127.0.0.1", 9099)


def test_with_an_admin_token_any_address_is_accepted(app: StatusApp) -> None:
    server = StatusServer(lambda: app)
    with taddons.context(server) as tctx:
        tctx.configure(server, spendbrake_status_listen="0.0.0.0:9099")
        assert server.address == ("0.0.0.0", 9099)
        with pytest.raises(exceptions.OptionsError, match="must be HOST:PORT"):
            tctx.configure(server, spendbrake_status_listen="9099")


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "status.example"]))
