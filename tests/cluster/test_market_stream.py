"""The market-data stream end to end: a real sequencer on a real database publishes through a real embedded NATS
(``exchange.broker.market_stream``), and gateways' followers (``api.market_follower``) keep their market views
and feed hubs from it. Each test compares a follower's hub with the hub of the engine's own market view, fed in
process as the one-process server feeds it: same levels, seqs and checksums.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from api.feed.hub import Hub
from api.market_follower import MarketFollower
from api.marketdata import MarketData
from exchange.account_events import AccountEvents
from exchange.broker import market_stream, subjects
from exchange.broker.connection import connect
from exchange.broker.embedded import EmbeddedNats
from exchange.broker.market_stream import MarketStreamPublisher
from exchange.commands import CancelOrder, Deposit, PlaceOrder
from exchange.database.migrations import migrate
from exchange.sequencer import Sequencer
from tests.support.broker import nats_home
from tests.support.engine import ASK, BID, COMPUTE, DATASET, TICK, Market, open_market_through

GRACE = 0.5
"""How long a follower lets the engine's settled seqs run ahead before it reloads, here."""


@pytest.fixture
def home() -> Iterator[Path]:
    with nats_home("tokex-md-") as path:
        yield path


@pytest.fixture
async def nats_server(home: Path) -> AsyncIterator[EmbeddedNats]:
    async with EmbeddedNats(home, port=0) as server:
        yield server


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(fresh_database_url)
    async with asyncpg.create_pool(fresh_database_url, min_size=1, max_size=6) as created:
        yield created


@dataclass
class Engine:
    """A leading engine: the sequencer, its publisher, and its own market view and hub, fed in process."""

    sequencer: Sequencer
    publisher: MarketStreamPublisher
    view: MarketData
    hub: Hub
    nc: object
    skip: int = 0
    """Batches to commit without publishing them (a lost message)."""
    batches: list[tuple[list, list[int]]] = field(default_factory=list)

    def publish(self, batch: list, fill_ids: list[int]) -> None:
        self.view.apply(batch, fill_ids)
        self.batches.append((batch, fill_ids))
        if self.skip:
            self.skip -= 1
            return
        self.publisher.publish(batch, fill_ids)

    async def stop(self) -> None:
        await self.sequencer.stop()
        await self.publisher.stop()
        await self.nc.close()


async def start_engine(pool: asyncpg.Pool, url: str) -> Engine:
    nc = await connect(url, "engine")
    publisher = MarketStreamPublisher(nc, nc.jetstream(), beat_interval=0.1)
    view = MarketData()
    async with pool.acquire() as conn:
        await view.load(conn)
    hub = Hub(view)
    view.listeners.append(hub.publish)
    engine = Engine(None, publisher, view, hub, nc)  # type: ignore[arg-type]
    engine.sequencer = await Sequencer.open(pool, publish=engine.publish, resync=publisher.resync,
                                            publish_effects=publisher.publish_effects)
    async with pool.acquire() as conn:
        await publisher.start(conn)
    return engine


@dataclass
class Gateway:
    follower: MarketFollower
    view: MarketData
    hub: Hub
    nc: object
    accounts: list[AccountEvents]

    async def stop(self) -> None:
        await self.follower.stop()
        await self.nc.close()


async def start_gateway(pool: asyncpg.Pool, url: str) -> Gateway:
    nc = await connect(url, "gateway")
    view = MarketData()
    follower = MarketFollower(nc, nc.jetstream(), view, pool, grace=GRACE)
    await follower.start()
    hub = Hub(view)
    view.listeners.append(hub.publish)
    view.reloaded.append(hub.resync)
    accounts: list[AccountEvents] = []
    view.account_listeners.append(accounts.extend)
    return Gateway(follower, view, hub, nc, accounts)


@asynccontextmanager
async def engine_and_gateway(pool: asyncpg.Pool, url: str) -> AsyncIterator[tuple[Engine, Gateway, Market]]:
    """A leading engine, a gateway following it, then the test market opened through the engine; both stopped at
    the end."""
    engine = await start_engine(pool, url)
    try:
        gateway = await start_gateway(pool, url)
        try:
            yield engine, gateway, await open_market_through(engine.sequencer)
        finally:
            await gateway.stop()
    finally:
        await engine.stop()


