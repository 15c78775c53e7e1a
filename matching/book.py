"""One instrument's limit order book with price-time priority.

Layout
------
Two ``BookSide`` objects (``matching.side``) hold the bid and ask levels: a dict from price to ``Level`` for
O(1) lookup, a ``SortedList`` of prices for ordered walks, and the cached touch. Each level is a FIFO queue with
its running total. ``_orders`` maps every resting order id to its queue ``Entry`` for O(1) cancel and amend.

Commands
--------
``limit``, ``market``, ``buy_with_budget``, ``cancel`` and ``amend`` each take the ``seq`` and ``ts`` the caller
assigns and return the list of events they caused (see ``matching.events``). Invalid input gives a single
``Rejected`` event and leaves the book exactly as it was. Trades execute at the resting order's price.
Self-trade prevention follows the incoming order's mode (``matching.types``).

Invariants (asserted by ``check``)
----------------------------------
- Never crossed at rest: best bid < best ask.
- Each level's total and dead count equal the lots of its open orders and the number of its dead entries; no
  empty level is kept.
- The id map holds exactly the open orders, each at its own side and price.

What it does not do
-------------------
No I/O, clock, randomness, floats or asyncio: the same commands give the same events, so a book rebuilt from
its resting orders behaves exactly like the original. Funds, fees and order ids are the caller's business:
the book trusts that an order is covered and that ids are unique over time.

Compiled
--------
Installed where a C compiler is at hand, this module, ``matching.side`` and ``matching.level`` are compiled
with Cython: the ``.pxd`` beside each declares the C-level attributes of its classes and the typed locals of
its hot methods. The ``.py`` is the source either way and runs unchanged as plain Python (see README).
"""

from collections.abc import Iterable

from matching.events import (
    Accepted,
    Amended,
    Cancelled,
    Decremented,
    Event,
    LevelChanged,
    Rejected,
    Trade,
)
from matching.level import COMPACT_SLACK, Entry, RestingOrder
from matching.side import BookSide
from matching.types import (
    BUY,
    BY_REQUEST,
    CANCEL_NEWEST,
    CANCEL_OLDEST,
    DECREMENT,
    DUPLICATE_ORDER_ID,
    EXPIRED,
    FILL_OR_KILL,
    FOK,
    GTC,
    INVALID_BUDGET,
    INVALID_ORDER_ID,
    INVALID_POST_ONLY,
    INVALID_PRICE,
    INVALID_QTY,
    INVALID_SIDE,
    INVALID_STP_MODE,
    INVALID_TIME_IN_FORCE,
    NO_CHANGE,
    OFF_TICK_PRICE,
    POST_ONLY_REQUIRES_GTC,
    SELF_TRADE,
    SELL,
    STP_MODES,
    TIME_IN_FORCE,
    UNKNOWN_ORDER,
    WOULD_TAKE,
    AccountId,
    Budget,
    OrderId,
    Price,
    Qty,
)


