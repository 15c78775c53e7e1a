"""When the feed flushes: at once on a quiet server, so an update never waits for ``flush_interval``; and group by
group, every group getting every message once, in order."""

import asyncio
import random
import time

from api.client import Client
from api.feed.limits import FeedLimits
from tests.support.feed import FeedClient, assert_same_book, feed_server, follow, open_market, random_flow


async def test_updates_on_a_quiet_server_go_out_at_once(postgres_admin_url):
    # A flush interval far above what the test allows: an update that waited for it would fail.
    with feed_server(postgres_admin_url, FeedLimits(flush_interval=2.0)) as live:
        market = await open_market(live)
        client = await FeedClient.open(live)
        await client.subscribe("level2", market.symbol)
        await client.until(lambda m: m["type"] == "snapshot")
        for price in ("2.5", "2.6", "2.7"):
            started = time.monotonic()
            await market.traders[0].place_order(market.symbol, "sell", price=price, qty=1)
            update, _ = await client.until(lambda m: m["type"] == "update", timeout=1.5)
            assert update["asks"] == [[price, 1]]
            assert time.monotonic() - started < 1.0
        await client.close()
        for trader in (market.issuer, *market.traders):
            await trader.aclose()


async def test_every_delivery_group_gets_every_update_once_in_order(postgres_admin_url):
    # One connection per group: each takes what is queued when its turn comes, so the groups' frames are cut at
    # different messages; a follower joining while orders flow starts from its snapshot in a group of its own.
    with feed_server(postgres_admin_url, FeedLimits(delivery_chunk=1)) as live:
        market = await open_market(live)
        rest = Client(live.url)
        followers = [await follow(live, market.symbol) for _ in range(3)]
        flow = asyncio.ensure_future(random_flow(market, 120, random.Random(7), concurrency=8))
        await asyncio.sleep(0.3)
        followers.append(await follow(live, market.symbol))
        await flow
        for follower in followers:
            await assert_same_book(follower, rest, market.symbol)
            assert follower.mirror.snapshots == 1
        trades = [follower.trade_ids for follower in followers[:3]]
        assert trades[0] and trades[0] == trades[1] == trades[2]
        assert followers[3].trade_ids == trades[0][len(trades[0]) - len(followers[3].trade_ids):]
        for follower in followers:
            await follower.stop()
        await rest.aclose()
        for trader in (market.issuer, *market.traders):
            await trader.aclose()
