"""The engine's commands through the sequencer, against a real PostgreSQL.

Refusals: every bad command answers its stable code and changes nothing, compared on a snapshot of the
database and of the engine's memory before and after. Behaviour: replays, holds, fees, prices, tiers and a
restart. The ``exchange`` fixture checks ``invariants.problems`` after every test.
"""

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import msgspec
import pytest
import pytest_asyncio

from exchange import fees, invariants, store
from exchange.commands import (
    AmendOrder,
    ApproveIssuer,
    Burn,
    CancelAll,
    Cancelled,
    CancelOrder,
    Command,
    CreateAccount,
    Deposit,
    Done,
    ListInstrument,
    Mint,
    OrderView,
    PlaceOrder,
    Redeem,
    Rejection,
    Result,
    SetInstrumentStatus,
    Withdraw,
)
from exchange.engine import Engine
from exchange.ledger import CASH, FEES
from exchange.rejections import MESSAGES, WITHDRAWAL_NOT_COVERED
from exchange.sequencer import Sequencer

COMPUTE = "DEEPSEEK-V3"
DATASET = "DS-STEEL-QC"
TICK = 10_000
"""COMPUTE's tick: 0.01 CNY per lot. DATASET is priced to the micro-yuan (tick 1), to see fees round."""
BID = 1_800_000
ASK = 1_900_000
DEPOSIT = 1_000 * fees.MICRO
MAKER_PPM = 10 * 100
TAKER_PPM = 20 * 100
MAX_PPM = TAKER_PPM
NOBODY = 999


@dataclass
class Market:
    """Accounts and instruments listed; the issuer has minted; traders and the issuer hold cash."""

    exchange: Sequencer
    admin: int
    issuer: int
    alice: int
    bob: int
    rival: int
    """An issuer approved for nothing."""
    ask: int = 0
    """The issuer's resting sell of 10 COMPUTE at ASK (``busy`` only)."""
    bid: int = 0
    """Alice's resting buy of 10 COMPUTE at BID, 4 of them filled (``busy`` only)."""
    offer: int = 0
    """Alice's resting post-only sell of 3 of those 4 COMPUTE at ASK + 5 ticks (``busy`` only)."""

    async def run(self, command: Command) -> Result:
        return await self.exchange.submit(command)

    async def ok(self, command: Command) -> Result:
        result = await self.exchange.submit(command)
        assert not isinstance(result, Rejection), (command, result)
        return result

    async def account(self, name: str, cash: int = 0, role: str = "trader") -> int:
        done = await self.ok(CreateAccount(name, role))
        if cash:
            await self.ok(Deposit(done.id, cash))
        return done.id

    def balance(self, account: int, asset: str = CASH) -> tuple[int, int]:
        """(available, held) in the engine's memory."""
        ledger = self.exchange.engine.ledger
        return ledger.available(account, asset), ledger.held(account, asset)


async def build_market(exchange: Sequencer) -> Market:
    # Submitted together, each group is one batch (one commit), applied in the order given.
    accounts = await exchange_all(exchange, [
        CreateAccount("admin", "admin"), CreateAccount("issuer", "issuer"), CreateAccount("alice", "trader"),
        CreateAccount("bob", "trader"), CreateAccount("rival", "issuer"),
    ])
    market = Market(exchange, *(done.id for done in accounts))
    await exchange_all(exchange, [
        ListInstrument(COMPUTE, "compute", tick=TICK, min_qty=1, max_qty=1_000, model="deepseek-v3",
                       substitution_group="chat-general", quality=90, tokens_per_lot=1_000_000),
        ListInstrument(DATASET, "dataset", tick=1, min_qty=2, max_qty=50, issuer_id=market.issuer,
                       description="Steel plant QC images", license="research only", grants="1,000 records",
                       supply_cap=100),
        ApproveIssuer(market.issuer, COMPUTE, 10_000),
        ApproveIssuer(market.issuer, DATASET, 1_000),
        Mint(market.issuer, COMPUTE, 5_000),
        Mint(market.issuer, DATASET, 50),
        *(Deposit(account, DEPOSIT) for account in (market.issuer, market.alice, market.bob)),
    ])
    return market


async def exchange_all(exchange: Sequencer, commands: list[Command]) -> list[Result]:
    """Submit ``commands`` together, in order; every one must succeed."""
    results = await asyncio.gather(*(exchange.submit(command) for command in commands))
    for command, result in zip(commands, results, strict=True):
        assert not isinstance(result, Rejection), (command, result)
    return results


@pytest.fixture
async def market(exchange: Sequencer) -> Market:
    return await build_market(exchange)


async def make_busy(market: Market) -> Market:
    """Rest an ask and a bid, fill 4 of the bid, and offer 3 of those 4 tokens again, post-only."""
    ask, bid, taken, offer = await exchange_all(market.exchange, [
        PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=10),
        PlaceOrder(market.alice, COMPUTE, "buy", price=BID, qty=10),
        PlaceOrder(market.issuer, COMPUTE, "sell", price=BID, qty=4),
        PlaceOrder(market.alice, COMPUTE, "sell", price=ASK + 5 * TICK, qty=3, post_only=True),
    ])
    assert taken.status == "filled"
    market.ask, market.bid, market.offer = ask.id, bid.id, offer.id
    return market


