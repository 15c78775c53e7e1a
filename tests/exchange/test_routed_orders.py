"""Routed orders through the sequencer, against a real PostgreSQL: what commits, what a refusal leaves alone,
and what a restart rebuilds."""

import asyncpg
import pytest

from exchange import invariants
from exchange.commands import (
    ApproveIssuer,
    Deposit,
    Done,
    ListInstrument,
    Mint,
    PlaceOrder,
    Rejection,
    RouteOrder,
    SetInstrumentStatus,
)
from exchange.records import RoutedOrder
from exchange.rejections import MESSAGES
from exchange.sequencer import Sequencer
from tests.support.engine import ACCOUNTS, SequencedMarket, database_state, snapshot, submit_all

TICK = 10_000
GROUP = "chat-general"
BOOKS = {"DSV3": (90, 2_000_000), "QWEN": (70, 1_500_000), "TINY": (30, 1_000_000)}
"""symbol -> (quality, the issuer's ask); each ask is 10 lots."""


async def routed_market(exchange: Sequencer) -> SequencedMarket:
    accounts = await submit_all(exchange, ACCOUNTS)
    market = SequencedMarket(exchange.engine, *(done.id for done in accounts), exchange=exchange)
    commands = [Deposit(market.alice, 1_000_000_000), Deposit(market.bob, 1_000)]
    for symbol, (quality, _) in BOOKS.items():
        commands += [
            ListInstrument(symbol, "compute", tick=TICK, model=symbol.lower(), substitution_group=GROUP,
                           quality=quality, tokens_per_lot=1_000_000),
            ApproveIssuer(market.issuer, symbol, 1_000),
            Mint(market.issuer, symbol, 100),
        ]
    commands.append(ListInstrument("DATA", "dataset", tick=1, issuer_id=market.issuer, description="d",
                                   license="l", grants="g", supply_cap=10))
    await submit_all(exchange, commands)
    await submit_all(exchange, [PlaceOrder(market.issuer, symbol, "sell", price=ask, qty=10)
                                  for symbol, (_, ask) in BOOKS.items()])
    return market


@pytest.fixture
async def market(exchange: Sequencer) -> SequencedMarket:
    return await routed_market(exchange)


async def test_a_routed_buy_commits_its_children_and_fills_under_one_hold(market: SequencedMarket) -> None:
    result = await market.run(RouteOrder(market.alice, GROUP, "buy", 25, "quality", price=2_000_000))
    assert isinstance(result, RoutedOrder)
    assert [(c.symbol, c.filled_qty, c.status, c.tif) for c in result.children] == \
        [("DSV3", 10, "filled", "IOC"), ("QWEN", 10, "filled", "IOC"), ("TINY", 5, "filled", "IOC")]
    assert result.status == "filled" and result.remainder == 0
    assert result.filled_notional == 10 * 2_000_000 + 10 * 1_500_000 + 5 * 1_000_000
    assert result.quality_lots == 10 * 90 + 10 * 70 + 5 * 30
    async with market.exchange.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM routed_order WHERE id = $1", result.id)
        assert row["order_ids"] == [c.id for c in result.children] and row["status"] == "filled"
        entries = await conn.fetch("SELECT kind FROM journal_entry WHERE order_id = $1 ORDER BY id", result.id)
        # The hold is the plan's exact cost: the children spent all of it, so nothing is left to release.
        assert [e["kind"] for e in entries] == ["hold"]
        assert await conn.fetchval("SELECT count(*) FROM journal_entry WHERE kind IN ('hold', 'release') "
                                   "AND order_id = ANY($1::bigint[])", row["order_ids"]) == 0
        assert await invariants.problems(conn, market.exchange.engine) == []
    assert market.balance(market.alice, "CNY")[1] == 0
    assert market.balance(market.alice, "TINY") == (5, 0)


async def test_halted_books_are_skipped_and_the_remainder_rests_on_the_best_book(market: SequencedMarket) -> None:
    await market.ok(SetInstrumentStatus("DSV3", "halted"))
    result = await market.run(RouteOrder(market.alice, GROUP, "buy", 30, "cost", price=1_500_000,
                                         rest_remainder=True))
    assert isinstance(result, RoutedOrder)
    assert [(c.symbol, c.filled_qty) for c in result.children] == [("TINY", 10), ("QWEN", 10), ("QWEN", 0)]
    resting = result.children[-1]
    assert resting.id == result.resting_order_id and resting.status == "open" and resting.tif == "GTC"
    assert (resting.price, resting.qty) == (1_500_000, 10)
    assert result.status == "partially_filled" and result.remainder == 10
    assert market.balance(market.alice)[1] == market.exchange.engine.orders[resting.id].held > 0


