"""What a restart rebuilds from the database: the engine's whole state, its sequence numbers and id counters, the
client order ids and the fee tiers, through the real sequencer on a real PostgreSQL.
"""

import time

import asyncpg

from exchange import fees, invariants, store
from exchange.commands import (
    AmendOrder,
    Burn,
    CancelAll,
    CancelOrder,
    CreateAccount,
    Deposit,
    PlaceOrder,
    Redeem,
    SetInstrumentStatus,
    Withdraw,
)
from exchange.records import Order
from exchange.sequencer import Sequencer
from tests.support.engine import (
    ASK,
    BID,
    COMPUTE,
    DATASET,
    DEPOSIT,
    TAKER_PPM,
    TICK,
    engine_state,
    open_market_through,
    submit_ok,
)


async def open_account(sequencer: Sequencer, name: str, cash: int) -> int:
    done = await submit_ok(sequencer, CreateAccount(name, "trader"))
    await submit_ok(sequencer, Deposit(done.id, cash))
    return done.id


async def order_row(sequencer: Sequencer, order_id: int) -> Order:
    async with sequencer.pool.acquire() as conn:
        return await store.order_row(conn, order_id)


async def test_a_restart_rebuilds_identical_state_and_sequence_numbers_continue(pool: asyncpg.Pool) -> None:
    published: list[tuple[str, list]] = []
    first = await Sequencer.open(pool, publish=lambda events, fill_ids: published.extend(events))
    m = await open_market_through(first)
    carol = await open_account(first, "carol", DEPOSIT)
    await submit_ok(first, PlaceOrder(m.issuer, COMPUTE, "sell", price=ASK, qty=10))
    await submit_ok(first, PlaceOrder(m.issuer, COMPUTE, "sell", price=ASK, qty=5, client_order_id="i-1"))
    await submit_ok(first, PlaceOrder(m.issuer, COMPUTE, "sell", price=ASK + TICK, qty=7, post_only=True))
    amended = await submit_ok(first, PlaceOrder(m.alice, COMPUTE, "buy", price=BID, qty=10,
                                                 client_order_id="a-1"))
    await submit_ok(first, PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=3))
    await submit_ok(first, AmendOrder(m.alice, amended.id, qty=12))  # to the back of its level
    await submit_ok(first, PlaceOrder(carol, COMPUTE, "buy", price=ASK, qty=12))  # takes 12 of the 15 at ASK
    await submit_ok(first, PlaceOrder(m.issuer, DATASET, "sell", price=777, qty=6, stp="decrement"))
    await submit_ok(first, PlaceOrder(carol, DATASET, "buy", "market", budget=2_000))
    gone = await submit_ok(first, PlaceOrder(m.bob, DATASET, "buy", price=700, qty=4))
    await submit_ok(first, CancelOrder(m.bob, gone.id))
    await submit_ok(first, Redeem(carol, COMPUTE, 2))
    await submit_ok(first, Burn(m.issuer, DATASET, 10))
    await submit_ok(first, Withdraw(carol, 1_000))
    await submit_ok(first, SetInstrumentStatus(DATASET, "halted"))
    await first.stop()
    live = engine_state(first.engine)
    live_seq = {s: i.seq for s, i in first.engine.instruments.items()}
    assert published[-1][1][-1].seq == live_seq[DATASET]

    async with pool.acquire() as conn:
        loaded = await store.load(conn)
        assert await invariants.problems(conn, loaded) == []
    assert engine_state(loaded) == live
    now = time.time_ns() // 1_000
    for account, traded in ((m.issuer, True), (carol, True), (m.alice, False), (m.bob, False)):
        assert loaded.volume.trailing(account, now) == first.engine.volume.trailing(account, now)
        assert bool(loaded.volume.trailing(account, now)) == traded

    second = await Sequencer.open(pool, publish=lambda events, fill_ids: published.extend(events))
    published.clear()
    try:
        placed = await submit_ok(second, PlaceOrder(m.bob, COMPUTE, "buy", price=BID - TICK, qty=1))
        assert placed.id == live["ids"]["order"]
        assert published[0][1][0].seq == live_seq[COMPUTE] + 1
        assert (await order_row(second, placed.id)).priority == live_seq[COMPUTE] + 1
        filled = await submit_ok(second, PlaceOrder(m.bob, COMPUTE, "buy", price=ASK, qty=1))
        assert filled.fills[0].fill_id == live["ids"]["fill"]
        replayed = await second.submit(PlaceOrder(m.alice, COMPUTE, "sell", price=ASK, qty=1, client_order_id="a-1"))
        assert replayed == second.engine.view(amended.id)
        await submit_ok(second, SetInstrumentStatus(DATASET, "trading"))
        await submit_ok(second, CancelAll(m.issuer, DATASET))
        assert published[-1][1][0].seq == live_seq[DATASET] + 1
    finally:
        await second.stop()
    async with pool.acquire() as conn:
        assert await invariants.problems(conn, second.engine) == []
        assert dict(await conn.fetch(
            "SELECT i.symbol, s.seq FROM instrument i JOIN instrument_seq s ON s.instrument_id = i.id"
        )) == {
            COMPUTE: live_seq[COMPUTE] + 2, DATASET: live_seq[DATASET] + 1}


async def test_the_fee_tier_survives_a_restart(pool: asyncpg.Pool) -> None:
    first = await Sequencer.open(pool)
    market = await open_market_through(first)
    price = 1_000 * fees.MICRO
    whale = await open_account(first, "whale", 2_000_000 * fees.MICRO)
    await submit_ok(first, PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=1_000))
    await submit_ok(first, PlaceOrder(whale, COMPUTE, "buy", price=price, qty=1_000))
    await first.stop()

    second = await Sequencer.open(pool)
    try:
        placed = await submit_ok(second, PlaceOrder(whale, COMPUTE, "buy", price=BID, qty=1))
        assert (await order_row(second, placed.id)).taker_fee_ppm == TAKER_PPM * 80 // 100
    finally:
        await second.stop()
    async with pool.acquire() as conn:
        assert await invariants.problems(conn, second.engine) == []