@pytest.fixture
async def busy(market: Market) -> Market:
    return await make_busy(market)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unchanged(module_exchange: Sequencer) -> Market:
    """A busy market shared by the tests that change nothing (each asserts so)."""
    return await make_busy(await build_market(module_exchange))


# Snapshots


def engine_state(engine: Engine) -> dict:
    """Everything in the engine's memory that a command could change."""
    return {
        # Ids.entry only seeds the ledger, which counts entries itself from then on.
        "ids": {name: value for name, value in dataclasses.asdict(engine.ids).items() if name != "entry"},
        "next entry": engine.ledger.next_entry_id,
        "balances": {key: tuple(value) for key, value in engine.ledger.balances.items()},
        "accounts": sorted(engine.accounts),
        "instruments": {s: (i.status, i.seq, i.issued) for s, i in engine.instruments.items()},
        "books": {s: i.book.resting_orders() for s, i in engine.instruments.items()},
        "open orders": {i: msgspec.structs.astuple(o) for i, o in engine.orders.items() if o.status == "open"},
        "open by account": {a: set(ids) for a, ids in engine.open_by_account.items() if ids},
        "approvals": {key: (a.capacity, a.issued) for key, a in engine.approvals.items()},
        "client orders": dict(engine.client_orders),
    }


async def database_state(pool: asyncpg.Pool) -> dict:
    async with pool.acquire() as conn:
        state = {
            "balances": sorted(map(tuple, await conn.fetch("SELECT account_id, asset, available, held FROM balance"))),
            "orders": list(map(tuple, await conn.fetch("SELECT * FROM book_order ORDER BY id"))),
            "instruments": list(map(tuple, await conn.fetch("SELECT * FROM instrument ORDER BY id"))),
            "instrument seqs": list(map(tuple, await conn.fetch("SELECT * FROM instrument_seq ORDER BY 1"))),
            "approvals": sorted(map(tuple, await conn.fetch("SELECT * FROM issuer_approval"))),
        }
        for table in ("account", "journal_entry", "posting", "fill", "redemption"):
            state[f"{table} rows"] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return state


async def snapshot(exchange: Sequencer) -> tuple[dict, dict]:
    return await database_state(exchange.pool), engine_state(exchange.engine)


async def assert_refused(market: Market, command: Command, code: str) -> None:
    """``command`` is answered with ``code`` and changes nothing, in the database or in memory."""
    before = await snapshot(market.exchange)
    result = await market.run(command)
    # A withdrawal has no order and no fee to speak of.
    message = WITHDRAWAL_NOT_COVERED if isinstance(command, Withdraw) and code == "insufficient_funds" else \
        MESSAGES[code]
    assert result == Rejection(code, message), command
    assert await snapshot(market.exchange) == before, command
    async with market.exchange.pool.acquire() as conn:
        assert await invariants.problems(conn, market.exchange.engine) == []


async def order_row(market: Market, order_id: int):
    async with market.exchange.pool.acquire() as conn:
        return await store.order_row(conn, order_id)


async def hold_posted(market: Market, order_id: int) -> int:
    """What was moved into held for ``order_id`` (its hold entries, excluding releases)."""
    async with market.exchange.pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT coalesce(sum(p.amount), 0) FROM posting p JOIN journal_entry e ON e.id = p.entry_id "
            "WHERE e.kind = 'hold' AND e.order_id = $1 AND p.bucket = 'held'", order_id)


# Refusals: each case is (command made from the market, expected code).

