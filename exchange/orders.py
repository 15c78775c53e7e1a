"""Orders in the engine: the commands that place, cancel, amend and route orders.

Pipeline
--------
Each order command runs hold → match → settle, in the style of an exchange-core risk pipeline:

1. Check everything that could refuse the command (account, role, instrument, size, funds). A refusal is
   a ``Rejection`` value and nothing has changed.
2. Ask the order book. If the book refuses, nothing has changed either.
3. ``exchange.settlement`` posts the hold, then settles each book event: trades move cash, tokens and fees in
   the ledger; a closed order releases whatever it still holds.

Holds
-----
A sell holds the tokens. A buy limit holds what ``fees.buy_hold`` says. A market buy by quantity holds the
cost of its quantity at the worst price the book would reach and is sent to the book as an IOC limit at that
price, so it can never spend more than it holds. A market buy by budget holds the budget and gives the book
the share of it that leaves room for the taker fee. A routed order (``exchange.routed_orders``) holds once for all
its child orders and releases what they leave once, after the last.

Client order ids
----------------
``client_order_id`` is unique per account, among orders and, apart, among routed orders: sending one again
answers with what it named the first time and changes nothing.
"""

from datetime import datetime
from typing import TYPE_CHECKING

from exchange import fees, routed_orders
from exchange.checks import check_order, positive_int, storable, trading_account
from exchange.commands import (
    AmendOrder,
    CancelAll,
    Cancelled,
    CancelOrder,
    Done,
    PlaceOrder,
    Rejection,
    Result,
    RouteOrder,
)
from exchange.ledger import CASH
from exchange.records import Account, Order, OrderFill, OrderView
from exchange.rejections import reject
from exchange.settlement import order_view
from matching import events as ev
from matching.types import BUY, IOC, SELL

if TYPE_CHECKING:
    from exchange.engine import Engine


def named(engine: "Engine", cmd: PlaceOrder | RouteOrder) -> int | None:
    """The id of the order (or routed order) that ``cmd``'s client order id already names; None when it names none
    yet, or is not given."""
    if cmd.client_order_id is None:
        return None
    by_client_id = engine.client_orders if type(cmd) is PlaceOrder else engine.routed_client_orders
    return by_client_id.get((cmd.account_id, cmd.client_order_id))


def view(engine: "Engine", order_id: int, fills: list[OrderFill] | None = None) -> OrderView | Done:
    """The order as it stands, or ``Done(order_id)`` when it is no longer in memory (look it up)."""
    order = engine.orders.get(order_id)
    if order is None:
        return Done(order_id)
    return order_view(order, engine.instruments_by_id[order.instrument_id].symbol, fills)


def _opening(engine: "Engine", cmd: PlaceOrder | RouteOrder) -> Account | Result:
    """The trading account that sends ``cmd``; else the answer: a refusal, or what its client order id named first."""
    account = trading_account(engine.accounts, cmd.account_id)
    if isinstance(account, Rejection):
        return account
    if not storable(cmd.client_order_id):
        return reject("invalid_text")
    original = named(engine, cmd)
    if original is None:
        return account
    return view(engine, original) if type(cmd) is PlaceOrder else Done(original)


def place(engine: "Engine", cmd: PlaceOrder, ts: int, at: datetime) -> Result:
    """Place a limit or market order: hold what it may spend, match it, settle what the book says."""
    account = _opening(engine, cmd)
    if not isinstance(account, Account):
        return account
    instrument = engine.instruments.get(cmd.symbol)
    if instrument is None:
        return reject("unknown_instrument")
    if instrument.status != "trading":
        return reject("instrument_halted")
    refusal = check_order(cmd, instrument)
    if refusal is not None:
        return refusal

    percent = fees.tier_percent(engine.volume.trailing(account.id, ts))
    maker_ppm = fees.rate_ppm(instrument.maker_fee_bps, percent)
    taker_ppm = fees.rate_ppm(instrument.taker_fee_bps, percent)
    book = instrument.book
    assert book is not None
    price = cmd.price
    tif = cmd.tif if cmd.type == "limit" else IOC
    if cmd.side == SELL:
        hold_asset, hold = instrument.symbol, cmd.qty
    elif cmd.budget is not None:
        hold_asset, hold = CASH, cmd.budget
    else:
        if cmd.type == "market":
            # Capped at the worst price the book would reach now: it cannot spend more than it holds.
            price = book.price_to_fill(BUY, cmd.qty)
        hold_asset = CASH
        hold = 0 if price is None else fees.buy_hold(cmd.qty, price, max(maker_ppm, taker_ppm))
    if hold > engine.ledger.available(account.id, hold_asset):
        return reject("insufficient_funds" if hold_asset == CASH else "insufficient_tokens")
    if cmd.budget is not None and fees.budget_for_notional(hold, taker_ppm) == 0:
        return reject("budget_too_small")

    seq = instrument.seq + 1
    order_id = engine.ids.order
    if cmd.budget is not None:
        events = book.buy_with_budget(seq, ts, order_id, account.id, fees.budget_for_notional(hold, taker_ppm),
                                      cmd.stp)
    elif cmd.type == "market" and (cmd.side == SELL or price is None):
        events = book.market(seq, ts, order_id, account.id, cmd.side, cmd.qty, cmd.stp)
    else:
        events = book.limit(seq, ts, order_id, account.id, cmd.side, price, cmd.qty, tif, cmd.post_only, cmd.stp)
    first = events[0]
    if type(first) is ev.Rejected:
        return reject(first.code)

    answer = engine.settlement.open(
        instrument, seq, events, ts, at, account_id=account.id, client_order_id=cmd.client_order_id,
        side=cmd.side, type=cmd.type, tif=tif, post_only=cmd.post_only, stp=cmd.stp, price=cmd.price,
        qty=cmd.qty, budget=cmd.budget, maker_fee_ppm=maker_ppm, taker_fee_ppm=taker_ppm, held=hold,
        hold_asset=hold_asset,
    )
    if cmd.client_order_id is not None:
        engine.client_orders[(account.id, cmd.client_order_id)] = order_id
    return answer


