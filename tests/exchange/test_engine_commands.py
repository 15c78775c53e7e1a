"""The engine's commands, applied in memory (``tests.support.engine.Desk``): every invariant of the ledger and the
books is checked after each command.

Refusals: every bad command answers its stable code, changes nothing in the engine's memory and leaves nothing to
commit. Behaviour: replays, holds, fees, prices and tiers. What the sequencer commits and what a restart rebuilds
from it are in ``test_persistence.py`` and ``test_recovery.py``.
"""

from collections.abc import Callable

import pytest

from exchange import fees
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
    SetInstrumentStatus,
    Withdraw,
)
from exchange.ledger import FEES
from exchange.rejections import MESSAGES
from exchange.settlement import Effects
from tests.support.engine import (
    ASK,
    BID,
    COMPUTE,
    DATASET,
    DEPOSIT,
    FILL_MAKER_FEE,
    FILL_PRICE,
    FILL_TAKER_FEE,
    MAKER_PPM,
    MAX_PPM,
    NOBODY,
    TAKER_PPM,
    TICK,
    Desk,
    Market,
    engine_state,
    make_busy,
)


@pytest.fixture
def busy(desk: Desk, market: Market) -> Market:
    return make_busy(desk, market)


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
    # Approvals.
    "approve a trader as issuer": (lambda m: ApproveIssuer(m.alice, COMPUTE, 10), "not_permitted"),
    "approve another issuer for a dataset": (lambda m: ApproveIssuer(m.rival, DATASET, 10), "not_permitted"),
    "approve a negative capacity": (lambda m: ApproveIssuer(m.rival, COMPUTE, -1), "invalid_qty"),
    "capacity below what is minted": (lambda m: ApproveIssuer(m.issuer, COMPUTE, 4_999), "capacity_below_issued"),
    "unapproved issuer mints": (lambda m: Mint(m.rival, COMPUTE, 1), "not_approved"),
    # Roles.
    "admin places an order": (lambda m: PlaceOrder(m.admin, COMPUTE, "buy", price=BID, qty=1), "not_permitted"),
    "trader mints": (lambda m: Mint(m.alice, COMPUTE, 1), "not_permitted"),
    "trader burns": (lambda m: Burn(m.alice, COMPUTE, 1), "not_permitted"),
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


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_command_is_refused_with_its_code_and_changes_nothing(desk: Desk, busy: Market, case: str) -> None:
    make, code = REFUSALS[case]
    desk.assert_refused(make(busy), code)


def test_the_busy_market_is_what_the_refusals_assume(desk: Desk, busy: Market) -> None:
    assert busy.balance(busy.alice, COMPUTE) == (1, 3)
    assert busy.balance(busy.issuer, COMPUTE) == (5_000 - 10 - 4, 10)
    bid = desk.engine.view(busy.bid)
    assert (bid.status, bid.filled_qty, bid.open_qty) == ("open", 4, 6)
    assert desk.engine.view(busy.bid + 1) == Done(busy.bid + 1)


def test_cancel_all_from_an_unknown_account_is_refused(desk: Desk, busy: Market) -> None:
    desk.assert_refused(CancelAll(NOBODY, COMPUTE), "unknown_account")


def test_cancelling_another_accounts_order_looks_exactly_like_a_missing_order(desk: Desk, busy: Market) -> None:
    theirs = desk.run(CancelOrder(busy.bob, busy.bid))
    missing = desk.run(CancelOrder(busy.bob, 10**9))
    assert theirs == missing == Rejection("unknown_order", MESSAGES["unknown_order"])
    assert desk.engine.view(busy.bid).status == "open"


