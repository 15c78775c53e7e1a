"""Bad input on the feed gets an error message, then a close after repeated abuse; nothing else is affected."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.feed.limits import FeedLimits
from tests.support.feed import FeedClient, feed_server, open_market

LIMITS = FeedLimits(max_connections_per_address=6, max_subscriptions=3, max_message_bytes=1024, max_errors=20,
                    message_rate=1000, message_burst=1000)


@pytest.fixture(scope="module")
def live(postgres_admin_url):
    with feed_server(postgres_admin_url, LIMITS) as server:
        yield server


async def error_for(client: FeedClient, text: str | bytes) -> dict:
    await client.connection.send(text)
    message, skipped = await client.until(lambda m: m["type"] == "error", timeout=5)
    assert all(m["type"] == "heartbeat" for m in skipped)
    return message


@pytest.mark.parametrize(("text", "code"), [
    ("{not json", "malformed_message"),
    ("[1, 2]", "invalid_message"),
    ('{"type": "publish", "channel": "level2", "symbol": "X"}', "unknown_type"),
    ('{"channel": "level2", "symbol": "X"}', "unknown_type"),
    ('{"type": "subscribe", "channel": "orders", "symbol": "{symbol}"}', "unknown_channel"),
    ('{"type": "subscribe", "channel": "level2", "symbol": "NO-SUCH-THING"}', "unknown_instrument"),
    ('{"type": "subscribe", "channel": "level2", "symbol": "lower case!"}', "unknown_instrument"),
    ('{"type": "subscribe", "channel": "candles", "symbol": "{symbol}", "interval": "7m"}', "unknown_interval"),
    ('{"type": "subscribe", "channel": "candles", "symbol": "{symbol}"}', "unknown_interval"),
    ('{"type": "subscribe", "channel": "trades", "symbol": "{symbol}", "interval": "1m"}', "invalid_message"),
    ('{"type": "subscribe", "channel": "level2"}', "invalid_message"),
    ('{"type": "subscribe", "channel": "level2", "symbol": "{symbol}", "extra": 1}', "invalid_message"),
    ('{"type": "subscribe", "channel": 5, "symbol": "{symbol}"}', "invalid_message"),
    ('{"type": "unsubscribe", "channel": "level2", "symbol": "{symbol}"}', "not_subscribed"),
    ('{"type": "subscribe", "channel": "user", "symbol": "{symbol}"}', "unauthenticated"),
    ("x" * 2000, "message_too_large"),
    (b'{"type": "subscribe"}', "malformed_message"),
])
async def test_bad_input_gets_an_error_and_the_connection_goes_on(live, text, code):
    symbol = getattr(live, "feed_symbol", None)
    if symbol is None:
        symbol = live.feed_symbol = (await open_market(live, traders=1)).symbol
    client = await FeedClient.open(live)
    if isinstance(text, str):
        text = text.replace("{symbol}", symbol)
    error = await error_for(client, text)
    assert error["code"] == code and error["detail"]
    # Still served.
    await client.subscribe("ticker", symbol, id="after")
    answer, _ = await client.until(lambda m: m["type"] == "subscribed")
    assert answer["id"] == "after"
    await client.close()


async def test_errors_echo_the_request_id(live):
    client = await FeedClient.open(live)
    await client.send(type="subscribe", channel="nope", symbol="X", id=7)
    error = await client.next()
    assert (error["type"], error["code"], error["id"]) == ("error", "unknown_channel", 7)
    await client.close()


async def test_too_many_subscriptions_on_one_connection(live):
    market = await open_market(live, traders=1)
    client = await FeedClient.open(live)
    for channel in ("ticker", "level2", "trades"):
        await client.subscribe(channel, market.symbol)
    await client.subscribe("candles", market.symbol, interval="1m")
    error, seen = await client.until(lambda m: m["type"] == "error")
    assert error["code"] == "too_many_subscriptions"
    assert [m["channel"] for m in seen if m["type"] == "subscribed"] == ["ticker", "level2", "trades"]
    # Subscribing again to one already held is no new subscription; dropping one makes room.
    await client.subscribe("ticker", market.symbol, id=1)
    answer, _ = await client.until(lambda m: m["type"] in ("subscribed", "error"))
    assert answer == {"type": "subscribed", "channel": "ticker", "symbol": market.symbol, "seq": answer["seq"],
                      "id": 1}
    await client.send(type="unsubscribe", channel="trades", symbol=market.symbol)
    await client.subscribe("candles", market.symbol, interval="1m")
    answer, _ = await client.until(lambda m: m["type"] in ("subscribed", "error"))
    assert answer["type"] == "subscribed" and answer["interval"] == "1m"
    await client.close()


async def test_repeated_abuse_closes_the_connection_and_spares_the_others(live):
    market = await open_market(live, traders=1)
    bystander = await FeedClient.open(live)
    await bystander.subscribe("level2", market.symbol)
    await bystander.until(lambda m: m["type"] == "snapshot")

    abuser = await connect(live.url.replace("http", "ws") + "/v1/ws", compression=None)
    errors = 0
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(LIMITS.max_errors + 5):
            await abuser.send("{garbage")
        while True:
            frame = json.loads(await asyncio.wait_for(abuser.recv(), 5))
            errors += sum(1 for m in frame if m["type"] == "error")
    assert errors == LIMITS.max_errors
    assert closed.value.rcvd.code == 1008 and "bad messages" in closed.value.rcvd.reason

    await market.traders[0].place_order(market.symbol, "buy", price="1.5", qty=3)
    update, _ = await bystander.until(lambda m: m["type"] == "update")
    assert update["bids"] == [["1.5", 3]]
    await bystander.close()


async def test_too_many_connections_from_one_address(live):
    hub = live.app.state.feed
    while hub.connections:  # the connections of earlier tests are closing
        await asyncio.sleep(0.05)
    clients = [await FeedClient.open(live) for _ in range(LIMITS.max_connections_per_address)]
    for client in clients:
        await client.send(type="subscribe", channel="nope", symbol="X")
        await client.next()  # served
    extra = await connect(live.url.replace("http", "ws") + "/v1/ws", compression=None)
    frame = json.loads(await asyncio.wait_for(extra.recv(), 5))
    assert frame[0]["type"] == "error" and frame[0]["code"] == "too_many_connections"
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(extra.recv(), 5)
    assert closed.value.rcvd.code == 1008

    await clients[0].close()
    while len(hub.connections) >= LIMITS.max_connections_per_address:
        await asyncio.sleep(0.05)
    again = await FeedClient.open(live)
    await again.send(type="subscribe", channel="nope", symbol="X")
    assert (await again.next())["code"] == "unknown_channel"
    for client in (again, *clients[1:]):
        await client.close()


async def test_flooding_is_rate_limited(postgres_admin_url):
    limits = FeedLimits(message_rate=5, message_burst=5, max_errors=100)
    with feed_server(postgres_admin_url, limits) as server:
        client = await FeedClient.open(server)
        for _ in range(8):
            await client.send(type="subscribe", channel="nope", symbol="X")
        codes = [(await client.next())["code"] for _ in range(8)]
        assert codes.count("unknown_channel") == 5 and codes.count("rate_limited") == 3
        await client.close()
