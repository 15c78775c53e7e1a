"""Bounded inputs: each case as it was found by attacking a server, and what a real server answers now.

A head of 100 MiB was read whole and answered 200; WebSocket frames of 16 MiB were read before the 4 KiB check;
X-Forwarded-For from 127.0.0.1 was believed, so rotating it dodged every per-address limit; a read key revoked
trading keys; 10,000-deep JSON was a 500 with a traceback; "1\\n" was a decimal; a repeated key's last value
won; a withdrawal was refused for "the order and its maximum fee", and a 429 said "retry in 0.0 s" under
Retry-After: 1. The servers here are configured as ``tokex serve`` configures its own (``api.server``).
"""

import asyncio
import json
import logging
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State

from api.app import create_app
from api.client import Client
from api.endpoints import limit
from api.feed.limits import FeedLimits
from api.feed.protocol import MAX_MESSAGE_BYTES
from api.problems import Problem
from api.ratelimit import RateLimiter, RateLimits
from api.server import Settings
from api.uvicorn_coupling import MAX_HEAD_BYTES
from tests.support.api_server import Live, bootstrap, fresh_database, serve, unique

NO_LIMITS = RateLimits(per_key_rate=None, per_address_rate=None)
ADDRESS_BURST = 3
"""Requests an address may make before it is refused, on the servers of the forwarded-for tests."""
ADDRESS_LIMITS = RateLimits(per_key_rate=None, per_address_rate=0.001, per_address_burst=ADDRESS_BURST)
MiB = 1024 * 1024


@contextmanager
def server(postgres_admin_url: str, rate_limits: RateLimits = NO_LIMITS, feed_limits: FeedLimits | None = None,
           forwarded_allow_ips: str | None = None) -> Iterator[Live]:
    """A server on a new database with an admin key, served by ``api.server``'s uvicorn configuration."""
    with fresh_database(postgres_admin_url) as dsn:
        master_key = secrets.token_bytes(32)
        app = create_app(dsn, master_key=master_key, rate_limits=rate_limits, feed_limits=feed_limits)
        settings = Settings(port=0, log_level="warning", forwarded_allow_ips=forwarded_allow_ips)
        with serve(app, master_key, settings=settings) as live:
            live.dsn = dsn
            bootstrap(live)
            yield live


@pytest.fixture(scope="module")
def live(postgres_admin_url: str) -> Iterator[Live]:
    with server(postgres_admin_url) as running:
        yield running


@pytest.fixture
def limited(postgres_admin_url: str) -> Iterator[Live]:
    """A server that refuses an address after ``ADDRESS_BURST`` requests, and a fourth WebSocket from it."""
    limits = FeedLimits(max_connections_per_address=ADDRESS_BURST)
    with server(postgres_admin_url, ADDRESS_LIMITS, limits) as running:
        yield running


@pytest.fixture
async def admin(live: Live):
    async with Client(live.url, live.admin_key, live.admin_secret) as client:
        yield client


async def trader(admin: Client, scopes: list[str], cash: str = "100") -> tuple[dict, Client]:
    account = await admin.create_account(unique("trader"), "trader")
    await admin.deposit(account["id"], cash)
    key = await admin.create_key(account["id"], scopes)
    return account, admin.with_key(key["id"], key["secret"])


async def instrument(admin: Client) -> str:
    symbol = unique("B").upper()
    await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="m", substitution_group="g",
                                  quality=50, tokens_per_lot=1_000_000)
    return symbol


def ws_url(live: Live) -> str:
    return live.url.replace("http://", "ws://") + "/v1/ws"


def rss() -> int:
    """This process's resident memory: the servers here run in it, on a thread of their own."""
    return psutil.Process().memory_info().rss