def test_a_halted_instrument_refuses_orders_and_amends_but_accepts_cancels(desk: Desk, busy: Market) -> None:
    desk.ok(SetInstrumentStatus(COMPUTE, "halted"))
    desk.assert_refused(PlaceOrder(busy.bob, COMPUTE, "buy", price=BID, qty=1), "instrument_halted")
    desk.assert_refused(PlaceOrder(busy.bob, COMPUTE, "buy", "market", budget=ASK), "instrument_halted")
    desk.assert_refused(AmendOrder(busy.alice, busy.bid, qty=8), "instrument_halted")
    # The other instrument still trades.
    desk.ok(PlaceOrder(busy.issuer, DATASET, "sell", price=500, qty=2))

    cancelled = desk.ok(CancelOrder(busy.alice, busy.bid))
    assert (cancelled.status, cancelled.reason) == ("cancelled", "by_request")
    assert busy.balance(busy.alice) == (DEPOSIT - 4 * BID - fees.fee_on(4 * BID, MAKER_PPM), 0)
    assert desk.ok(CancelAll(busy.issuer, COMPUTE)) == Cancelled([busy.ask])
    assert busy.balance(busy.issuer, COMPUTE) == (5_000 - 4, 0)

    desk.ok(SetInstrumentStatus(COMPUTE, "trading"))
    assert desk.ok(PlaceOrder(busy.bob, COMPUTE, "buy", price=BID, qty=1)).status == "open"


# Replays


def test_a_replayed_client_order_id_returns_the_original_order_and_changes_nothing(desk: Desk,
                                                                                   market: Market) -> None:
    original = desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-1"))
    assert isinstance(original, OrderView) and original.status == "open"
    before = engine_state(desk.engine)
    # Whatever else the replay says, the original order is the answer.
    replay = desk.run(PlaceOrder(market.bob, COMPUTE, "sell", price=ASK, qty=7, client_order_id="b-1"))
    assert replay == original
    assert engine_state(desk.engine) == before and desk.effects == Effects()

    # Another account may use the same client order id.
    other = desk.ok(PlaceOrder(market.alice, COMPUTE, "buy", price=BID, qty=2, client_order_id="b-1"))
    assert other.id != original.id


def test_a_replay_of_a_closed_order_answers_done_with_its_id(desk: Desk, market: Market) -> None:
    placed = desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-2"))
    desk.ok(CancelOrder(market.bob, placed.id))
    expired = desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", "market", qty=1, client_order_id="b-3"))
    assert expired.status == "expired"
    before = engine_state(desk.engine)
    assert desk.run(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-2")
                    ) == Done(placed.id)
    assert desk.run(PlaceOrder(market.bob, COMPUTE, "buy", "market", qty=1, client_order_id="b-3")
                    ) == Done(expired.id)
    assert engine_state(desk.engine) == before and desk.effects == Effects()


def test_a_replay_is_answered_even_while_the_instrument_is_halted(desk: Desk, market: Market) -> None:
    placed = desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-4"))
    desk.ok(SetInstrumentStatus(COMPUTE, "halted"))
    before = engine_state(desk.engine)
    assert desk.run(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=3, client_order_id="b-4")
                    ) == placed
    assert engine_state(desk.engine) == before and desk.effects == Effects()


# Holds


def test_a_buy_limit_holds_notional_plus_max_fee_plus_one_and_a_cancel_releases_it_all(
        desk: Desk, market: Market) -> None:
    hold = BID * 10 + fees.fee_on(BID * 10, MAX_PPM) + 1
    assert hold == fees.buy_hold(10, BID, MAX_PPM)
    carol = desk.account("carol", hold)
    placed = desk.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=10))
    assert market.balance(carol) == (0, hold)
    assert desk.rows[placed.id].held == hold

    desk.ok(CancelOrder(carol, placed.id))
    assert market.balance(carol) == (hold, 0)
    assert desk.rows[placed.id].held == 0


def test_a_buy_limit_one_micro_yuan_short_of_its_hold_is_refused(desk: Desk, market: Market) -> None:
    hold = fees.buy_hold(10, BID, MAX_PPM)
    carol = desk.account("carol", hold - 1)
    desk.assert_refused(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=10), "insufficient_funds")
    desk.ok(Deposit(carol, 1))
    assert desk.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=10)).status == "open"


def test_a_sell_holds_exactly_its_qty_in_tokens(desk: Desk, market: Market) -> None:
    placed = desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=25))
    assert market.balance(market.issuer, COMPUTE) == (5_000 - 25, 25)
    desk.ok(AmendOrder(market.issuer, placed.id, qty=20))
    assert market.balance(market.issuer, COMPUTE) == (5_000 - 20, 20)
    desk.ok(CancelOrder(market.issuer, placed.id))
    assert market.balance(market.issuer, COMPUTE) == (5_000, 0)


