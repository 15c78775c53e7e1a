"""What the sequencer commits for the engine's commands, read back from a real PostgreSQL: a refusal writes
nothing; an order's hold, its release, its fills and their fees are the rows the engine says. The engine's own
behaviour is tested in memory (``test_engine_commands.py``); ``exchange`` checks ``invariants.problems`` after
each test.
"""

from collections.abc import Callable

import pytest
import pytest_asyncio

from exchange import fees, store
from exchange.commands import AmendOrder, CancelOrder, Command, CreateAccount, Deposit, Mint, PlaceOrder, Withdraw
from exchange.ledger import CASH, FEES
from exchange.sequencer import Sequencer
from tests.support.engine import (
    ASK,
    BID,
    COMPUTE,
    DATASET,
    DEPOSIT,
    MAX_PPM,
    NOBODY,
    Market,
    make_busy_through,
    open_market_through,
    refusal,
    snapshot,
    submit_ok,
)

REFUSALS: dict[str, tuple[Callable[[Market], Command], str]] = {
    "an unknown account": (lambda m: Deposit(NOBODY, 1), "unknown_account"),
    "a trader mints": (lambda m: Mint(m.alice, COMPUTE, 1), "not_permitted"),
    "a buy beyond funds": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=1_000), "insufficient_funds"),
    "a withdrawal beyond funds": (lambda m: Withdraw(m.bob, DEPOSIT + 1), "insufficient_funds"),
    "a post-only that would take": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=ASK, qty=1, post_only=True),
                                    "would_take"),
    "an amendment beyond funds": (lambda m: AmendOrder(m.alice, m.bid, qty=600), "insufficient_funds"),
    "a taken name": (lambda m: CreateAccount("alice", "trader"), "name_taken"),
}
"""A refusal of each kind of command (every refusal is tested in memory)."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unchanged(module_exchange: Sequencer) -> Market:
    """A busy market shared by the tests that change nothing (each asserts so)."""
    return await make_busy_through(module_exchange, await open_market_through(module_exchange))


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_command_commits_nothing(module_exchange: Sequencer, unchanged: Market, case: str) -> None:
    make, code = REFUSALS[case]
    before = await snapshot(module_exchange)
    command = make(unchanged)
    assert await module_exchange.submit(command) == refusal(command, code)
    assert await snapshot(module_exchange) == before


@pytest.fixture
async def market(exchange: Sequencer) -> Market:
    return await open_market_through(exchange)


async def test_an_orders_hold_and_its_release_are_committed(exchange: Sequencer, market: Market) -> None:
    hold = fees.buy_hold(10, BID, MAX_PPM)
    placed = await submit_ok(exchange, PlaceOrder(market.alice, COMPUTE, "buy", price=BID, qty=10))
    async with exchange.pool.acquire() as conn:
        assert (await store.order_row(conn, placed.id)).held == hold
        assert await conn.fetchval(
            "SELECT coalesce(sum(p.amount), 0) FROM posting p JOIN journal_entry e ON e.id = p.entry_id "
            "WHERE e.kind = 'hold' AND e.order_id = $1 AND p.bucket = 'held'", placed.id) == hold
    await submit_ok(exchange, CancelOrder(market.alice, placed.id))
    async with exchange.pool.acquire() as conn:
        assert (await store.order_row(conn, placed.id)).held == 0
        assert tuple(await conn.fetchrow("SELECT available, held FROM balance WHERE account_id = $1 AND asset = $2",
                                         market.alice, CASH)) == (DEPOSIT, 0)


async def test_fills_commit_the_resting_price_and_both_fees(exchange: Sequencer, market: Market) -> None:
    # DATASET has tick 1: 5 lots at 333 is 1,665 micro-yuan; 0.2 % is 3.33 and 0.1 % is 1.665.
    await submit_ok(exchange, PlaceOrder(market.issuer, DATASET, "sell", price=333, qty=5))
    await submit_ok(exchange, PlaceOrder(market.bob, DATASET, "buy", price=400, qty=5))
    async with exchange.pool.acquire() as conn:
        assert tuple(await conn.fetchrow("SELECT price, qty, maker_fee, taker_fee FROM fill")) == (333, 5, 2, 4)
        assert await conn.fetchval("SELECT available FROM balance WHERE account_id = $1 AND asset = $2",
                                   FEES, CASH) == 6