def route(engine: "Engine", cmd: RouteOrder, ts: int, at: datetime) -> Result:
    """Route an order over the books of a substitution group (``exchange.routed_orders``)."""
    account = _opening(engine, cmd)
    if not isinstance(account, Account):
        return account
    outcome = routed_orders.execute(engine, account.id, cmd, None, ts, at)
    if isinstance(outcome, str):
        return reject(outcome)
    if cmd.client_order_id is not None:
        engine.routed_client_orders[(account.id, cmd.client_order_id)] = outcome.id
    return outcome


def cancel(engine: "Engine", cmd: CancelOrder, ts: int, at: datetime) -> Result:
    """Cancel one open order of the account; the answer is the order as it closed."""
    order = engine.orders.get(cmd.order_id)
    if order is None or order.account_id != cmd.account_id or order.status != "open":
        return reject("unknown_order")
    _cancel(engine, order, ts, at)
    return view(engine, order.id)


def cancel_all(engine: "Engine", cmd: CancelAll, ts: int, at: datetime) -> Result:
    """Cancel every open order of the account on one instrument, oldest first."""
    account = trading_account(engine.accounts, cmd.account_id)
    if isinstance(account, Rejection):
        return account
    instrument = engine.instruments.get(cmd.symbol)
    if instrument is None:
        return reject("unknown_instrument")
    cancelled = []
    for order_id in sorted(engine.open_by_account.get(cmd.account_id, ())):
        order = engine.orders[order_id]
        if order.instrument_id == instrument.id:
            _cancel(engine, order, ts, at)
            cancelled.append(order_id)
    return Cancelled(cancelled)


def _cancel(engine: "Engine", order: Order, ts: int, at: datetime) -> None:
    """Take ``order`` off its book and release what it holds."""
    instrument = engine.instruments_by_id[order.instrument_id]
    assert instrument.book is not None
    instrument.seq += 1
    engine.effects.instruments[instrument.id] = instrument
    events = instrument.book.cancel(instrument.seq, ts, order.id)
    engine.settlement.settle(instrument, events, ts, at)
    engine.effects.events.append((instrument.symbol, events))


def amend(engine: "Engine", cmd: AmendOrder, ts: int, at: datetime) -> Result:
    """Change an open order's price or quantity, holding more or releasing what it no longer needs."""
    order = engine.orders.get(cmd.order_id)
    if order is None or order.account_id != cmd.account_id or order.status != "open":
        return reject("unknown_order")
    instrument = engine.instruments_by_id[order.instrument_id]
    if instrument.status != "trading":
        return reject("instrument_halted")
    assert instrument.book is not None and order.qty is not None and order.price is not None
    new_price = order.price if cmd.price is None else cmd.price
    new_qty = order.qty if cmd.qty is None else cmd.qty
    if not positive_int(new_price):
        return reject("invalid_price")
    if new_price % instrument.tick:
        return reject("off_tick_price")
    if not positive_int(new_qty):
        return reject("invalid_qty")
    if new_qty <= order.filled_qty:
        return reject("qty_not_above_filled")
    if new_qty < instrument.min_qty:
        return reject("qty_below_minimum")
    if new_qty > instrument.max_qty:
        return reject("qty_above_maximum")
    open_qty = new_qty - order.filled_qty
    if order.side == BUY:
        asset = CASH
        needed = fees.buy_hold(open_qty, new_price, max(order.maker_fee_ppm, order.taker_fee_ppm))
    else:
        asset, needed = instrument.symbol, open_qty
    extra = needed - order.held
    if extra > engine.ledger.available(order.account_id, asset):
        return reject("insufficient_funds" if asset == CASH else "insufficient_tokens")
    seq = instrument.seq + 1
    events = instrument.book.amend(seq, ts, order.id, None if new_price == order.price else new_price,
                                   None if open_qty == order.open_qty else open_qty)
    if type(events[0]) is ev.Rejected:
        return reject(events[0].code)
    instrument.seq = seq
    engine.effects.instruments[instrument.id] = instrument
    amended = events[0]
    assert type(amended) is ev.Amended
    if extra > 0:
        engine.ledger.hold(order.account_id, asset, extra, at, order.id)
    else:
        engine.ledger.release(order.account_id, asset, -extra, at, order.id)
    order.held = needed
    order.price, order.qty, order.open_qty = new_price, new_qty, open_qty
    if not amended.priority_kept:
        order.priority = seq
    settlement = engine.settlement
    settlement.touch(order, at)
    fills = settlement.settle(instrument, events, ts, at)
    if order.id not in instrument.book and order.status == "open":
        settlement.close(order, instrument, "filled", None, at)
    engine.effects.events.append((instrument.symbol, events))
    return view(engine, order.id, fills.get(order.id, []))