def test_amending_a_buy_holds_exactly_what_the_new_open_qty_needs(desk: Desk, market: Market) -> None:
    carol = desk.account("carol", DEPOSIT)
    placed = desk.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=10))
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=BID, qty=3))
    spent = 3 * BID + fees.fee_on(3 * BID, MAKER_PPM)
    held_now = fees.buy_hold(10, BID, MAX_PPM) - spent
    assert market.balance(carol) == (DEPOSIT - fees.buy_hold(10, BID, MAX_PPM), held_now)

    # Open 7 → 17 at a higher price: held becomes the hold for 17 at that price.
    desk.ok(AmendOrder(carol, placed.id, price=BID + TICK, qty=20))
    assert market.balance(carol) == (DEPOSIT - spent - fees.buy_hold(17, BID + TICK, MAX_PPM),
                                     fees.buy_hold(17, BID + TICK, MAX_PPM))
    desk.ok(AmendOrder(carol, placed.id, qty=5))
    assert market.balance(carol) == (DEPOSIT - spent - fees.buy_hold(2, BID + TICK, MAX_PPM),
                                     fees.buy_hold(2, BID + TICK, MAX_PPM))


def test_a_fully_filled_buy_leaves_nothing_held_and_pays_notional_plus_its_fee(desk: Desk, market: Market) -> None:
    carol = desk.account("carol", DEPOSIT)
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=4))
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK + TICK, qty=6))
    bought = desk.ok(PlaceOrder(carol, COMPUTE, "buy", price=ASK + 2 * TICK, qty=10))
    notional = 4 * ASK + 6 * (ASK + TICK)
    assert (bought.status, bought.open_qty, bought.filled_qty, bought.filled_notional) == ("filled", 0, 10, notional)
    assert bought.fee == fees.fee_on(notional, TAKER_PPM)
    assert market.balance(carol) == (DEPOSIT - notional - bought.fee, 0)
    assert market.balance(carol, COMPUTE) == (10, 0)
    assert desk.rows[bought.id].held == 0


def test_an_amended_buy_that_crosses_trades_at_the_resting_price_and_holds_exactly(desk: Desk, market: Market) -> None:
    carol = desk.account("carol", DEPOSIT)
    placed = desk.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=5))
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=3))
    amended = desk.ok(AmendOrder(carol, placed.id, price=ASK + 2 * TICK))
    fee = fees.fee_on(3 * ASK, TAKER_PPM)
    assert [(f.price, f.qty, f.fee, f.role) for f in amended.fills] == [(ASK, 3, fee, "taker")]
    assert (amended.status, amended.open_qty, amended.filled_qty) == ("open", 2, 3)
    needed = fees.buy_hold(5, ASK + 2 * TICK, MAX_PPM)
    assert market.balance(carol) == (DEPOSIT - needed, needed - 3 * ASK - fee)
    desk.ok(CancelOrder(carol, placed.id))
    assert market.balance(carol) == (DEPOSIT - 3 * ASK - fee, 0)


def test_lowering_qty_keeps_time_priority_and_raising_or_repricing_loses_it(desk: Desk, market: Market) -> None:
    book = desk.engine.instruments[COMPUTE].book
    first = desk.ok(PlaceOrder(market.alice, COMPUTE, "buy", price=BID, qty=5)).id
    second = desk.ok(PlaceOrder(market.bob, COMPUTE, "buy", price=BID, qty=5)).id

    def queue() -> list[int]:
        return [o.order_id for o in book.orders_at("buy", BID)]

    priority = desk.rows[first].priority
    desk.ok(AmendOrder(market.alice, first, qty=3))
    assert queue() == [first, second]
    assert desk.rows[first].priority == priority
    desk.ok(AmendOrder(market.alice, first, qty=6))
    assert queue() == [second, first]
    assert desk.rows[first].priority > desk.rows[second].priority
    desk.ok(AmendOrder(market.bob, second, price=BID - TICK))
    desk.ok(AmendOrder(market.bob, second, price=BID))
    assert queue() == [first, second]
    sold = desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=BID, qty=7))
    assert [f.qty for f in sold.fills] == [6, 1]
    assert desk.engine.view(first) == Done(first)


# Fees, prices


