"""A database outage seen through the API: 503 with Retry-After at once, never a hang or a false success.

The test runs its own embedded PostgreSQL, so it can stop and start it under a live server.
"""

import asyncio
import secrets
import time
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.client import ApiError, Client
from exchange.database.embedded import EmbeddedPostgres
from tests.support.api_server import NO_LIMITS, bootstrap, serve

pytestmark = pytest.mark.slow  # a drill

ANSWER_WITHIN = 5.0


async def timed(client: Client, method: str, path: str, **options) -> httpx.Response:
    start = time.monotonic()
    response = await client.request(method, path, **options)
    assert time.monotonic() - start < ANSWER_WITHIN, f"{method} {path} took too long"
    return response


async def test_outage_is_503_with_retry_after_and_nothing_is_half_done(reachable_home: Path):
    server = EmbeddedPostgres(reachable_home)
    dsn = await server.start_async()
    master_key = secrets.token_bytes(32)
    try:
        with serve(create_app(dsn, master_key=master_key, rate_limits=NO_LIMITS), master_key) as live:
            bootstrap(live)
            async with Client(live.url, live.admin_key, live.admin_secret) as admin:
                await admin.create_instrument(kind="compute", symbol="OUT", tick="0.01", model="m",
                                              substitution_group="g", quality=50, tokens_per_lot=1000)
                trader_account = await admin.create_account("outage-trader", "trader")
                await admin.deposit(trader_account["id"], "100")
                key = await admin.create_key(trader_account["id"], ["read", "trade"])
                async with admin.with_key(key["id"], key["secret"]) as trader:
                    before = await trader.place_order("OUT", "buy", price="1.00", qty=1)

                    await server.stop_async()
                    order = {"type": "limit", "symbol": "OUT", "side": "buy", "price": "1.00", "qty": 2,
                             "client_order_id": "during"}
                    for method, path, options in [
                        ("POST", "/v1/orders", {"json": order}),
                        ("GET", "/v1/balances", {}),
                        ("GET", "/v1/orders", {}),
                        ("DELETE", f"/v1/orders/{before['id']}", {}),
                    ]:
                        response = await timed(trader, method, path, **options)
                        assert response.status_code == 503, (method, path, response.text)
                        assert response.headers["content-type"] == "application/problem+json"
                        assert response.json()["code"] == "unavailable"
                        assert int(response.headers["retry-after"]) >= 1
                    assert (await timed(admin, "GET", "/v1/instruments")).status_code == 503

                    await server.start_async()
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            after = await trader.place_order("OUT", "buy", price="1.00", qty=3)
                            break
                        except ApiError as error:
                            assert error.status == 503
                            if time.monotonic() > deadline:
                                pytest.fail("the API did not recover after the database came back")
                            await asyncio.sleep(0.2)

                    open_orders = (await trader.orders(status="open"))["items"]
                    assert sorted(o["id"] for o in open_orders) == sorted([before["id"], after["id"]])
                    with pytest.raises(ApiError):
                        await trader.order_by_client_id("during")
                    assert (await trader.order(before["id"]))["status"] == "open"
    finally:
        await server.stop_async()