REFUSALS: dict[str, tuple[Callable[[Market], Command], str]] = {
    # Unknown accounts and instruments.
    "deposit to an unknown account": (lambda m: Deposit(NOBODY, 1), "unknown_account"),
    "withdraw from an unknown account": (lambda m: Withdraw(NOBODY, 1), "unknown_account"),
    "mint by an unknown account": (lambda m: Mint(NOBODY, COMPUTE, 1), "unknown_account"),
    "burn by an unknown account": (lambda m: Burn(NOBODY, COMPUTE, 1), "unknown_account"),
    "redeem by an unknown account": (lambda m: Redeem(NOBODY, COMPUTE, 1), "unknown_account"),
    "order by an unknown account": (lambda m: PlaceOrder(NOBODY, COMPUTE, "buy", price=BID, qty=1),
                                    "unknown_account"),
    "approve an unknown account": (lambda m: ApproveIssuer(NOBODY, COMPUTE, 1), "unknown_account"),
    "cancel by an unknown account": (lambda m: CancelOrder(NOBODY, m.bid), "unknown_order"),
    "amend by an unknown account": (lambda m: AmendOrder(NOBODY, m.bid, qty=8), "unknown_order"),
    "mint an unknown instrument": (lambda m: Mint(m.issuer, "NOPE", 1), "unknown_instrument"),
    "burn an unknown instrument": (lambda m: Burn(m.issuer, "NOPE", 1), "unknown_instrument"),
    "redeem an unknown instrument": (lambda m: Redeem(m.alice, "NOPE", 1), "unknown_instrument"),
    "order an unknown instrument": (lambda m: PlaceOrder(m.alice, "NOPE", "buy", price=BID, qty=1),
                                    "unknown_instrument"),
    "approve for an unknown instrument": (lambda m: ApproveIssuer(m.issuer, "NOPE", 1), "unknown_instrument"),
    "cancel all of an unknown instrument": (lambda m: CancelAll(m.alice, "NOPE"), "unknown_instrument"),
    "halt an unknown instrument": (lambda m: SetInstrumentStatus("NOPE", "halted"), "unknown_instrument"),
    # Roles and approvals.
    "admin places an order": (lambda m: PlaceOrder(m.admin, COMPUTE, "buy", price=BID, qty=1), "not_permitted"),
    "trader mints": (lambda m: Mint(m.alice, COMPUTE, 1), "not_permitted"),
    "trader burns": (lambda m: Burn(m.alice, COMPUTE, 1), "not_permitted"),
    "unapproved issuer mints": (lambda m: Mint(m.rival, COMPUTE, 1), "not_approved"),
    "approve a trader as issuer": (lambda m: ApproveIssuer(m.alice, COMPUTE, 10), "not_permitted"),
    "approve another issuer for a dataset": (lambda m: ApproveIssuer(m.rival, DATASET, 10), "not_permitted"),
    "approve a negative capacity": (lambda m: ApproveIssuer(m.rival, COMPUTE, -1), "invalid_qty"),
    "capacity below what is minted": (lambda m: ApproveIssuer(m.issuer, COMPUTE, 4_999), "capacity_below_issued"),
    # Minting, burning, redeeming.
    "mint over capacity": (lambda m: Mint(m.issuer, COMPUTE, 5_001), "over_capacity"),
    "mint over the supply cap": (lambda m: Mint(m.issuer, DATASET, 51), "over_supply_cap"),
    "mint nothing": (lambda m: Mint(m.issuer, COMPUTE, 0), "invalid_qty"),
    "burn more than held": (lambda m: Burn(m.issuer, COMPUTE, 4_987), "insufficient_tokens"),
    "burn nothing": (lambda m: Burn(m.issuer, COMPUTE, 0), "invalid_qty"),
    "redeem more than held": (lambda m: Redeem(m.alice, COMPUTE, 5), "insufficient_tokens"),
    "redeem tokens an open sell holds": (lambda m: Redeem(m.issuer, COMPUTE, 4_987), "insufficient_tokens"),
    "redeem a negative qty": (lambda m: Redeem(m.alice, COMPUTE, -1), "invalid_qty"),
    # Cash.
    "deposit nothing": (lambda m: Deposit(m.alice, 0), "invalid_amount"),
    "deposit a negative amount": (lambda m: Deposit(m.alice, -5), "invalid_amount"),
    "deposit a float": (lambda m: Deposit(m.alice, 1.5), "invalid_amount"),
    "deposit a bool": (lambda m: Deposit(m.alice, True), "invalid_amount"),
    "withdraw more than available": (lambda m: Withdraw(m.bob, DEPOSIT + 1), "insufficient_funds"),
    "withdraw cash an open buy holds": (lambda m: Withdraw(m.alice, m.balance(m.alice)[0] + 1),
                                        "insufficient_funds"),
    "withdraw nothing": (lambda m: Withdraw(m.alice, 0), "invalid_amount"),
    # Orders.
    "buy limit beyond funds": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=1_000),
                               "insufficient_funds"),
    "market buy beyond funds": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", qty=600),
                                "insufficient_funds"),
    "budget beyond funds": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", budget=DEPOSIT + 1),
                            "insufficient_funds"),
    "sell beyond tokens": (lambda m: PlaceOrder(m.alice, COMPUTE, "sell", price=ASK, qty=5), "insufficient_tokens"),
    "market sell beyond tokens": (lambda m: PlaceOrder(m.alice, COMPUTE, "sell", "market", qty=5),
                                  "insufficient_tokens"),
    "off-tick price": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID + 1, qty=1), "off_tick_price"),
    "zero price": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=0, qty=1), "invalid_price"),
    "limit without a price": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", qty=1), "invalid_price"),
    "market with a price": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", price=ASK, qty=1),
                            "invalid_price"),
    "qty below minimum": (lambda m: PlaceOrder(m.issuer, DATASET, "sell", price=500, qty=1), "qty_below_minimum"),
    "qty above maximum": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=1_001), "qty_above_maximum"),
    "market qty above maximum": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", qty=1_001),
                                 "qty_above_maximum"),
    "zero qty": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=0), "invalid_qty"),
    "market without qty or budget": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market"), "invalid_qty"),
    "post-only that would take": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=ASK, qty=1, post_only=True),
                                  "would_take"),
    "post-only IOC": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=1, tif="IOC", post_only=True),
                      "post_only_requires_gtc"),
    "unknown time in force": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=1, tif="DAY"),
                              "invalid_time_in_force"),
    "market FOK": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", qty=1, tif="FOK"),
                   "invalid_time_in_force"),
    "market post-only": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", qty=1, post_only=True),
                         "invalid_time_in_force"),
    "unknown stp mode": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=1, stp="none"),
                         "invalid_stp_mode"),
    "budget order with decrement": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", budget=ASK,
                                                         stp="decrement"), "invalid_stp_mode"),
    "unknown side": (lambda m: PlaceOrder(m.bob, COMPUTE, "BUY", price=BID, qty=1), "invalid_side"),
    "unknown order type": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "stop", price=BID, qty=1),
                           "invalid_order_type"),
    "limit with a budget": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", price=BID, budget=ASK),
                            "invalid_budget"),
    "market sell by budget": (lambda m: PlaceOrder(m.issuer, COMPUTE, "sell", "market", budget=ASK),
                              "invalid_budget"),
    "zero budget": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", budget=0), "invalid_budget"),
    "budget and qty": (lambda m: PlaceOrder(m.bob, COMPUTE, "buy", "market", qty=1, budget=ASK), "invalid_budget"),
    # Cancels and amendments.
    "cancel another account's order": (lambda m: CancelOrder(m.bob, m.bid), "unknown_order"),
    "cancel an order that never existed": (lambda m: CancelOrder(m.bob, 12_345), "unknown_order"),
    "cancel a filled order": (lambda m: CancelOrder(m.issuer, m.bid + 1), "unknown_order"),
    "amend another account's order": (lambda m: AmendOrder(m.bob, m.bid, qty=8), "unknown_order"),
    "amend to the filled qty": (lambda m: AmendOrder(m.alice, m.bid, qty=4), "qty_not_above_filled"),
    "amend below the filled qty": (lambda m: AmendOrder(m.alice, m.bid, qty=3), "qty_not_above_filled"),
    "amend to an off-tick price": (lambda m: AmendOrder(m.alice, m.bid, price=BID + 5), "off_tick_price"),
    "amend to a zero qty": (lambda m: AmendOrder(m.alice, m.bid, qty=0), "invalid_qty"),
    "amend above maximum": (lambda m: AmendOrder(m.alice, m.bid, qty=1_001), "qty_above_maximum"),
    "amend beyond funds": (lambda m: AmendOrder(m.alice, m.bid, qty=600), "insufficient_funds"),
    "amend a sell beyond tokens": (lambda m: AmendOrder(m.alice, m.offer, qty=5), "insufficient_tokens"),
    "amend a post-only order to take": (lambda m: AmendOrder(m.alice, m.offer, price=BID), "would_take"),
    "amend that changes nothing": (lambda m: AmendOrder(m.alice, m.bid, price=BID, qty=10), "no_change"),
    # Accounts and listings.
    "account name taken": (lambda m: CreateAccount("alice", "trader"), "name_taken"),
    "system account name": (lambda m: CreateAccount("system:fees", "trader"), "name_taken"),
    "unknown role": (lambda m: CreateAccount("mallory", "root"), "invalid_role"),
    "symbol taken": (lambda m: ListInstrument(COMPUTE, "compute", tick=TICK, model="m", substitution_group="g",
                                              quality=1, tokens_per_lot=1), "symbol_taken"),
    "cash as a symbol": (lambda m: ListInstrument("CNY", "compute", tick=TICK, model="m", substitution_group="g",
                                                  quality=1, tokens_per_lot=1), "invalid_instrument"),
    "compute without a model": (lambda m: ListInstrument("QWEN", "compute", tick=TICK, substitution_group="g",
                                                         quality=1, tokens_per_lot=1), "invalid_instrument"),
    "compute quality above 100": (lambda m: ListInstrument("QWEN", "compute", tick=TICK, model="m",
                                                           substitution_group="g", quality=101, tokens_per_lot=1),
                                  "invalid_instrument"),
    "zero tick": (lambda m: ListInstrument("QWEN", "compute", tick=0, model="m", substitution_group="g", quality=1,
                                           tokens_per_lot=1), "invalid_instrument"),
    "min qty above max qty": (lambda m: ListInstrument("QWEN", "compute", tick=TICK, min_qty=5, max_qty=4,
                                                       model="m", substitution_group="g", quality=1,
                                                       tokens_per_lot=1), "invalid_instrument"),
    "dataset issued by a trader": (lambda m: ListInstrument("DS-X", "dataset", tick=1, issuer_id=m.alice,
                                                            supply_cap=10), "invalid_instrument"),
    "dataset without a supply cap": (lambda m: ListInstrument("DS-X", "dataset", tick=1, issuer_id=m.issuer),
                                     "invalid_instrument"),
    "unknown status": (lambda m: SetInstrumentStatus(COMPUTE, "paused"), "invalid_status"),
}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_bad_command_is_refused_with_its_code_and_changes_nothing(unchanged: Market, case: str) -> None:
    make, code = REFUSALS[case]
    await assert_refused(unchanged, make(unchanged), code)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_busy_market_is_what_the_refusals_assume(unchanged: Market) -> None:
    busy = unchanged
    assert busy.balance(busy.alice, COMPUTE) == (1, 3)
    assert busy.balance(busy.issuer, COMPUTE) == (5_000 - 10 - 4, 10)
    bid = busy.exchange.engine.view(busy.bid)
    assert (bid.status, bid.filled_qty, bid.open_qty) == ("open", 4, 6)
    assert busy.exchange.engine.view(busy.bid + 1) == Done(busy.bid + 1)