def exchange_raw(live: Live, head: bytes) -> bytes:
    """Send ``head`` on a new connection and read until the server closes it."""
    port = int(live.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def problem_of(answer: bytes) -> tuple[bytes, dict]:
    status_line, _, rest = answer.partition(b"\r\n")
    return status_line, json.loads(rest.partition(b"\r\n\r\n")[2])


# Request heads


def test_a_head_over_the_cap_is_answered_431_and_closed(live):
    head = (b"GET /v1/instruments HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * (MAX_HEAD_BYTES + 1024)
            + b"\r\n\r\n")
    status_line, problem = problem_of(exchange_raw(live, head))
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert problem["code"] == "headers_too_large" and str(MAX_HEAD_BYTES) in problem["detail"]
    # Many headers count together.
    many = b"".join(b"X-H%d: %s\r\n" % (n, b"b" * 1000) for n in range(40))
    status_line, _ = problem_of(exchange_raw(live, b"GET /v1/instruments HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"))
    assert status_line.startswith(b"HTTP/1.1 431")


def test_a_large_head_under_the_cap_is_served(live):
    head = b"GET /v1/instruments HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 16 * 1024 + b"\r\nConnection: close\r\n\r\n"
    assert exchange_raw(live, head).startswith(b"HTTP/1.1 200")


def test_a_100_mib_header_is_cut_off_early_and_memory_stays_flat(live):
    port = int(live.url.rsplit(":", 1)[1])
    before = rss()
    sent = 0
    answer = b""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v1/instruments HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        chunk = b"h" * MiB
        try:
            while sent < 100 * MiB:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
            while part := sock.recv(65536):
                answer += part
        except (BrokenPipeError, ConnectionResetError):
            pass
    # The server stopped reading long before the end: the kernel's buffers hold a few MiB at most.
    assert sent < 16 * MiB, f"the server read {sent / MiB:.0f} MiB of one header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert rss() - before < 32 * MiB
    assert time.monotonic() - started < 10
    # Still serving.
    assert exchange_raw(live, b"GET /v1/instruments HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 200")


async def test_a_websocket_upgrade_with_an_oversized_head_is_refused(live):
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(live), additional_headers={"X-Padding": "p" * (MAX_HEAD_BYTES + 1)})
    assert refused.value.response.status_code == 431


# WebSocket frames


async def test_a_frame_over_the_message_limit_closes_with_1009(live):
    async with connect(ws_url(live), compression=None, max_size=None) as ws:
        await ws.send("[" + " " * MAX_MESSAGE_BYTES + "]")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_fragmented_message_over_the_limit_closes_with_1009(live):
    async with connect(ws_url(live), compression=None, max_size=None) as ws:
        await ws.send(["{" + " " * 1000 for _ in range(5)])
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_16_mib_frames_are_not_read_and_the_feed_goes_on(live):
    before = rss()
    for _ in range(4):
        # Not ``async with``: closing again a connection whose 16 MiB send buffer drained after it closed fails
        # in the client (asyncio aborts a transport it already let go).
        ws = await connect(ws_url(live), compression=None, max_size=None)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.send("x" * 16 * MiB)
            await asyncio.wait_for(ws.recv(), 10)
        # The server read the frame's header, closed, and dropped the rest as it came.
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert ws.state is State.CLOSED
    assert rss() - before < 64 * MiB
    async with connect(ws_url(live), compression=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "nope", "symbol": "X", "id": 1}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer[0]["code"] == "unknown_channel"


# X-Forwarded-For


