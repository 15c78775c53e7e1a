"""When the feed flushes: at once on a quiet server, so an update never waits for ``flush_interval``."""

import time

from api.feed.limits import FeedLimits
from tests.support.feed import FeedClient, feed_server, open_market


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
