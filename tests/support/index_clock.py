"""Run the price index's minute job on a live server with a clock stepped past the trades, for API and feed tests.

The server's own job runs on the wall clock; this one runs ``AHEAD`` of the last trade: still inside its 24-hour
window, and past any minute the server's job computes meanwhile, so each call adds fresh rows and publishes them
to the server's feed as the server's job would.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from exchange.indexer import MINUTE, SETTLE, Indexer, floor_minute
from tests.support.api_server import Live

AHEAD = timedelta(hours=12)


async def on_server(live: Live, coroutine):
    """Await ``coroutine`` on the server's loop without blocking this one."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, live.loop))


async def compute_index(live: Live, minutes: int = 1) -> datetime:
    """Compute ``minutes`` more minutes of the index; return the newest minute computed."""
    conn = await asyncpg.connect(live.dsn)
    try:
        traded = await conn.fetchval("SELECT max(created_at) FROM fill")
        newest = await conn.fetchval("SELECT max(at) FROM price_index")
    finally:
        await conn.close()
    start = floor_minute(traded or datetime.now(UTC)) + AHEAD
    at = max(start, newest or start) + minutes * MINUTE
    services, hub = live.app.state.services, live.app.state.feed
    indexer = Indexer(services.pool, clock=lambda: at + SETTLE, publish=hub.publish_index)
    await on_server(live, indexer.run_once())
    return at


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
