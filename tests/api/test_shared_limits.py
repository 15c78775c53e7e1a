"""Limits held across gateways: real limiters telling each other their usage over a real embedded NATS, then a live
server whose key limit and feed connection cap count what another gateway reports."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as Nats

from api.app import create_app
from api.client import Client
from api.feed.limits import FeedLimits
from api.ratelimit import RateLimiter, RateLimits
from api.shared_limits import SharedLimits
from exchange.broker.connection import connect
from exchange.broker.subjects import LIMITS
from tests.support.api_server import Live, bootstrap, serve
from tests.support.broker import nats_server
from tests.support.databases import fresh_database
from tests.support.feed import FeedClient, on_server


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with nats_server("tokex-limits-") as url:
        yield url


class Gateway:
    """What one gateway shares: its key limiter, its feed connections, and what the others have open."""

    def __init__(self, nc: Nats, rate: float, burst: float, **options) -> None:
        self.nc = nc
        self.keys = RateLimiter(rate, burst, name="key")
        self.connections: Counter[str] = Counter()
        self.elsewhere: Counter[str] = Counter()
        self.shared = SharedLimits(nc, [self.keys], self.connections, self.elsewhere, **options)


@pytest.fixture
async def gateways(nats_url: str) -> AsyncIterator[list[Gateway]]:
    made: list[Gateway] = []

    async def make(rate: float, burst: float, **options) -> Gateway:
        gateway = Gateway(await connect(nats_url, "gateway"), rate, burst, **options)
        await gateway.shared.start()
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.shared.stop()
        await gateway.nc.close()


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the gateways did not hear from each other in time"
        await asyncio.sleep(0.01)


async def test_a_key_that_spent_its_burst_on_one_gateway_is_refused_on_the_other(gateways):
    one, two = await gateways(rate=1.0, burst=10), await gateways(rate=1.0, burst=10)
    assert [one.keys.take("tk_a") for _ in range(10)] == [0.0] * 10
    await until(lambda: two.shared.received > 0)
    wait = two.keys.take("tk_a")
    assert 0.5 < wait <= 1.0  # the next token, at 1 a second
    assert two.keys.take("tk_other") == 0.0
    # A charge is not usage of the gateway charged: it is not told back, so nothing is counted twice.
    await asyncio.sleep(0.3)
    assert 0.5 < one.keys.wait("tk_a") <= 1.0


async def burst(gateways: list[Gateway], key: str, seconds: float) -> tuple[int, float]:
    """Take ``key`` on every gateway in turn for ``seconds``; how many takes were admitted, and in how long."""
    admitted = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for gateway in gateways:
            admitted += gateway.keys.take(key) == 0.0
        await asyncio.sleep(0.002)
    return admitted, time.monotonic() - started


async def test_a_burst_on_two_gateways_at_once_overshoots_once_and_within_the_stated_bound(gateways):
    rate, burst_size = 20.0, 10
    pair = [await gateways(rate=rate, burst=burst_size), await gateways(rate=rate, burst=burst_size)]
    admitted, elapsed = await burst(pair, "tk_b", 1.5)
    delay = 0.15  # INTERVAL plus the transit and this loop's turns, generously
    assert admitted <= burst_size + rate * elapsed + (burst_size + rate * delay)
    # Without sharing the two would have let through twice the limit.
    assert admitted < 2 * (burst_size + rate * elapsed) - burst_size
    # The debt paid back, the pair holds the rate of one bucket from now on.
    admitted, elapsed = await burst(pair, "tk_b", 1.0)
    assert admitted <= rate * elapsed + rate * delay + 1


async def test_connections_open_on_one_gateway_count_on_the_other_until_it_goes_silent(gateways):
    one = await gateways(rate=1.0, burst=10, peer_timeout=0.5)
    two = await gateways(rate=1.0, burst=10, peer_timeout=0.5)
    one.connections["10.1.2.3"] = 3
    one.connections["10.9.9.9"] = 1
    await until(lambda: two.elsewhere == Counter({"10.1.2.3": 3, "10.9.9.9": 1}))
    del one.connections["10.9.9.9"]
    one.connections["10.1.2.3"] = 2
    await until(lambda: two.elsewhere == Counter({"10.1.2.3": 2}))
    assert one.elsewhere == Counter()
    await one.shared.stop()  # as if it died: it says nothing more
    await until(lambda: not two.elsewhere)


async def test_a_message_that_is_not_usage_is_refused_and_charges_nothing(gateways, nats_url):
    gateway = await gateways(rate=1.0, burst=2)
    sender = await connect(nats_url, "test")
    try:
        await sender.publish(LIMITS, b"\x93not usage")
        await sender.flush()
        await until(lambda: gateway.shared.refused == 1)
    finally:
        await sender.close()
    assert gateway.shared.received == 0
    assert [gateway.keys.take("tk_c") for _ in range(2)] == [0.0, 0.0]


@pytest.fixture
def limited_server(postgres_admin_url: str, tmp_path: Path) -> Iterator[Live]:
    limits = RateLimits(per_key_rate=0.5, per_key_burst=5, per_address_rate=None)
    with fresh_database(postgres_admin_url, "tokex_api") as dsn:
        master_key = secrets.token_bytes(32)
        app = create_app(dsn, master_key=master_key, rate_limits=limits,
                         feed_limits=FeedLimits(max_connections_per_address=3))
        with serve(app, master_key) as live:
            live.dsn = dsn
            bootstrap(live)
            yield live


async def test_a_server_counts_another_gateways_usage_of_its_keys_and_connections(limited_server, gateways,
                                                                                 nats_url):
    live = limited_server
    services, hub = live.app.state.services, live.app.state.feed

    async def attach() -> tuple[Nats, SharedLimits]:
        nc = await connect(nats_url, "gateway")
        shared = SharedLimits(nc, [services.key_limiter, services.address_limiter], hub.per_address,
                              hub.per_address_elsewhere)
        await shared.start()
        return nc, shared

    nc, shared = await on_server(live, attach())
    try:
        other = await gateways(rate=0.5, burst=5)
        async with Client(live.url, live.admin_key, live.admin_secret) as admin:
            assert (await admin.request("GET", "/v1/balances")).status_code == 200
            # The other gateway let the same key through 4 times: one token is left here, not 4.
            for _ in range(4):
                assert other.keys.take(live.admin_key) == 0.0
            await until(lambda: shared.received > 0)
            responses = [await admin.request("GET", "/v1/balances") for _ in range(2)]
            assert [r.status_code for r in responses] == [429, 429]
            assert responses[0].json()["code"] == "rate_limited"

        # Two feed connections from this address on the other gateway: one more is allowed here, not three.
        other.connections["127.0.0.1"] = 2
        await until(lambda: hub.per_address_elsewhere["127.0.0.1"] == 2)
        first = await FeedClient.open(live)
        await first.challenge()  # the server has counted it
        second = await FeedClient.open(live)
        refused = await second.next()
        assert refused["type"] == "error" and refused["code"] == "too_many_connections"
        await first.close()
        await second.close()
    finally:
        async def detach() -> None:
            await shared.stop()
            await nc.close()

        await on_server(live, detach())
    assert hub.per_address_elsewhere == Counter()