class OrderBook:
    """The resting orders of one instrument and the matching of incoming ones."""

    __slots__ = ("_asks", "_bids", "_orders", "tick")

    def __init__(self, tick: Price = 1) -> None:
        if type(tick) is not int or tick <= 0:
            raise ValueError(f"tick must be a positive int of micro-yuan, got {tick!r}")
        self.tick = tick
        self._orders: dict[OrderId, Entry] = {}
        self._bids = BookSide(is_bid=True)
        self._asks = BookSide(is_bid=False)

    @classmethod
    def rebuild(cls, tick: Price, orders: Iterable[RestingOrder]) -> "OrderBook":
        """Build a book from resting orders given in priority order (oldest first within a price)."""
        book = cls(tick)
        for order in orders:
            book._rest(order.order_id, order.account, order.side, order.price, order.qty,
                       order.post_only, order.stp)
        book.check()
        return book

    # Commands

    def limit(
        self, seq: int, ts: int, order_id: OrderId, account: AccountId, side: str, price: Price, qty: Qty,
        tif: str = GTC, post_only: bool = False, stp: str = CANCEL_NEWEST,
    ) -> list[Event]:
        """Match a limit order as far as ``price`` allows; rest, expire or kill the rest by ``tif``."""
        # One cheap test admits the common valid order; anything odd goes to the exact diagnosis.
        try:
            odd = (
                type(order_id) is not int or type(price) is not int or type(qty) is not int
                or order_id <= 0 or qty <= 0 or price <= 0 or price % self.tick or post_only is not False
                or tif not in TIME_IN_FORCE or stp not in STP_MODES or order_id in self._orders
            )
        except TypeError:  # an unhashable value where a code belongs
            odd = True
        if odd:
            code = self._limit_rejection(order_id, side, price, qty, tif, post_only, stp)
            if code is not None:
                return [Rejected(seq, ts, order_id, code)]

        if side == BUY:
            best = self._asks.best
            crosses = best is not None and price >= best
            own = self._bids
        elif side == SELL:
            best = self._bids.best
            crosses = best is not None and price <= best
            own = self._asks
        else:
            return [Rejected(seq, ts, order_id, INVALID_SIDE)]

        if not crosses and tif == GTC:
            # Rests without crossing: the hot path, inlined. The order keeps the level's price object so a
            # million orders at few prices share a few ints.
            level = own.levels.get(price) or own.open_level(price)
            order = Entry(order_id, account, side, level.price, qty, post_only, stp)
            level.orders.append(order)
            total = level.total = level.total + qty
            self._orders[order_id] = order
            return [Accepted(seq, ts, order_id, account, side, price, qty), LevelChanged(seq, ts, side, price, total)]

        events: list[Event] = [Accepted(seq, ts, order_id, account, side, price, qty)]
        if crosses:
            if tif == FOK and not self._fillable(account, side, price, qty, stp):
                events.append(Cancelled(seq, ts, order_id, account, qty, FILL_OR_KILL))
                return events
            qty = self._match(events, seq, ts, order_id, account, side, price, qty, False, stp)
            if qty <= 0:
                return events
        if tif == GTC:
            total = self._rest(order_id, account, side, price, qty, post_only, stp)
            events.append(LevelChanged(seq, ts, side, price, total))
        else:
            events.append(Cancelled(seq, ts, order_id, account, qty, FILL_OR_KILL if tif == FOK else EXPIRED))
        return events

    def market(
        self, seq: int, ts: int, order_id: OrderId, account: AccountId, side: str, qty: Qty, stp: str = CANCEL_NEWEST,
    ) -> list[Event]:
        """Take up to ``qty`` lots at any price; what cannot fill now expires."""
        code = self._invalid_new(order_id, side, qty, stp)
        if code is not None:
            return [Rejected(seq, ts, order_id, code)]
        events: list[Event] = [Accepted(seq, ts, order_id, account, side, None, qty)]
        qty = self._match(events, seq, ts, order_id, account, side, None, qty, False, stp)
        if qty > 0:
            events.append(Cancelled(seq, ts, order_id, account, qty, EXPIRED))
        return events

    def buy_with_budget(
        self, seq: int, ts: int, order_id: OrderId, account: AccountId, budget: Budget, stp: str = CANCEL_NEWEST,
    ) -> list[Event]:
        """Buy whole lots at any price, spending at most ``budget`` micro-yuan.

        Matching stops at the first resting order whose price exceeds what is left of the budget; the order
        then expires and the caller releases the unspent budget. ``decrement`` has no meaning without a lot
        quantity, so it is refused for budget orders.
        """
        code = self._invalid_new(order_id, BUY, 1, stp)
        if code is None:
            if type(budget) is not int or budget <= 0:
                code = INVALID_BUDGET
            elif stp == DECREMENT:
                code = INVALID_STP_MODE
        if code is not None:
            return [Rejected(seq, ts, order_id, code)]
        events: list[Event] = [Accepted(seq, ts, order_id, account, BUY, None, None, budget)]
        left = self._match(events, seq, ts, order_id, account, BUY, None, budget, True, stp)
        if left > 0:
            events.append(Cancelled(seq, ts, order_id, account, 0, EXPIRED))
        return events

    def cancel(self, seq: int, ts: int, order_id: OrderId) -> list[Event]:
        """Remove a resting order."""
        if type(order_id) is not int:
            return [Rejected(seq, ts, order_id, INVALID_ORDER_ID)]
        order = self._orders.pop(order_id, None)
        if order is None:
            return [Rejected(seq, ts, order_id, UNKNOWN_ORDER)]
        qty = order.qty
        side = order.side
        price = order.price
        book_side = self._bids if side == BUY else self._asks
        level = book_side.levels[price]
        order.qty = 0  # dead in place: the queue forgets it when matching or compaction reaches it
        total = level.total = level.total - qty
        if not total:
            book_side.close_level(price)
        else:
            dead = level.dead = level.dead + 1
            if 2 * dead > len(level.orders) + COMPACT_SLACK:
                level.compact_if_sparse()
        return [Cancelled(seq, ts, order_id, order.account, qty, BY_REQUEST), LevelChanged(seq, ts, side, price, total)]

    def amend(
        self, seq: int, ts: int, order_id: OrderId, price: Price | None = None, qty: Qty | None = None,
    ) -> list[Event]:
        """Change a resting order's price and/or open quantity.

        Lowering the quantity at the same price keeps the order's place in the queue. A new price or a larger
        quantity sends it to the back of its (new) level; a new price that crosses the book matches first,
        as a new limit order would, unless the order is post-only, which is then refused and left as it was.
        """
        order = self._orders.get(order_id) if type(order_id) is int else None
        code = None
        if type(order_id) is not int:
            code = INVALID_ORDER_ID
        elif order is None:
            code = UNKNOWN_ORDER
        elif qty is not None and (type(qty) is not int or qty <= 0):
            code = INVALID_QTY
        elif price is not None and (type(price) is not int or price <= 0):
            code = INVALID_PRICE
        elif price is not None and price % self.tick:
            code = OFF_TICK_PRICE
        if code is not None:
            return [Rejected(seq, ts, order_id, code)]
        assert order is not None
        new_price = order.price if price is None else price
        new_qty = order.qty if qty is None else qty
        side = order.side
        if new_price == order.price:
            if new_qty == order.qty:
                return [Rejected(seq, ts, order_id, NO_CHANGE)]
            level = (self._bids if side == BUY else self._asks).levels[order.price]
            if new_qty < order.qty:
                level.total -= order.qty - new_qty
                order.qty = new_qty
                return [
                    Amended(seq, ts, order_id, new_price, new_qty, True),
                    LevelChanged(seq, ts, side, new_price, level.total),
                ]
            # A larger quantity goes to the back: the old entry dies and a new one joins the queue.
            moved = Entry(order_id, order.account, side, level.price, new_qty, order.post_only, order.stp)
            level.drop(order)
            level.append(moved)
            self._orders[order_id] = moved
            return [
                Amended(seq, ts, order_id, new_price, new_qty, False),
                LevelChanged(seq, ts, side, new_price, level.total),
            ]

        crosses = self._crosses(side, new_price)
        if crosses and order.post_only:
            return [Rejected(seq, ts, order_id, WOULD_TAKE)]
        account, post_only, stp = order.account, order.post_only, order.stp
        events: list[Event] = [Amended(seq, ts, order_id, new_price, new_qty, False)]
        del self._orders[order_id]
        events.append(LevelChanged(seq, ts, side, order.price, self._remove(order)))
        if crosses:
            new_qty = self._match(events, seq, ts, order_id, account, side, new_price, new_qty, False, stp)
            if new_qty <= 0:
                return events
        total = self._rest(order_id, account, side, new_price, new_qty, post_only, stp)
        events.append(LevelChanged(seq, ts, side, new_price, total))
        return events

    # Queries

    def best_bid(self) -> tuple[Price, Qty] | None:
        """The highest bid price and its total lots, or None."""
        best = self._bids.best
        return None if best is None else (best, self._bids.levels[best].total)

    def best_ask(self) -> tuple[Price, Qty] | None:
        """The lowest ask price and its total lots, or None."""
        best = self._asks.best
        return None if best is None else (best, self._asks.levels[best].total)

    def depth(self, levels: int) -> tuple[list[tuple[Price, Qty]], list[tuple[Price, Qty]]]:
        """Aggregated (price, total) pairs, best first: up to ``levels`` bids and asks."""
        return self._depth(self._bids, levels), self._depth(self._asks, levels)

    def price_to_fill(self, side: str, qty: Qty) -> Price | None:
        """The worst price an incoming ``side`` order reaches to fill ``qty`` lots, ignoring self-trade
        prevention: the deepest price when the opposite side holds less, None when it is empty."""
        opposite = self._asks if side == BUY else self._bids
        price = None
        for price in opposite.walk():
            qty -= opposite.levels[price].total
            if qty <= 0:
                break
        return price

    def orders_at(self, side: str, price: Price) -> list[RestingOrder]:
        """Copies of the orders resting at one price, in priority order."""
        level = (self._bids if side == BUY else self._asks).levels.get(price)
        return [] if level is None else [o.copy() for o in level.open_orders()]

    def order(self, order_id: OrderId) -> RestingOrder | None:
        """A copy of one resting order, or None."""
        order = self._orders.get(order_id)
        return None if order is None else order.copy()

    def resting_orders(self) -> list[RestingOrder]:
        """Copies of every resting order in priority order: bids best first, then asks best first.

        Feeding these to ``rebuild`` gives an identical book.
        """
        out: list[RestingOrder] = []
        for book_side in (self._bids, self._asks):
            for price in book_side.walk():
                out.extend(o.copy() for o in book_side.levels[price].open_orders())
        return out

    def __contains__(self, order_id: object) -> bool:
        """Whether ``order_id`` rests on the book."""
        return order_id in self._orders

    @property
    def open_order_count(self) -> int:
        return len(self._orders)

    def check(self) -> None:
        """Raise AssertionError naming the first broken invariant, if any."""
        seen = 0
        for side, book_side in ((BUY, self._bids), (SELL, self._asks)):
            book_side.check()
            for price, level in book_side.levels.items():
                open_orders = level.open_orders()
                _require(level.price == price, f"{side} level keyed {price} says {level.price}")
                _require(price % self.tick == 0, f"{side} level {price} is off the tick {self.tick}")
                _require(open_orders, f"empty {side} level {price} kept")
                dead = len(level.orders) - len(open_orders)
                _require(level.dead == dead, f"{side} {price}: dead count {level.dead} != {dead}")
                total = sum(o.qty for o in open_orders)
                _require(level.total == total, f"{side} {price}: total {level.total} != {total}")
                for o in open_orders:
                    _require(self._orders.get(o.order_id) is o, f"order {o.order_id} missing from id map")
                    _require(o.side == side and o.price == price, f"order {o.order_id} on the wrong level")
                seen += len(open_orders)
        _require(seen == len(self._orders), f"id map has {len(self._orders)} orders, levels have {seen}")
        best_bid, best_ask = self._bids.best, self._asks.best
        if best_bid is not None and best_ask is not None:
            _require(best_bid < best_ask, f"book crossed at rest: bid {best_bid} >= ask {best_ask}")

    # Internals

    def _limit_rejection(
        self, order_id: OrderId, side: str, price: Price, qty: Qty, tif: str, post_only: bool, stp: str
    ) -> str | None:
        """The rejection code for a new limit order, or None when it is valid."""
        code = self._invalid_new(order_id, side, qty, stp)
        if code is not None:
            return code
        if type(price) is not int or price <= 0:
            return INVALID_PRICE
        if price % self.tick:
            return OFF_TICK_PRICE
        if type(tif) is not str or tif not in TIME_IN_FORCE:
            return INVALID_TIME_IN_FORCE
        if type(post_only) is not bool:
            return INVALID_POST_ONLY
        if post_only and tif != GTC:
            return POST_ONLY_REQUIRES_GTC
        if post_only and self._crosses(side, price):
            return WOULD_TAKE
        return None

    def _invalid_new(self, order_id: OrderId, side: str, qty: Qty, stp: str) -> str | None:
        """The rejection code for a new order's common fields, or None when they are valid."""
        if type(order_id) is not int or order_id <= 0:
            return INVALID_ORDER_ID
        if type(side) is not str or (side != BUY and side != SELL):
            return INVALID_SIDE
        if type(qty) is not int or qty <= 0:
            return INVALID_QTY
        if type(stp) is not str or stp not in STP_MODES:
            return INVALID_STP_MODE
        if order_id in self._orders:
            return DUPLICATE_ORDER_ID
        return None

    def _crosses(self, side: str, price: Price) -> bool:
        """Whether a ``side`` order at ``price`` would take liquidity."""
        if side == BUY:
            best = self._asks.best
            return best is not None and price >= best
        best = self._bids.best
        return best is not None and price <= best

    @staticmethod
    def _depth(book_side: BookSide, levels: int) -> list[tuple[Price, Qty]]:
        out = []
        for price in book_side.walk():
            if len(out) == levels:
                break
            out.append((price, book_side.levels[price].total))
        return out

    def _fillable(self, account: AccountId, side: str, limit: Price, qty: Qty, stp: str) -> bool:
        """Whether matching would fill all ``qty`` lots by trades, without changing anything.

        Under ``cancel_oldest`` the taker's own orders are skipped, as matching would cancel them; under any
        other mode meeting one ends the fill, so the order cannot fill in full.
        """
        opposite = self._asks if side == BUY else self._bids
        for price in opposite.walk(limit):
            for maker in opposite.levels[price].orders:
                if not maker.qty:
                    continue
                if maker.account == account:
                    if stp == CANCEL_OLDEST:
                        continue
                    return False
                qty -= maker.qty
                if qty <= 0:
                    return True
        return False

    def _match(
        self, events: list[Event], seq: int, ts: int, order_id: OrderId, account: AccountId, side: str,
        limit: Price | None, left: int, by_budget: bool, stp: str,
    ) -> int:
        """Take liquidity for an incoming order; return what is left of it.

        ``left`` is lots, or micro-yuan when ``by_budget``. A return of 0 or less means the incoming order is
        closed: fully filled, or cancelled by self-trade prevention (its Cancelled event is already emitted).

        Each level's queue is walked with a plain iterator and nothing is removed from it during the walk: a
        maker filled in full only leaves the id map. If the level survives, the entries used up at its front
        (dead, or gone from the id map) are popped after the walk; if it empties, they go with it.
        """
        if side == BUY:
            opposite, maker_side = self._asks, SELL
        else:
            opposite, maker_side = self._bids, BUY
        levels = opposite.levels
        orders = self._orders
        emit = events.append
        stop = False
        while left > 0 and not stop:
            price = opposite.best
            if price is None or (limit is not None and (price > limit if side == BUY else price < limit)):
                break
            if by_budget and left < price:
                break  # the budget cannot buy one more lot here, nor anywhere deeper
            level = levels[price]
            total_before = level.total
            queue = level.orders
            cap = left // price if by_budget else left  # lots this order can still take at this price
            start = cap  # minus what self-trade prevention takes off: ``start - cap`` lots traded here
            for maker in queue:
                maker_qty = maker.qty
                if not maker_qty:
                    continue
                if maker.account == account:
                    # Self-trade prevention: rare, so it keeps the level's total and dead count up to date itself.
                    if stp == CANCEL_NEWEST:
                        emit(Cancelled(seq, ts, order_id, account, 0 if by_budget else cap, SELF_TRADE))
                        stop = True
                        break
                    cut = maker_qty if stp != DECREMENT or maker_qty < cap else cap
                    if cut == maker_qty:
                        del orders[maker.order_id]
                        maker.qty = 0
                        level.dead += 1
                        emit(Cancelled(seq, ts, maker.order_id, maker.account, cut, SELF_TRADE))
                    else:
                        maker.qty = maker_qty - cut
                        emit(Decremented(seq, ts, maker.order_id, maker.account, cut, maker.qty))
                    level.total -= cut
                    if stp == CANCEL_OLDEST:
                        continue
                    if stp == DECREMENT:
                        cap -= cut
                        start -= cut
                        if cap:
                            emit(Decremented(seq, ts, order_id, account, cut, cap))
                            continue
                        emit(Cancelled(seq, ts, order_id, account, cut, SELF_TRADE))
                    else:
                        emit(Cancelled(seq, ts, order_id, account, 0 if by_budget else cap, SELF_TRADE))
                    stop = True
                    break
                if maker_qty < cap:
                    del orders[maker.order_id]
                    emit(Trade(seq, ts, price, maker_qty, maker.order_id, maker.account, order_id, account, side, 0))
                    cap -= maker_qty
                    continue
                # This maker takes the rest of what the order can buy here, in full or in part.
                if maker_qty == cap:
                    del orders[maker.order_id]
                    emit(Trade(seq, ts, price, cap, maker.order_id, maker.account, order_id, account, side, 0))
                else:
                    maker.qty = maker_qty - cap
                    emit(Trade(seq, ts, price, cap, maker.order_id, maker.account, order_id, account, side,
                               maker_qty - cap))
                cap = 0
                break
            filled = start - cap
            if stop:
                left = 0
            elif by_budget:
                left -= filled * price
            else:
                left = cap
            total = level.total = level.total - filled
            if total != total_before:
                emit(LevelChanged(seq, ts, maker_side, price, total))
            if not total:
                opposite.close_level(price)
                continue
            popleft = queue.popleft
            while True:  # the level still has an open order, so this stops
                first = queue[0]
                if first.qty:
                    if first.order_id in orders:
                        break
                else:
                    level.dead -= 1
                popleft()
        return left

    def _rest(
        self, order_id: OrderId, account: AccountId, side: str, price: Price, qty: Qty,
        post_only: bool, stp: str,
    ) -> Qty:
        """Queue a new resting order at the back of its level; return the level's new total."""
        own = self._bids if side == BUY else self._asks
        level = own.levels.get(price) or own.open_level(price)
        order = Entry(order_id, account, side, level.price, qty, post_only, stp)
        level.append(order)
        self._orders[order_id] = order
        return level.total

    def _remove(self, order: Entry) -> Qty:
        """Take a resting order (already out of the id map) off its level; return the level's new total."""
        own = self._bids if order.side == BUY else self._asks
        level = own.levels[order.price]
        level.drop(order)
        if not level.total:
            own.close_level(order.price)
        return level.total


def _require(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)
