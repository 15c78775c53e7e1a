"""A subscriber that cannot keep up is cut off with 1013 while a fast one receives everything, and the engine
never waits for either."""

import asyncio
import json
import socket
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.client import Client
from api.feed.limits import FeedLimits
from exchange.commands import PlaceOrder
from tests.support.feed import FeedClient, Follower, assert_same_book, feed_server, on_server, open_market, ws_url

LIMITS = FeedLimits(max_queue=4, flush_interval=0.005, close_timeout=20)


@pytest.fixture(scope="module")
def live(postgres_admin_url):
    with feed_server(postgres_admin_url, LIMITS) as server:
        yield server


async def slow_reader(live, symbol: str):
    """A client that subscribes and then reads nothing, with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
    connection = await connect(ws_url(live), sock=sock, max_queue=1, compression=None)
    await connection.send(json.dumps({"type": "subscribe", "channel": "level2", "symbol": symbol}))
    return connection


async def test_a_slow_consumer_is_closed_with_1013_and_a_fast_one_gets_everything(live):
    market = await open_market(live, traders=1)
    hub = live.app.state.feed
    sequencer = live.app.state.services.sequencer
    slow = await slow_reader(live, market.symbol)
    fast = await FeedClient.open(live)
    await fast.subscribe("level2", market.symbol)
    await fast.subscribe("trades", market.symbol)
    follower = Follower(fast, market.symbol)
    while len(hub.connections) < 2:
        await asyncio.sleep(0.01)

    account = market.accounts[0]["id"]
    bursts = 0
    slowest_burst = 0.0
    while len(hub.connections) == 2:
        assert bursts < 200, "the slow consumer was never cut off"
        commands = [PlaceOrder(account, market.symbol, "buy", price=10_000 * (1 + (bursts * 500 + i) % 150), qty=1)
                    for i in range(500)]

        async def burst(commands=commands):
            return await asyncio.gather(*(sequencer.submit(command) for command in commands))

        started = time.monotonic()
        results = await on_server(live, burst())
        slowest_burst = max(slowest_burst, time.monotonic() - started)
        assert all(result.status == "open" for result in results)
        bursts += 1

    # The slow one is gone from the hub at once; once it reads, it finds the close and why.
    received = 0
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(slow.recv(), 10)
            received += 1
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert "slow consumer" in closed.value.rcvd.reason
    assert received >= 1

    # The fast one saw every update, in sequence, with every checksum right; orders were acknowledged meanwhile.
    rest = Client(live.url)
    await assert_same_book(follower, rest, market.symbol)
    assert follower.mirror.updates >= bursts * 500 - 500
    assert slowest_burst < 5.0
    await follower.stop()
    await rest.aclose()