@pytest.mark.parametrize(("command", "code"), [
    (RouteOrder(0, "no-such-group", "buy", 5, "cost", price=TICK), "unknown_group"),
    (RouteOrder(0, GROUP, "buy", 5, "cheapest", price=TICK), "invalid_route_mode"),
    (RouteOrder(0, GROUP, "buy", 5, "cost"), "limit_or_budget_required"),
    (RouteOrder(0, GROUP, "buy", 0, "cost", price=TICK), "invalid_qty"),
    (RouteOrder(0, GROUP, "buy", 10**13, "cost", price=TICK), "invalid_qty"),
    (RouteOrder(0, GROUP, "hold", 5, "cost", price=TICK), "invalid_side"),
    (RouteOrder(0, GROUP, "sell", 5, "cost", budget=10 * TICK), "invalid_route_budget"),
    (RouteOrder(0, GROUP, "buy", 5, "cost", budget=10 * TICK, rest_remainder=True), "rest_requires_price"),
    (RouteOrder(0, GROUP, "buy", 5, "cost", price=TICK + 1, rest_remainder=True), "off_tick_price"),
    (RouteOrder(0, GROUP, "buy", 5, "cost", price=3_000_000), "insufficient_funds"),
    (RouteOrder(0, GROUP, "sell", 5, "cost", price=TICK), "insufficient_tokens"),
    (RouteOrder(0, "DATA", "buy", 5, "cost", price=TICK), "unknown_group"),
])
async def test_a_refused_routed_order_changes_nothing(market: SequencedMarket, command: RouteOrder, code: str) -> None:
    command = RouteOrder(market.bob, *(getattr(command, f) for f in RouteOrder.__struct_fields__[1:]))
    before = await snapshot(market.exchange)
    assert await market.run(command) == Rejection(code, MESSAGES[code])
    assert await snapshot(market.exchange) == before


async def test_a_restart_rebuilds_routed_orders_and_continues_their_numbering(pool: asyncpg.Pool) -> None:
    first = await Sequencer.open(pool)
    market = await routed_market(first)
    # Nothing within the limit: the routed order takes an id and commits no child.
    empty = await market.run(RouteOrder(market.alice, GROUP, "buy", 5, "cost", price=TICK))
    assert isinstance(empty, RoutedOrder) and empty.status == "unfilled" and empty.children == []
    await first.stop()

    second = await Sequencer.open(pool)
    try:
        market.switch(second)
        again = await market.run(RouteOrder(market.alice, GROUP, "buy", 5, "balance", budget=5_100_000))
        assert isinstance(again, RoutedOrder)
        assert again.id > empty.id and all(c.id > again.id for c in again.children)
        # Price per quality point: QWEN 1.5/70 < DSV3 2.0/90 < TINY 1.0/30; the budget buys 3 lots and their fee.
        assert [(c.symbol, c.filled_qty) for c in again.children] == [("QWEN", 3)]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM routed_order") == 2
            assert await invariants.problems(conn, second.engine) == []
    finally:
        await second.stop()


async def test_a_routed_orders_client_id_returns_the_original_even_after_a_restart(pool: asyncpg.Pool) -> None:
    first = await Sequencer.open(pool)
    market = await routed_market(first)
    placed = await market.run(RouteOrder(market.alice, GROUP, "buy", 5, "cost", price=2_000_000,
                                         client_order_id="route-1"))
    assert isinstance(placed, RoutedOrder) and placed.filled_qty == 5
    before = await database_state(pool)
    # The same id with other terms still names the first routed order, and trades nothing.
    again = await market.run(RouteOrder(market.alice, GROUP, "buy", 9, "quality", price=2_000_000,
                                        client_order_id="route-1"))
    assert again == Done(placed.id)
    assert await database_state(pool) == before
    await first.stop()

    second = await Sequencer.open(pool)
    try:
        market.switch(second)
        assert await market.run(RouteOrder(market.alice, GROUP, "buy", 5, "cost", price=2_000_000,
                                           client_order_id="route-1")) == Done(placed.id)
        # Another account's id space is its own.
        other = await market.run(RouteOrder(market.bob, GROUP, "buy", 1, "cost", price=2_000_000,
                                            client_order_id="route-1"))
        assert isinstance(other, Rejection) and other.code == "insufficient_funds"
        assert await database_state(pool) == before
    finally:
        await second.stop()


async def test_tokex_check_finds_a_routed_order_that_disagrees_with_its_children(market: SequencedMarket) -> None:
    result = await market.run(RouteOrder(market.alice, GROUP, "buy", 12, "cost", price=1_500_000))
    assert isinstance(result, RoutedOrder)
    async with market.exchange.pool.acquire() as conn:
        await conn.execute("UPDATE routed_order SET filled_qty = filled_qty + 1 WHERE id = $1", result.id)
        assert await invariants.problems(conn) == [
            f"routed order {result.id} filled 13 lots but its children 12, or a child is missing"]
        await conn.execute("UPDATE routed_order SET filled_qty = filled_qty - 1 WHERE id = $1", result.id)


async def test_a_child_stopped_by_self_trade_prevention_gives_its_hold_back_in_one_release(
        market: SequencedMarket) -> None:
    await market.ok(RouteOrder(market.alice, GROUP, "buy", 2, "cost", price=1_000_000))  # alice holds 2 TINY
    own = await market.ok(PlaceOrder(market.alice, "TINY", "sell", price=900_000, qty=2))
    result = await market.run(RouteOrder(market.alice, GROUP, "buy", 5, "cost", price=1_000_000))
    assert isinstance(result, RoutedOrder)
    [child] = result.children
    assert (child.symbol, child.filled_qty, child.status, child.reason) == ("TINY", 0, "cancelled", "self_trade")
    assert result.status == "unfilled" and result.remainder == 5
    assert market.exchange.engine.orders[own.id].status == "open"
    assert market.balance(market.alice)[1] == 0
    async with market.exchange.pool.acquire() as conn:
        kinds = [row["kind"] for row in await conn.fetch(
            "SELECT kind FROM journal_entry WHERE order_id = $1 ORDER BY id", result.id)]
        assert kinds == ["hold", "release"]
        assert await conn.fetchval("SELECT count(*) FROM journal_entry WHERE order_id = $1", child.id) == 0