@pytest.mark.asyncio(loop_scope="module")
async def test_cancel_all_from_an_unknown_account_is_refused(unchanged: Market) -> None:
    await assert_refused(unchanged, CancelAll(NOBODY, COMPUTE), "unknown_account")


@pytest.mark.asyncio(loop_scope="module")
async def test_cancelling_another_accounts_order_looks_exactly_like_a_missing_order(unchanged: Market) -> None:
    busy = unchanged
    theirs = await busy.run(CancelOrder(busy.bob, busy.bid))
    missing = await busy.run(CancelOrder(busy.bob, 10**9))
    assert theirs == missing == Rejection("unknown_order", MESSAGES["unknown_order"])
    assert busy.exchange.engine.view(busy.bid).status == "open"


async def test_a_halted_instrument_refuses_orders_and_amends_but_accepts_cancels(busy: Market) -> None:
    await busy.ok(SetInstrumentStatus(COMPUTE, "halted"))
    await assert_refused(busy, PlaceOrder(busy.bob, COMPUTE, "buy", price=BID, qty=1), "instrument_halted")
    await assert_refused(busy, PlaceOrder(busy.bob, COMPUTE, "buy", "market", budget=ASK), "instrument_halted")
    await assert_refused(busy, AmendOrder(busy.alice, busy.bid, qty=8), "instrument_halted")
    # The other instrument still trades.
    await busy.ok(PlaceOrder(busy.issuer, DATASET, "sell", price=500, qty=2))

    cancelled = await busy.ok(CancelOrder(busy.alice, busy.bid))
    assert (cancelled.status, cancelled.reason) == ("cancelled", "by_request")
    assert busy.balance(busy.alice) == (DEPOSIT - 4 * BID - fees.fee_on(4 * BID, MAKER_PPM), 0)
    assert await busy.ok(CancelAll(busy.issuer, COMPUTE)) == Cancelled([busy.ask])
    assert busy.balance(busy.issuer, COMPUTE) == (5_000 - 4, 0)

    await busy.ok(SetInstrumentStatus(COMPUTE, "trading"))
    assert (await busy.ok(PlaceOrder(busy.bob, COMPUTE, "buy", price=BID, qty=1))).status == "open"


