"""level2 and trades with a real websockets client: the book rebuilt from the feed equals the server's, with every
sequence step and checksum checked, also across a forced disconnect and from the REST book."""

import asyncio
import random
import secrets
import zlib

from api.app import create_app
from api.client import Client
from api.feed.protocol import checksum, checksum_text
from tests.support.api_server import NO_LIMITS, bootstrap, fresh_database, serve
from tests.support.feed import FeedClient, Follower, Market, assert_same_book, follow, open_market, random_flow


async def all_trade_ids(rest: Client, symbol: str) -> list[int]:
    page = await rest.call("GET", f"/v1/instruments/{symbol}/trades", params={"order": "asc", "limit": 500})
    return [trade["id"] for trade in page["items"]]


def test_checksum_is_crc32_of_the_documented_string():
    bids, asks = [("1.85", 10), ("1.84", 3)], [("1.9", 7)]
    assert checksum_text(bids, asks) == "1.85:10,1.84:3|1.9:7"
    assert checksum(bids, asks) == zlib.crc32(b"1.85:10,1.84:3|1.9:7")
    assert checksum_text([], []) == "|"
    many = [(str(100 - i), i + 1) for i in range(15)]
    assert checksum_text(many, []).count(",") == 9  # the best ten only


async def test_book_rebuilt_from_snapshot_and_updates_equals_the_server_book(live, market: Market):
    rest = Client(live.url)
    follower = await follow(live, market.symbol)
    await random_flow(market, 150, random.Random(5))
    await assert_same_book(follower, rest, market.symbol)
    mirror = follower.mirror
    assert mirror.snapshots == 1 and mirror.updates > 50
    # Every trade since subscribing came through, numbered as REST numbers them.
    assert follower.trade_ids and follower.trade_ids == [i for i in await all_trade_ids(rest, market.symbol)
                                                         if i >= follower.trade_ids[0]]
    await follower.stop()
    await rest.aclose()


async def test_resync_after_a_forced_disconnect(live, market: Market):
    rest = Client(live.url)
    rng = random.Random(11)
    first = await follow(live, market.symbol)
    await random_flow(market, 40, rng)
    first.task.cancel()
    first.client.connection.transport.abort()  # no closing handshake: the server finds out on its own
    await random_flow(market, 40, rng)  # missed while away

    second = await follow(live, market.symbol)
    await random_flow(market, 40, rng)
    await assert_same_book(second, rest, market.symbol)
    assert second.mirror.snapshots == 1 and second.mirror.seq > first.mirror.seq
    await second.stop()
    await rest.aclose()


async def test_subscribing_again_resyncs_on_the_same_connection(live, market: Market):
    rest = Client(live.url)
    follower = await follow(live, market.symbol)
    await random_flow(market, 30, random.Random(3))
    await follower.client.subscribe("level2", market.symbol)
    await random_flow(market, 30, random.Random(4))
    await assert_same_book(follower, rest, market.symbol)
    assert follower.mirror.snapshots == 2
    await follower.stop()
    await rest.aclose()


async def test_sync_from_the_rest_book_plus_the_stream(live, market: Market):
    rest = Client(live.url)
    client = await FeedClient.open(live)
    await client.subscribe("level2", market.symbol, snapshot=False)
    await client.subscribe("trades", market.symbol)
    subscribed = await client.next()
    assert subscribed["type"] == "subscribed" and "bids" not in subscribed
    rng = random.Random(21)
    start = (await rest.book(market.symbol))["seq"]
    flow = asyncio.ensure_future(random_flow(market, 120, rng))
    # Taken while orders flow: once some have gone in, and not after a fixed delay, which a fast run outlasts.
    book = await rest.book(market.symbol, depth=1000)
    while book["seq"] < start + 20 and not flow.done():
        await asyncio.sleep(0.01)
        book = await rest.book(market.symbol, depth=1000)
    follower = Follower(client, market.symbol)
    follower.mirror.rest(book)
    await flow
    await assert_same_book(follower, rest, market.symbol)
    assert follower.mirror.seq > book["seq"]
    await follower.stop()
    await rest.aclose()


async def test_heartbeats_carry_the_latest_sequence_every_second(live, market: Market):
    client = await FeedClient.open(live)
    await client.subscribe("ticker", market.symbol)
    await market.traders[0].place_order(market.symbol, "buy", price="0.5", qty=1)
    book = await Client(live.url).book(market.symbol)
    beats = []
    while len(beats) < 2:
        message, _ = await client.until(lambda m: m["type"] == "heartbeat", timeout=3)
        beats.append(message)
    assert beats[-1]["symbol"] == market.symbol and beats[-1]["seq"] == book["seq"]
    assert beats[-1]["level2_seq"] == book["seq"]  # that order added a level
    assert 0.5e6 < beats[1]["ts"] - beats[0]["ts"] < 1.6e6
    await client.close()


async def test_after_a_restart_sequences_and_trade_ids_go_on(postgres_admin_url):
    with fresh_database(postgres_admin_url) as dsn:
        master_key = secrets.token_bytes(32)
        with serve(create_app(dsn, master_key=master_key, rate_limits=NO_LIMITS), master_key) as first:
            bootstrap(first)
            market = await open_market(first, traders=2)
            await random_flow(market, 30, random.Random(8))
            before = await Client(first.url).book(market.symbol, depth=1000)
        with serve(create_app(dsn, master_key=master_key, rate_limits=NO_LIMITS), master_key) as second:
            for client in (market.issuer, *market.traders):
                client.http.base_url = second.url
            follower = await follow(second, market.symbol)
            rest = Client(second.url)
            await follower.caught_up(before["seq"])
            assert follower.mirror.seq == before["seq"]
            assert follower.mirror.as_rest() == {"bids": before["bids"], "asks": before["asks"]}
            await random_flow(market, 30, random.Random(9))
            await assert_same_book(follower, rest, market.symbol)
            assert follower.trade_ids == [i for i in await all_trade_ids(rest, market.symbol)
                                          if i >= follower.trade_ids[0]]
            await follower.stop()
            await rest.aclose()


def test_the_documented_example_checksums_hold():
    assert checksum([("2.17", 163), ("2.16", 172)], [("2.2", 216)]) == 1428513646
    assert checksum([("2.16", 172)], [("2.18", 5), ("2.2", 216)]) == 3656971804


async def test_subscribers_of_the_same_channels_get_the_same_frame(live, market: Market):
    clients = [await FeedClient.open(live) for _ in range(3)]
    for client in clients:
        await client.subscribe("level2", market.symbol)
        await client.subscribe("trades", market.symbol)
        await client.until(lambda m: m["type"] == "subscribed" and m["channel"] == "trades")
    await market.traders[0].place_order(market.symbol, "sell", price="2.5", qty=4)
    await market.traders[1].place_order(market.symbol, "buy", price="2.5", qty=1)
    frames = []
    for client in clients:
        while True:
            text = await asyncio.wait_for(client.connection.recv(), 5)
            if '"trades"' in text and '"type":"trades"' in text:
                frames.append(text)
                break
    assert frames[0] == frames[1] == frames[2]
    for client in clients:
        await client.close()