def forwarded(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{n}"}


async def test_rotating_forwarded_for_does_not_dodge_the_public_limit(limited):
    async with httpx.AsyncClient(base_url=limited.url) as http:
        statuses = [(await http.get("/v1/instruments", headers=forwarded(n))).status_code for n in range(6)]
    assert statuses == [200] * ADDRESS_BURST + [429] * 3


async def test_rotating_forwarded_for_does_not_dodge_the_failed_sign_in_limit(limited):
    async with Client(limited.url, "tk_0000000000000000", "0" * 64) as stranger:
        answers = [await stranger.request("GET", "/v1/accounts/me", headers=forwarded(n)) for n in range(6)]
    assert [a.status_code for a in answers] == [401] * ADDRESS_BURST + [429] * 3


async def test_rotating_forwarded_for_does_not_dodge_the_websocket_connection_cap(limited):
    connections = [await connect(ws_url(limited), compression=None, additional_headers=forwarded(n))
                   for n in range(ADDRESS_BURST + 1)]
    try:
        error = json.loads(await asyncio.wait_for(connections[-1].recv(), 10))
        assert error[0]["code"] == "too_many_connections"
        assert "127.0.0.1" in error[0]["detail"]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connections[-1].recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        for ws in connections:
            await ws.close()


async def test_forwarded_for_counts_from_a_proxy_the_operator_names(postgres_admin_url):
    with server(postgres_admin_url, ADDRESS_LIMITS, forwarded_allow_ips="127.0.0.1") as proxied:
        async with httpx.AsyncClient(base_url=proxied.url) as http:
            statuses = [(await http.get("/v1/instruments", headers=forwarded(n))).status_code for n in range(6)]
            assert statuses == [200] * 6
            same = [(await http.get("/v1/instruments", headers=forwarded(99))).status_code for _ in range(4)]
            assert same == [200] * ADDRESS_BURST + [429]


# Scopes


async def test_a_read_key_cannot_revoke_keys(admin):
    account, trading = await trader(admin, ["read", "trade"])
    reader_key = await admin.create_key(account["id"], ["read"])
    async with admin.with_key(reader_key["id"], reader_key["secret"]) as reader:
        trading_key = trading.http.auth.key_id
        answer = await reader.request("DELETE", f"/v1/keys/{trading_key}")
        assert (answer.status_code, answer.json()["code"]) == (403, "insufficient_scope")
        answer = await trading.request("DELETE", f"/v1/keys/{reader_key['id']}")
        assert (answer.status_code, answer.json()["code"]) == (403, "insufficient_scope")
        assert all(key["revoked_at"] is None for key in await reader.keys())
        assert (await trading.me())["id"] == account["id"]
        # An admin revokes.
        assert (await admin.revoke_key(trading_key))["revoked_at"] is not None
    await trading.aclose()


# Nested, repeated and newline-ended JSON


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_deeply_nested_json_is_a_400_without_a_traceback(admin, caplog):
    _, client = await trader(admin, ["read", "trade"])
    caplog.set_level(logging.WARNING)
    for depth in (2_000, 10_000):
        # The union's tag last: msgspec skips what comes before it, looking for the tag.
        body = '{"deep": ' + nested(depth) + ', "type": "limit"}'
        answer = await client.request("POST", "/v1/orders", content=body.encode(),
                                      headers={"Content-Type": "application/json"})
        assert (answer.status_code, answer.json()["code"]) == (400, "malformed_body"), answer.text
        assert "nested too deeply" in answer.json()["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (await client.orders())["items"] == []
    await client.aclose()


async def test_deeply_nested_json_on_the_feed_is_an_error_message_without_a_traceback(live, caplog):
    caplog.set_level(logging.WARNING)
    async with connect(ws_url(live), compression=None) as ws:
        depth = (MAX_MESSAGE_BYTES - 64) // 2
        await ws.send('{"deep": ' + nested(depth) + ', "type": "subscribe"}')
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))[0]
        assert (error["type"], error["code"]) == ("error", "malformed_message")
        assert "nested too deeply" in error["detail"]
        # Still served.
        await ws.send(json.dumps({"type": "subscribe", "channel": "nope", "symbol": "X"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))[0]["code"] == "unknown_channel"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_repeated_key_is_a_400_and_nothing_is_done(admin):
    symbol = await instrument(admin)
    _, client = await trader(admin, ["read", "trade"])
    body = (f'{{"type": "limit", "symbol": "{symbol}", "side": "sell", "price": "1", "qty": 1, '
            f'"side": "buy"}}')
    answer = await client.request("POST", "/v1/orders", content=body.encode(),
                                  headers={"Content-Type": "application/json"})
    assert (answer.status_code, answer.json()["code"]) == (400, "malformed_body")
    assert "'side'" in answer.json()["detail"]
    assert (await client.orders())["items"] == []
    assert (await client.balances())["CNY"] == {"asset": "CNY", "available": "100", "held": "0"}
    await client.aclose()


async def test_a_repeated_key_on_the_feed_is_an_error_message(live, admin):
    symbol = await instrument(admin)
    async with connect(ws_url(live), compression=None) as ws:
        await ws.send(f'{{"type": "subscribe", "channel": "ticker", "symbol": "NOPE", "symbol": "{symbol}"}}')
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))[0]
    assert (error["type"], error["code"]) == ("error", "malformed_message")
    assert "'symbol'" in error["detail"]