# Replays


async def test_a_replayed_client_order_id_returns_the_original_order_and_changes_nothing(market: Market) -> None:
    original = await market.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-1"))
    assert isinstance(original, OrderView) and original.status == "open"
    before = await snapshot(market.exchange)
    # Whatever else the replay says, the original order is the answer.
    replay = await market.run(PlaceOrder(market.bob, COMPUTE, "sell", price=ASK, qty=7, client_order_id="b-1"))
    assert replay == original
    assert await snapshot(market.exchange) == before

    # Another account may use the same client order id.
    other = await market.ok(PlaceOrder(market.alice, COMPUTE, "buy", price=BID, qty=2, client_order_id="b-1"))
    assert other.id != original.id


async def test_a_replay_of_a_closed_order_answers_done_with_its_id(market: Market) -> None:
    placed = await market.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-2"))
    await market.ok(CancelOrder(market.bob, placed.id))
    expired = await market.ok(PlaceOrder(market.bob, COMPUTE, "buy", "market", qty=1, client_order_id="b-3"))
    assert expired.status == "expired"
    before = await snapshot(market.exchange)
    assert await market.run(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-2")
                            ) == Done(placed.id)
    assert await market.run(PlaceOrder(market.bob, COMPUTE, "buy", "market", qty=1, client_order_id="b-3")
                            ) == Done(expired.id)
    assert await snapshot(market.exchange) == before


async def test_a_replay_is_answered_even_while_the_instrument_is_halted(market: Market) -> None:
    placed = await market.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-4"))
    await market.ok(SetInstrumentStatus(COMPUTE, "halted"))
    before = await snapshot(market.exchange)
    assert await market.run(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-4")
                            ) == placed
    assert await snapshot(market.exchange) == before


# Holds


async def test_a_buy_limit_holds_notional_plus_max_fee_plus_one_and_a_cancel_releases_it_all(
        market: Market) -> None:
    hold = BID * 10 + fees.fee_on(BID * 10, MAX_PPM) + 1
    assert hold == fees.buy_hold(10, BID, MAX_PPM)
    carol = await market.account("carol", hold)
    placed = await market.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=10))
    assert market.balance(carol) == (0, hold)
    assert (await order_row(market, placed.id)).held == hold

    await market.ok(CancelOrder(carol, placed.id))
    assert market.balance(carol) == (hold, 0)
    assert (await order_row(market, placed.id)).held == 0


async def test_a_buy_limit_one_micro_yuan_short_of_its_hold_is_refused(market: Market) -> None:
    hold = fees.buy_hold(10, BID, MAX_PPM)
    carol = await market.account("carol", hold - 1)
    await assert_refused(market, PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=10), "insufficient_funds")
    await market.ok(Deposit(carol, 1))
    assert (await market.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=10))).status == "open"


async def test_a_sell_holds_exactly_its_qty_in_tokens(market: Market) -> None:
    placed = await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=25))
    assert market.balance(market.issuer, COMPUTE) == (5_000 - 25, 25)
    await market.ok(AmendOrder(market.issuer, placed.id, qty=20))
    assert market.balance(market.issuer, COMPUTE) == (5_000 - 20, 20)
    await market.ok(CancelOrder(market.issuer, placed.id))
    assert market.balance(market.issuer, COMPUTE) == (5_000, 0)


