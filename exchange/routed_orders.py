"""Routed orders in the engine: plan over the group's live books, hold once, execute the children, release once.

One ``RouteOrder`` is one engine command, so the routed order, its children, their fills and every ledger
entry commit in one batch or not at all.

Steps
-----
1. Check the parameters (``route_planner.refusal``) and the group: a refusal changes nothing.
2. Fix the account's fee rates for the whole routed order and plan (``route_planner.plan``) over the books as
   they are; refuse with ``insufficient_funds``/``insufficient_tokens`` when the plan's hold is not available.
3. Post ONE hold entry for the whole plan (cash for a buy; every symbol's tokens for a sell), under the routed
   order's id, before any child executes.
4. Execute each leg as a real IOC limit order at its worst planned price, settled as any order is. A child's
   share of the hold goes back to the routed order when it closes (``Settlement.open_pool``), not to the account.
5. Place the remainder's GTC order when asked; it owns its part of the hold from then on, as any resting order.
6. Post ONE release entry for whatever the children did not spend.

The routed order's id comes from the order numbering, so the ledger's ``order_id`` names it unambiguously.
Children use the default self-trade prevention (``cancel_newest``): meeting one's own resting order ends that
child, and its lots stay in the remainder.
"""

from datetime import datetime
from typing import TYPE_CHECKING

from exchange import delivery, fees, route_planner
from exchange.commands import RouteOrder
from exchange.records import Instrument, OrderView, RoutedOrder
from matching import events as ev
from matching.types import BUY, GTC, IOC, SELL

if TYPE_CHECKING:
    from exchange.engine import Engine


def members(engine: "Engine", group: str) -> list[Instrument]:
    """The compute instruments of ``group``, halted ones included; dataset tokens never join a group."""
    return [i for i in engine.instruments.values() if i.kind == "compute" and i.substitution_group == group]


def venues(engine: "Engine", group: str, side: str, account_id: int, percent: int) -> list[route_planner.Venue] | None:
    """The trading compute books of ``group`` as the planner sees them; None when no compute instrument is in it."""
    instruments = members(engine, group)
    if not instruments:
        return None
    found: list[route_planner.Venue] = []
    for instrument in instruments:
        if instrument.status != "trading":
            continue
        assert instrument.book is not None and instrument.quality is not None
        bids, asks = instrument.book.depth(route_planner.DEPTH_LEVELS)
        found.append(route_planner.Venue(
            # The measured quality: what its providers deliver (exchange.delivery), the listed one until measured.
            instrument.symbol, delivery.quality(engine, instrument), instrument.tick, instrument.min_qty,
            instrument.max_qty,
            fees.rate_ppm(instrument.maker_fee_bps, percent), fees.rate_ppm(instrument.taker_fee_bps, percent),
            asks if side == BUY else bids,
            None if side == BUY else engine.settlement.ledger.available(account_id, instrument.symbol),
        ))
    return found


def execute(engine: "Engine", account_id: int, cmd: RouteOrder, package_id: int | None, ts: int, at: datetime
            ) -> RoutedOrder | str:
    """Plan and execute ``cmd`` for a trading account; a refusal is its code, and changes nothing."""
    percent = fees.tier_percent(engine.settlement.volume.trailing(account_id, ts))
    books = venues(engine, cmd.group, cmd.side, account_id, percent) if type(cmd.group) is str else None
    code = route_planner.refusal(books or [], cmd.side, cmd.qty, cmd.mode, cmd.price, cmd.budget, cmd.rest_remainder)
    if code is not None:
        return code
    if books is None:
        return "unknown_group"
    if cmd.side == SELL and not any(venue.tokens for venue in books):
        return "insufficient_tokens"
    plan = route_planner.plan(books, cmd.side, cmd.qty, cmd.mode, cmd.price, cmd.budget, cmd.rest_remainder)
    hold = {asset: amount for asset, amount in plan.hold(cmd.side).items() if amount}
    if any(amount > engine.settlement.ledger.available(account_id, asset) for asset, amount in hold.items()):
        return "insufficient_funds" if cmd.side == BUY else "insufficient_tokens"

    settlement = engine.settlement
    routed_id = settlement.take_order_id()
    settlement.open_pool(account_id, routed_id, hold, at)
    by_symbol = {venue.symbol: venue for venue in books}
    children = [
        _child(engine, account_id, cmd.side, leg.symbol, leg.price, leg.qty, IOC, by_symbol[leg.symbol],
               leg.cost if cmd.side == BUY else leg.qty, True, ts, at)
        for leg in plan.legs
    ]
    resting_id = None
    if plan.rest is not None:
        # The rest owns its part of the hold from now on, as any resting order: it is not a pooled child.
        rest = plan.rest
        child = _child(engine, account_id, cmd.side, rest.symbol, rest.price, rest.qty, GTC, by_symbol[rest.symbol],
                       rest.hold, False, ts, at)
        children.append(child)
        resting_id = child.id
    settlement.close_pool(account_id, routed_id, at)

    swept = [c for c in children if c.id != resting_id]
    filled = sum(c.filled_qty for c in swept)
    quality = {venue.symbol: venue.quality for venue in books}
    routed = RoutedOrder(
        routed_id, account_id, cmd.group, cmd.side, cmd.mode, cmd.qty, cmd.price, cmd.budget, cmd.rest_remainder,
        "filled" if filled == cmd.qty else "partially_filled" if filled else "unfilled", filled,
        sum(c.filled_notional for c in swept), sum(c.fee for c in swept),
        sum(quality[c.symbol] * c.filled_qty for c in swept), cmd.qty - filled, resting_id,
        [c.id for c in children], package_id, at, cmd.client_order_id, children,
    )
    settlement.effects.routed_orders.append(routed)
    return routed


def _child(engine: "Engine", account_id: int, side: str, symbol: str, price: int, qty: int, tif: str,
           venue: route_planner.Venue, held: int, pooled: bool, ts: int, at: datetime) -> OrderView:
    """Place one child order holding ``held`` of the routed order's hold; settle it as any order."""
    instrument = engine.instruments[symbol]
    book = instrument.book
    assert book is not None
    seq = instrument.seq + 1
    events = book.limit(seq, ts, engine.settlement.ids.order, account_id, side, price, qty, tif)
    # The plan comes from this very book and the checks already passed: a refusal here is a bug.
    assert type(events[0]) is not ev.Rejected, events[0]
    return engine.settlement.open(
        instrument, seq, events, ts, at, account_id=account_id, client_order_id=None, side=side, type="limit",
        tif=tif, post_only=False, stp="cancel_newest", price=price, qty=qty, budget=None,
        maker_fee_ppm=venue.maker_ppm, taker_fee_ppm=venue.taker_ppm, held=held, hold_asset=None, pooled=pooled,
    )