def ladders(hub: Hub, chains: bool = True) -> dict:
    """What a feed client sees of every book: levels, seq and the level2 checksum, and with ``chains`` the seqs of
    the last level2 and trades messages (which a reload sets to the snapshot's seq, as in one process)."""
    return {symbol: (ladder.levels(), ladder.seq, ladder.checksum(),
                     (ladder.level2_seq, ladder.trades_seq) if chains else None)
            for symbol, ladder in hub.ladders.items() if ladder.seq}


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def caught_up(engine: Engine, gateway: Gateway, chains: bool = True) -> None:
    """Wait until the gateway shows every ladder as the engine's hub does."""
    await until(lambda: ladders(gateway.hub, chains) == ladders(engine.hub, chains))


async def flow(engine: Engine, market: Market, commands: int, rng: random.Random) -> None:
    """Orders and cancels on both instruments, a few at a time (several per batch)."""
    placed: list[tuple[int, int]] = []
    for _ in range(commands // 4):
        batch = []
        for _ in range(4):
            if placed and rng.random() < 0.25:
                account, order_id = placed.pop(rng.randrange(len(placed)))
                batch.append(CancelOrder(account, order_id))
                continue
            symbol = rng.choice((COMPUTE, COMPUTE, DATASET))
            side = rng.choice(("buy", "sell"))
            account = market.alice if side == "buy" else market.issuer
            if symbol == COMPUTE:
                price = (BID if side == "buy" else ASK) + rng.randint(-8, 8) * TICK
                qty = rng.randint(1, 20)
            else:
                price, qty = rng.randint(900, 1100), rng.randint(2, 5)
            batch.append(PlaceOrder(account, symbol, side, price=price, qty=qty))
        results = await asyncio.gather(*(engine.sequencer.submit(command) for command in batch))
        for command, result in zip(batch, results, strict=True):
            if isinstance(command, PlaceOrder) and getattr(result, "status", None) == "open":
                placed.append((command.account_id, result.id))


async def test_a_followers_ladders_and_checksums_equal_the_engines(pool, nats_server):
    async with engine_and_gateway(pool, nats_server.url) as (engine, gateway, market):
        await flow(engine, market, 200, random.Random(3))
        await caught_up(engine, gateway)
        assert {COMPUTE, DATASET} <= set(ladders(gateway.hub))
        assert gateway.follower.reloads == 0 and gateway.follower.applied > 0
        # One message per instrument per batch: fewer than the commands.
        info = await engine.nc.jetstream().stream_info(subjects.MARKET_DATA_STREAM)
        assert 0 < info.state.messages <= sum(len({symbol for symbol, _ in batch}) for batch, _ in engine.batches)


async def test_a_follower_started_late_catches_up_from_the_stream(pool, nats_server):
    engine = await start_engine(pool, nats_server.url)
    try:
        market = await open_market_through(engine.sequencer)
        await flow(engine, market, 80, random.Random(5))
        early = await start_gateway(pool, nats_server.url)
        # Started while orders flow: what it reads and what the stream holds meet without a gap or a repeat.
        late_start = asyncio.ensure_future(start_gateway(pool, nats_server.url))
        await flow(engine, market, 120, random.Random(6))
        late = await late_start
        await flow(engine, market, 40, random.Random(7))
        for gateway in (early, late):
            await caught_up(engine, gateway)
            assert gateway.follower.reloads == 0
            await gateway.stop()
    finally:
        await engine.stop()


async def test_a_missing_batch_is_detected_and_repaired_from_postgresql(pool, nats_server):
    async with engine_and_gateway(pool, nats_server.url) as (engine, gateway, market):
        await flow(engine, market, 40, random.Random(8))
        await caught_up(engine, gateway)

        # Lost, then the next batch on the instrument: its seq jumps.
        engine.skip = 1
        await engine.sequencer.submit(PlaceOrder(market.alice, COMPUTE, "buy", price=BID - 20 * TICK, qty=1))
        await engine.sequencer.submit(PlaceOrder(market.alice, COMPUTE, "buy", price=BID - 21 * TICK, qty=1))
        await caught_up(engine, gateway, chains=False)
        assert gateway.follower.reloads == 1

        # Lost, and nothing follows: the engine's settled seqs say so (here after a resync, as a new leader would).
        engine.skip = 1
        await engine.sequencer.submit(PlaceOrder(market.alice, COMPUTE, "buy", price=BID - 22 * TICK, qty=1))
        async with pool.acquire() as conn:
            await engine.publisher.resync(conn)
        await caught_up(engine, gateway, chains=False)
        assert gateway.follower.reloads == 2


async def test_publishing_the_same_batch_again_changes_nothing(pool, nats_server):
    async with engine_and_gateway(pool, nats_server.url) as (engine, gateway, market):
        await flow(engine, market, 40, random.Random(9))
        await caught_up(engine, gateway)
        js = engine.nc.jetstream()
        await until(lambda: engine.publisher.pending == 0)
        before = (await js.stream_info(subjects.MARKET_DATA_STREAM)).state.messages
        seen = ladders(gateway.hub)

        # As an engine that took over would: the last batches again, from another publisher.
        again = MarketStreamPublisher(engine.nc, js)
        async with pool.acquire() as conn:
            await again.start(conn)
        for batch, fill_ids in engine.batches[-3:]:
            again.publish(batch, fill_ids)
        await until(lambda: again.pending == 0)
        await again.stop()
        await asyncio.sleep(GRACE * 2)
        assert (await js.stream_info(subjects.MARKET_DATA_STREAM)).state.messages == before
        assert ladders(gateway.hub) == seen
        assert gateway.follower.reloads == 0


async def test_account_events_arrive_for_a_deposit(pool, nats_server):
    async with engine_and_gateway(pool, nats_server.url) as (engine, gateway, market):
        await until(lambda: any(e.account_id == market.bob for e in gateway.accounts))
        gateway.accounts.clear()
        await engine.sequencer.submit(Deposit(market.bob, 12_500_000))
        await until(lambda: any(e.account_id == market.bob for e in gateway.accounts))
        [events] = [e for e in gateway.accounts if e.account_id == market.bob]
        available, held = engine.sequencer.engine.ledger.balances[(market.bob, "CNY")]
        assert [(b.asset, b.available, b.held) for b in events.balances] == [("CNY", available, held)]
        assert events.entry > 0 and events.orders == [] and events.fills == []

        # A trade: both sides get their order, their side of the fill and their balances.
        await engine.sequencer.submit(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=2))
        gateway.accounts.clear()
        taker = await engine.sequencer.submit(PlaceOrder(market.bob, COMPUTE, "buy", price=ASK, qty=2))
        await until(lambda: {market.bob, market.issuer} <= {e.account_id for e in gateway.accounts})
        bob = next(e for e in gateway.accounts if e.account_id == market.bob)
        assert [order.id for order in bob.orders] == [taker.id] and bob.orders[0].status == "filled"
        assert [(f.role, f.side, f.qty) for f in bob.fills] == [("taker", "buy", 2)]
        assert {b.asset for b in bob.balances} == {"CNY", COMPUTE}
        assert bob.seqs[COMPUTE] == engine.view.books[COMPUTE].seq
        assert gateway.follower.reloads == 0