def test_fees_go_to_the_fee_account_and_round_up(desk: Desk, market: Market) -> None:
    # DATASET has tick 1: 5 lots at 333 is 1,665 micro-yuan; 0.2 % is 3.33 and 0.1 % is 1.665.
    carol = desk.account("carol", DEPOSIT)
    maker = desk.ok(PlaceOrder(market.issuer, DATASET, "sell", price=333, qty=5))
    taker = desk.ok(PlaceOrder(carol, DATASET, "buy", price=333, qty=5))
    assert [(f.fee, f.role) for f in taker.fills] == [(4, "taker")]
    assert desk.engine.view(maker.id) == Done(maker.id)
    assert desk.rows[maker.id].fee == 2
    assert market.balance(FEES) == (6, 0)
    assert market.balance(carol) == (DEPOSIT - 1_665 - 4, 0)
    assert market.balance(market.issuer) == (DEPOSIT + 1_665 - 2, 0)
    assert [(fill[FILL_MAKER_FEE], fill[FILL_TAKER_FEE]) for fill in desk.fills] == [(2, 4)]


def test_an_orders_fee_rounds_once_over_all_its_fills(desk: Desk, market: Market) -> None:
    carol = desk.account("carol", DEPOSIT)
    for qty in (2, 2, 3):
        desk.ok(PlaceOrder(market.issuer, DATASET, "sell", price=101, qty=qty))
    taker = desk.ok(PlaceOrder(carol, DATASET, "buy", price=101, qty=7))
    assert [f.qty for f in taker.fills] == [2, 2, 3]
    # Per fill: ceil(0.404) + ceil(0.404) + ceil(0.606) = 3; per order: ceil(707 x 0.002) = ceil(1.414) = 2.
    assert taker.fee == sum(f.fee for f in taker.fills) == fees.fee_on(707, TAKER_PPM) == 2
    assert market.balance(FEES)[0] == 2 + 3 * 1  # and each maker pays at least one micro-yuan


def test_trades_execute_at_the_resting_orders_price(desk: Desk, market: Market) -> None:
    carol = desk.account("carol", DEPOSIT)
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=5))
    bought = desk.ok(PlaceOrder(carol, COMPUTE, "buy", price=ASK + 20 * TICK, qty=5))
    assert [(f.price, f.qty) for f in bought.fills] == [(ASK, 5)]
    assert market.balance(carol) == (DEPOSIT - 5 * ASK - fees.fee_on(5 * ASK, TAKER_PPM), 0)

    desk.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=5))
    sold = desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=BID - 20 * TICK, qty=5))
    assert [(f.price, f.qty) for f in sold.fills] == [(BID, 5)]
    assert [fill[FILL_PRICE] for fill in desk.fills] == [ASK, BID]


def test_a_market_buy_by_qty_never_spends_more_than_it_held(desk: Desk, market: Market) -> None:
    carol = desk.account("carol", DEPOSIT)
    for price in (ASK, ASK + TICK, ASK + 2 * TICK):
        desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=3))
    bought = desk.ok(PlaceOrder(carol, COMPUTE, "buy", "market", qty=5))
    held = desk.hold_posted(bought.id)
    assert held == fees.buy_hold(5, ASK + TICK, MAX_PPM)
    spent = bought.filled_notional + bought.fee
    assert (bought.status, bought.filled_qty) == ("filled", 5)
    assert spent == 3 * ASK + 2 * (ASK + TICK) + fees.fee_on(3 * ASK + 2 * (ASK + TICK), TAKER_PPM) <= held
    assert market.balance(carol) == (DEPOSIT - spent, 0)

    # More than the book holds: fills what is there, expires the rest, still within its hold.
    rest = desk.ok(PlaceOrder(carol, COMPUTE, "buy", "market", qty=50))
    assert (rest.status, rest.filled_qty, rest.open_qty) == ("expired", 4, 0)
    assert rest.filled_notional + rest.fee <= desk.hold_posted(rest.id)
    assert market.balance(carol) == (DEPOSIT - spent - rest.filled_notional - rest.fee, 0)