async def test_amending_a_buy_holds_exactly_what_the_new_open_qty_needs(market: Market) -> None:
    carol = await market.account("carol", DEPOSIT)
    placed = await market.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=10))
    await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=BID, qty=3))
    spent = 3 * BID + fees.fee_on(3 * BID, MAKER_PPM)
    held_now = fees.buy_hold(10, BID, MAX_PPM) - spent
    assert market.balance(carol) == (DEPOSIT - fees.buy_hold(10, BID, MAX_PPM), held_now)

    # Open 7 → 17 at a higher price: held becomes the hold for 17 at that price.
    await market.ok(AmendOrder(carol, placed.id, price=BID + TICK, qty=20))
    assert market.balance(carol) == (DEPOSIT - spent - fees.buy_hold(17, BID + TICK, MAX_PPM),
                                     fees.buy_hold(17, BID + TICK, MAX_PPM))
    await market.ok(AmendOrder(carol, placed.id, qty=5))
    assert market.balance(carol) == (DEPOSIT - spent - fees.buy_hold(2, BID + TICK, MAX_PPM),
                                     fees.buy_hold(2, BID + TICK, MAX_PPM))


async def test_a_fully_filled_buy_leaves_nothing_held_and_pays_notional_plus_its_fee(market: Market) -> None:
    carol = await market.account("carol", DEPOSIT)
    await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=4))
    await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK + TICK, qty=6))
    bought = await market.ok(PlaceOrder(carol, COMPUTE, "buy", price=ASK + 2 * TICK, qty=10))
    notional = 4 * ASK + 6 * (ASK + TICK)
    assert (bought.status, bought.open_qty, bought.filled_qty, bought.filled_notional) == ("filled", 0, 10, notional)
    assert bought.fee == fees.fee_on(notional, TAKER_PPM)
    assert market.balance(carol) == (DEPOSIT - notional - bought.fee, 0)
    assert market.balance(carol, COMPUTE) == (10, 0)
    assert (await order_row(market, bought.id)).held == 0


async def test_an_amended_buy_that_crosses_trades_at_the_resting_price_and_holds_exactly(market: Market) -> None:
    carol = await market.account("carol", DEPOSIT)
    placed = await market.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=5))
    await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=3))
    amended = await market.ok(AmendOrder(carol, placed.id, price=ASK + 2 * TICK))
    fee = fees.fee_on(3 * ASK, TAKER_PPM)
    assert [(f.price, f.qty, f.fee, f.role) for f in amended.fills] == [(ASK, 3, fee, "taker")]
    assert (amended.status, amended.open_qty, amended.filled_qty) == ("open", 2, 3)
    needed = fees.buy_hold(5, ASK + 2 * TICK, MAX_PPM)
    assert market.balance(carol) == (DEPOSIT - needed, needed - 3 * ASK - fee)
    await market.ok(CancelOrder(carol, placed.id))
    assert market.balance(carol) == (DEPOSIT - 3 * ASK - fee, 0)


async def test_lowering_qty_keeps_time_priority_and_raising_or_repricing_loses_it(market: Market) -> None:
    book = market.exchange.engine.instruments[COMPUTE].book
    first = (await market.ok(PlaceOrder(market.alice, COMPUTE, "buy", price=BID, qty=5))).id
    second = (await market.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=5))).id

    def queue() -> list[int]:
        return [o.order_id for o in book.orders_at("buy", BID)]

    priority = (await order_row(market, first)).priority
    await market.ok(AmendOrder(market.alice, first, qty=3))
    assert queue() == [first, second]
    assert (await order_row(market, first)).priority == priority
    await market.ok(AmendOrder(market.alice, first, qty=6))
    assert queue() == [second, first]
    assert (await order_row(market, first)).priority > (await order_row(market, second)).priority
    await market.ok(AmendOrder(market.bob, second, price=BID - TICK))
    await market.ok(AmendOrder(market.bob, second, price=BID))
    assert queue() == [first, second]
    sold = await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=BID, qty=7))
    assert [f.qty for f in sold.fills] == [6, 1]
    assert market.exchange.engine.view(first) == Done(first)


# Fees, prices


async def test_fees_go_to_the_fee_account_and_round_up(market: Market) -> None:
    # DATASET has tick 1: 5 lots at 333 is 1,665 micro-yuan; 0.2 % is 3.33 and 0.1 % is 1.665.
    carol = await market.account("carol", DEPOSIT)
    maker = await market.ok(PlaceOrder(market.issuer, DATASET, "sell", price=333, qty=5))
    taker = await market.ok(PlaceOrder(carol, DATASET, "buy", price=333, qty=5))
    assert [(f.fee, f.role) for f in taker.fills] == [(4, "taker")]
    assert market.exchange.engine.view(maker.id) == Done(maker.id)
    assert (await order_row(market, maker.id)).fee == 2
    assert market.balance(FEES) == (6, 0)
    assert market.balance(carol) == (DEPOSIT - 1_665 - 4, 0)
    assert market.balance(market.issuer) == (DEPOSIT + 1_665 - 2, 0)
    async with market.exchange.pool.acquire() as conn:
        assert tuple(await conn.fetchrow("SELECT maker_fee, taker_fee FROM fill")) == (2, 4)
        assert await conn.fetchval("SELECT available FROM balance WHERE account_id = $1 AND asset = $2",
                                   FEES, CASH) == 6