@pytest.mark.parametrize(("field", "value", "code"), [
    ("price", "1\n", "invalid_decimal"),
    ("price", "1.5\n", "invalid_decimal"),
    ("symbol", "{symbol}\n", "invalid_field"),
    ("client_order_id", "c-1\n", "invalid_field"),
])
async def test_a_trailing_newline_is_refused(admin, field, value, code):
    symbol = await instrument(admin)
    _, client = await trader(admin, ["read", "trade"])
    order = {"type": "limit", "symbol": symbol, "side": "buy", "price": "1", "qty": 1, "client_order_id": "c-1"}
    order[field] = value.replace("{symbol}", symbol)
    answer = await client.request("POST", "/v1/orders", json=order)
    assert (answer.status_code, answer.json()["code"], answer.json()["field"]) == (422, code, field)
    assert (await client.orders())["items"] == []
    await client.aclose()


async def test_a_trailing_newline_is_refused_in_amounts_queries_and_feed_symbols(live, admin):
    symbol = await instrument(admin)
    account, client = await trader(admin, ["read", "trade"])
    answer = await admin.request("POST", "/v1/deposits", json={"account_id": account["id"], "amount": "1\n"})
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_decimal")
    answer = await client.request("GET", "/v1/orders", params={"symbol": symbol + "\n"})
    assert (answer.status_code, answer.json()["field"]) == (422, "symbol")
    answer = await client.request("GET", "/v1/orders", params={"cursor": "5\n"})
    assert (answer.status_code, answer.json()["field"]) == (422, "cursor")
    assert (await client.balances())["CNY"]["available"] == "100"
    async with connect(ws_url(live), compression=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "ticker", "symbol": symbol + "\n"}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))[0]
    assert error["code"] == "unknown_instrument"
    await client.aclose()


def test_the_document_states_patterns_in_json_schemas_dialect(live):
    document = httpx.get(live.url + "/v1/openapi.json").json()
    text = json.dumps(document)
    assert "\\\\Z" not in text
    assert document["components"]["schemas"]["NewLimitOrder"]["properties"]["symbol"]["pattern"] == \
        "^[A-Z0-9][A-Z0-9._-]{0,31}$"


# Messages that fit


async def test_a_refused_withdrawal_speaks_of_the_withdrawal(admin):
    account, client = await trader(admin, ["read"], cash="5")
    answer = await admin.request("POST", "/v1/withdrawals", json={"account_id": account["id"], "amount": "10"})
    problem = answer.json()
    assert (answer.status_code, problem["code"]) == (409, "insufficient_funds")
    assert "withdraw" in problem["detail"] and "order" not in problem["detail"] and "fee" not in problem["detail"]
    assert (await client.balances())["CNY"]["available"] == "5"
    await client.aclose()


def test_a_429_body_names_the_wait_its_retry_after_header_does():
    limiter = RateLimiter(rate=50, burst=1)
    limit(limiter, "address", {})
    with pytest.raises(Problem) as refused:
        limit(limiter, "address", {})
    seconds = refused.value.headers["Retry-After"]
    assert seconds == "1"
    assert f"retry in {seconds} s." in refused.value.detail