def test_a_market_buy_on_an_empty_book_expires_without_holding(desk: Desk, market: Market) -> None:
    carol = desk.account("carol")
    expired = desk.ok(PlaceOrder(carol, COMPUTE, "buy", "market", qty=5))
    assert (expired.status, expired.filled_qty) == ("expired", 0)
    assert market.balance(carol) == (0, 0)


def test_a_budget_order_never_spends_more_than_its_budget_including_the_fee(desk: Desk, market: Market) -> None:
    for price in (ASK, ASK + 10 * TICK):
        desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=3))
    two_lots = 2 * ASK + fees.fee_on(2 * ASK, TAKER_PPM)
    carol = desk.account("carol", DEPOSIT)
    # Exactly enough for two lots and their fee buys two; one micro-yuan less buys one.
    exact = desk.ok(PlaceOrder(carol, COMPUTE, "buy", "market", budget=two_lots))
    assert (exact.status, exact.filled_qty, exact.filled_notional + exact.fee) == ("filled", 2, two_lots)
    short = desk.ok(PlaceOrder(carol, COMPUTE, "buy", "market", budget=two_lots - 1))
    assert (short.filled_qty, short.filled_notional, short.fee) == (1, ASK, fees.fee_on(ASK, TAKER_PPM))
    assert market.balance(carol) == (DEPOSIT - two_lots - short.filled_notional - short.fee, 0)

    # A large budget walks the book and stops when the rest cannot buy a lot; the rest is released.
    big = desk.ok(PlaceOrder(carol, COMPUTE, "buy", "market", budget=5 * ASK))
    spent = big.filled_notional + big.fee
    assert big.filled_qty == 3 and spent <= 5 * ASK
    assert desk.hold_posted(big.id) == 5 * ASK
    assert market.balance(carol)[1] == 0


def test_a_budget_that_cannot_cover_its_fee_is_refused_and_a_small_one_expires(desk: Desk, market: Market) -> None:
    desk.ok(PlaceOrder(market.issuer, DATASET, "sell", price=100, qty=5))
    larger = desk.ok(PlaceOrder(market.bob, DATASET, "buy", "market", budget=50))
    assert (larger.status, larger.filled_qty) == ("expired", 0)
    # 0.2 % of 1 micro-yuan rounds up to a whole micro-yuan: no notional fits beside the fee.
    assert fees.budget_for_notional(1, TAKER_PPM) == 0
    smallest = desk.run(PlaceOrder(market.bob, DATASET, "buy", "market", budget=1))
    assert smallest == Rejection("budget_too_small", MESSAGES["budget_too_small"])
    assert market.balance(market.bob) == (DEPOSIT, 0)


def test_the_fee_tier_drops_after_a_million_yuan_of_30_day_volume(desk: Desk, market: Market) -> None:
    price = 1_000 * fees.MICRO  # 1,000 CNY a lot: 1,000 lots make the first tier
    whale = desk.account("whale", 2_000_000 * fees.MICRO)
    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=999))
    desk.ok(PlaceOrder(whale, COMPUTE, "buy", price=price, qty=999))
    below = desk.ok(PlaceOrder(whale, COMPUTE, "buy", price=TICK, qty=1))
    row = desk.rows[below.id]
    assert (row.maker_fee_ppm, row.taker_fee_ppm) == (MAKER_PPM, TAKER_PPM)

    desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=price, qty=1))
    desk.ok(PlaceOrder(whale, COMPUTE, "buy", price=price, qty=1))
    # Both sides of the trades reached 1,000,000 CNY: 80 % of the base rates from now on.
    maker = desk.ok(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=10))
    taker = desk.ok(PlaceOrder(whale, COMPUTE, "buy", price=ASK, qty=10))
    assert desk.rows[maker.id].maker_fee_ppm == MAKER_PPM * 80 // 100
    assert desk.rows[taker.id].taker_fee_ppm == TAKER_PPM * 80 // 100
    assert taker.fee == fees.fee_on(10 * ASK, 1_600)
    assert desk.rows[maker.id].fee == fees.fee_on(10 * ASK, 800)
    # An account that has not traded keeps the base rate.
    carol = desk.account("carol", DEPOSIT)
    small = desk.ok(PlaceOrder(carol, COMPUTE, "buy", price=BID, qty=1))
    assert desk.rows[small.id].taker_fee_ppm == TAKER_PPM