async def test_an_orders_fee_rounds_once_over_all_its_fills(market: Market) -> None:
    carol = await market.account("carol", DEPOSIT)
    for qty in (2, 2, 3):
        await market.ok(PlaceOrder(market.issuer, DATASET, "sell", price=101, qty=qty))
    taker = await market.ok(PlaceOrder(carol, DATASET, "buy", price=101, qty=7))
    assert [f.qty for f in taker.fills] == [2, 2, 3]
    # Per fill: ceil(0.404) + ceil(0.404) + ceil(0.606) = 3; per order: ceil(707 x 0.002) = ceil(1.414) = 2.
    assert taker.fee == sum(f.fee for f in taker.fills) == fees.fee_on(707, TAKER_PPM) == 2
    assert market.balance(FEES)[0] == 2 + 3 * 1  # and each maker pays at least one micro-yuan


async def test_trades_execute_at_the_resting_orders_price(market: Market) -> None:
    carol = await market.account("carol", DEPOSIT)
    await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=5))
    bought = await market.ok(PlaceOrder(carol, COMPUTE, "buy", price=ASK + 20 * TICK, qty=5))
    assert [(f.price, f.qty) for f in bought.fills] == [(ASK, 5)]
    assert market.balance(carol) == (DEPOSIT - 5 * ASK - fees.fee_on(5 * ASK, TAKER_PPM), 0)

    await market.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=5))
    sold = await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=BID - 20 * TICK, qty=5))
    assert [(f.price, f.qty) for f in sold.fills] == [(BID, 5)]
    async with market.exchange.pool.acquire() as conn:
        assert [r["price"] for r in await conn.fetch("SELECT price FROM fill ORDER BY id")] == [ASK, BID]


async def test_a_market_buy_by_qty_never_spends_more_than_it_held(market: Market) -> None:
    carol = await market.account("carol", DEPOSIT)
    for price in (ASK, ASK + TICK, ASK + 2 * TICK):
        await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=3))
    bought = await market.ok(PlaceOrder(carol, COMPUTE, "buy", "market", qty=5))
    held = await hold_posted(market, bought.id)
    assert held == fees.buy_hold(5, ASK + TICK, MAX_PPM)
    spent = bought.filled_notional + bought.fee
    assert (bought.status, bought.filled_qty) == ("filled", 5)
    assert spent == 3 * ASK + 2 * (ASK + TICK) + fees.fee_on(3 * ASK + 2 * (ASK + TICK), TAKER_PPM) <= held
    assert market.balance(carol) == (DEPOSIT - spent, 0)

    # More than the book holds: fills what is there, expires the rest, still within its hold.
    rest = await market.ok(PlaceOrder(carol, COMPUTE, "buy", "market", qty=50))
    assert (rest.status, rest.filled_qty, rest.open_qty) == ("expired", 4, 0)
    assert rest.filled_notional + rest.fee <= await hold_posted(market, rest.id)
    assert market.balance(carol) == (DEPOSIT - spent - rest.filled_notional - rest.fee, 0)


async def test_a_market_buy_on_an_empty_book_expires_without_holding(market: Market) -> None:
    carol = await market.account("carol")
    expired = await market.ok(PlaceOrder(carol, COMPUTE, "buy", "market", qty=5))
    assert (expired.status, expired.filled_qty) == ("expired", 0)
    assert market.balance(carol) == (0, 0)


async def test_a_budget_order_never_spends_more_than_its_budget_including_the_fee(market: Market) -> None:
    for price in (ASK, ASK + 10 * TICK):
        await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=3))
    two_lots = 2 * ASK + fees.fee_on(2 * ASK, TAKER_PPM)
    carol = await market.account("carol", DEPOSIT)
    # Exactly enough for two lots and their fee buys two; one micro-yuan less buys one.
    exact = await market.ok(PlaceOrder(carol, COMPUTE, "buy", "market", budget=two_lots))
    assert (exact.status, exact.filled_qty, exact.filled_notional + exact.fee) == ("filled", 2, two_lots)
    short = await market.ok(PlaceOrder(carol, COMPUTE, "buy", "market", budget=two_lots - 1))
    assert (short.filled_qty, short.filled_notional, short.fee) == (1, ASK, fees.fee_on(ASK, TAKER_PPM))
    assert market.balance(carol) == (DEPOSIT - two_lots - short.filled_notional - short.fee, 0)

    # A large budget walks the book and stops when the rest cannot buy a lot; the rest is released.
    big = await market.ok(PlaceOrder(carol, COMPUTE, "buy", "market", budget=5 * ASK))
    spent = big.filled_notional + big.fee
    assert big.filled_qty == 3 and spent <= 5 * ASK
    assert await hold_posted(market, big.id) == 5 * ASK
    assert market.balance(carol)[1] == 0


async def test_a_budget_that_cannot_cover_its_fee_is_refused_and_a_small_one_expires(market: Market) -> None:
    await market.ok(PlaceOrder(market.issuer, DATASET, "sell", price=100, qty=5))
    larger = await market.ok(PlaceOrder(market.bob, DATASET, "buy", "market", budget=50))
    assert (larger.status, larger.filled_qty) == ("expired", 0)
    # 0.2 % of 1 micro-yuan rounds up to a whole micro-yuan: no notional fits beside the fee.
    assert fees.budget_for_notional(1, TAKER_PPM) == 0
    smallest = await market.run(PlaceOrder(market.bob, DATASET, "buy", "market", budget=1))
    assert smallest == Rejection("budget_too_small", MESSAGES["budget_too_small"])
    assert market.balance(market.bob) == (DEPOSIT, 0)