async def test_a_heavy_batch_of_account_events_is_split_over_numbered_messages(pool, nats_server, monkeypatch):
    # Every account's events over the limit: each goes in a message of its own, numbered one after the other.
    monkeypatch.setattr(market_stream, "MAX_ACCOUNT_MESSAGE_BYTES", 1)
    async with engine_and_gateway(pool, nats_server.url) as (engine, gateway, market):
        await engine.sequencer.submit(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=2))
        await until(lambda: engine.publisher.pending == 0)
        numbered = engine.publisher.accounts_settled
        gateway.accounts.clear()
        await engine.sequencer.submit(PlaceOrder(market.bob, COMPUTE, "buy", price=ASK, qty=2))
        await until(lambda: {market.bob, market.issuer} <= {e.account_id for e in gateway.accounts})
        assert engine.publisher.accounts_settled == numbered + 2
        assert sorted(e.account_id for e in gateway.accounts) == sorted([market.bob, market.issuer])
        await asyncio.sleep(3 * GRACE)  # settled counts compared meanwhile: nothing is missing
        assert gateway.follower.reloads == 0


async def test_the_stream_resumes_by_itself_when_nats_restarts(pool, home):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = EmbeddedNats(home, port=port)
    url = await server.start_async()
    try:
        async with engine_and_gateway(pool, url) as (engine, gateway, market):
            await flow(engine, market, 40, random.Random(10))
            await caught_up(engine, gateway)

            await server.stop_async()
            # Committed while NATS is away: queued by the publisher, sent once it is back.
            await flow(engine, market, 40, random.Random(11))
            assert engine.publisher.pending > 0
            server = EmbeddedNats(home, port=port)
            assert await server.start_async() == url
            await flow(engine, market, 40, random.Random(12))
            await caught_up(engine, gateway, chains=False)
            await until(lambda: engine.publisher.pending == 0)
    finally:
        await server.stop_async()