async def test_the_fee_tier_drops_after_a_million_yuan_of_30_day_volume(market: Market) -> None:
    price = 1_000 * fees.MICRO  # 1,000 CNY a lot: 1,000 lots make the first tier
    whale = await market.account("whale", 2_000_000 * fees.MICRO)
    await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=999))
    await market.ok(PlaceOrder(whale, COMPUTE, "buy", price=price, qty=999))
    below = await market.ok(PlaceOrder(whale, COMPUTE, "buy", price=TICK, qty=1))
    row = await order_row(market, below.id)
    assert (row.maker_fee_ppm, row.taker_fee_ppm) == (MAKER_PPM, TAKER_PPM)

    await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=1))
    await market.ok(PlaceOrder(whale, COMPUTE, "buy", price=price, qty=1))
    # Both sides of the trades reached 1,000,000 CNY: 80 % of the base rates from now on.
    maker = await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=10))
    taker = await market.ok(PlaceOrder(whale, COMPUTE, "buy", price=ASK, qty=10))
    assert (await order_row(market, maker.id)).maker_fee_ppm == MAKER_PPM * 80 // 100
    assert (await order_row(market, taker.id)).taker_fee_ppm == TAKER_PPM * 80 // 100
    assert taker.fee == fees.fee_on(10 * ASK, 1_600)
    assert (await order_row(market, maker.id)).fee == fees.fee_on(10 * ASK, 800)
    # An account that has not traded keeps the base rate.
    carol = await market.account("carol", DEPOSIT)
    small = await market.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=1))
    assert (await order_row(market, small.id)).taker_fee_ppm == TAKER_PPM


# Restart


async def test_a_restart_rebuilds_identical_state_and_sequence_numbers_continue(pool: asyncpg.Pool) -> None:
    published: list[tuple[str, list]] = []
    first = await Sequencer.open(pool, publish=lambda events, fill_ids: published.extend(events))
    m = await build_market(first)
    carol = await m.account("carol", DEPOSIT)
    await m.ok(PlaceOrder(m.issuer, COMPUTE, "sell", price=ASK, qty=10))
    await m.ok(PlaceOrder(m.issuer, COMPUTE, "sell", price=ASK, qty=5, client_order_id="i-1"))
    await m.ok(PlaceOrder(m.issuer, COMPUTE, "sell", price=ASK + TICK, qty=7, post_only=True))
    amended = await m.ok(PlaceOrder(m.alice, COMPUTE, "buy", price=BID, qty=10, client_order_id="a-1"))
    await m.ok(PlaceOrder(m.bob, COMPUTE, "buy", price=BID, qty=3))
    await m.ok(AmendOrder(m.alice, amended.id, qty=12))  # to the back of its level
    await m.ok(PlaceOrder(carol, COMPUTE, "buy", price=ASK, qty=12))  # takes 12 of the 15 at ASK
    await m.ok(PlaceOrder(m.issuer, DATASET, "sell", price=777, qty=6, stp="decrement"))
    await m.ok(PlaceOrder(carol, DATASET, "buy", "market", budget=2_000))
    gone = await m.ok(PlaceOrder(m.bob, DATASET, "buy", price=700, qty=4))
    await m.ok(CancelOrder(m.bob, gone.id))
    await m.ok(Redeem(carol, COMPUTE, 2))
    await m.ok(Burn(m.issuer, DATASET, 10))
    await m.ok(Withdraw(carol, 1_000))
    await m.ok(SetInstrumentStatus(DATASET, "halted"))
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
        m.exchange = second
        placed = await m.ok(PlaceOrder(m.bob, COMPUTE, "buy", price=BID - TICK, qty=1))
        assert placed.id == live["ids"]["order"]
        assert published[0][1][0].seq == live_seq[COMPUTE] + 1
        assert (await order_row(m, placed.id)).priority == live_seq[COMPUTE] + 1
        filled = await m.ok(PlaceOrder(m.bob, COMPUTE, "buy", price=ASK, qty=1))
        assert filled.fills[0].fill_id == live["ids"]["fill"]
        assert await m.run(PlaceOrder(m.alice, COMPUTE, "sell", price=ASK, qty=1, client_order_id="a-1")
                           ) == second.engine.view(amended.id)
        await m.ok(SetInstrumentStatus(DATASET, "trading"))
        await m.ok(CancelAll(m.issuer, DATASET))
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
    market = await build_market(first)
    price = 1_000 * fees.MICRO
    whale = await market.account("whale", 2_000_000 * fees.MICRO)
    await market.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=1_000))
    await market.ok(PlaceOrder(whale, COMPUTE, "buy", price=price, qty=1_000))
    await first.stop()

    second = await Sequencer.open(pool)
    try:
        market.exchange = second
        placed = await market.ok(PlaceOrder(whale, COMPUTE, "buy", price=BID, qty=1))
        assert (await order_row(market, placed.id)).taker_fee_ppm == TAKER_PPM * 80 // 100
    finally:
        await second.stop()
    async with pool.acquire() as conn:
        assert await invariants.problems(conn, second.engine) == []
