"""A deliberately naive order book: the reference that ``matching.book`` is tested against.

One flat list of resting orders, sorted and scanned afresh on every command; a level's total is a sum over it.
Written from the documented semantics (``matching.types``, ``matching.events``, ``matching.book``); it shares
nothing with the real book but the event classes and the codes.
"""

from dataclasses import astuple, dataclass
from itertools import groupby

from matching import types as codes
from matching.events import Accepted, Amended, Cancelled, Decremented, LevelChanged, Rejected, Trade
from matching.types import BUY, CANCEL_BOTH, CANCEL_NEWEST, CANCEL_OLDEST, DECREMENT, FOK, GTC, SELF_TRADE, SELL


@dataclass(eq=False)
class Order:
    order_id: int
    account: int
    side: str
    price: int
    qty: int
    post_only: bool
    stp: str
    arrival: int


def _bad(value: object) -> bool:
    """Whether ``value`` is anything but a positive int (a bool or a float is not an int here)."""
    return type(value) is not int or value <= 0


class Model:
    def __init__(self, tick: int) -> None:
        self.tick = tick
        self.orders: list[Order] = []
        self.arrivals = 0

    # Queries

    def queue(self, side: str) -> list[Order]:
        """One side's orders, best price first, then oldest first."""
        sign = -1 if side == BUY else 1
        return sorted((o for o in self.orders if o.side == side), key=lambda o: (sign * o.price, o.arrival))

    def total(self, side: str, price: int) -> int:
        return sum(o.qty for o in self.orders if o.side == side and o.price == price)

    def find(self, order_id: object) -> Order | None:
        return next((o for o in self.orders if type(order_id) is int and o.order_id == order_id), None)

    def depth(self, n: int) -> tuple[list[tuple[int, int]], ...]:
        def levels(side: str) -> list[tuple[int, int]]:
            return [(p, self.total(side, p)) for p in list(dict.fromkeys(o.price for o in self.queue(side)))[:n]]

        return levels(BUY), levels(SELL)

    def resting_orders(self) -> list[tuple]:
        """Every order as ``RestingOrder`` field tuples: bids best first, then asks best first."""
        return [astuple(o)[:-1] for o in self.queue(BUY) + self.queue(SELL)]

    def crosses(self, side: str, price: int) -> bool:
        return bool(self._reachable(side, price))

    # Commands: each returns the events the book must return.

    def limit(self, seq, ts, order_id, account, side, price, qty, tif=GTC, post_only=False, stp=CANCEL_NEWEST):
        code = self._fault(order_id, side, qty, stp) or (
            codes.INVALID_PRICE if _bad(price)
            else codes.OFF_TICK_PRICE if price % self.tick
            else codes.INVALID_TIME_IN_FORCE if type(tif) is not str or tif not in codes.TIME_IN_FORCE
            else codes.INVALID_POST_ONLY if type(post_only) is not bool
            else codes.POST_ONLY_REQUIRES_GTC if post_only and tif != GTC
            else codes.WOULD_TAKE if post_only and self.crosses(side, price)
            else None
        )
        if code:
            return [Rejected(seq, ts, order_id, code)]
        out = [Accepted(seq, ts, order_id, account, side, price, qty)]
        if tif == FOK and self._tradable(account, side, price, stp) < qty:
            return [*out, Cancelled(seq, ts, order_id, account, qty, codes.FILL_OR_KILL)]
        self._place(out, seq, ts, order_id, account, side, price, qty, tif, post_only, stp)
        return out

    def market(self, seq, ts, order_id, account, side, qty, stp=CANCEL_NEWEST):
        if code := self._fault(order_id, side, qty, stp):
            return [Rejected(seq, ts, order_id, code)]
        out = [Accepted(seq, ts, order_id, account, side, None, qty)]
        if left := self._take(out, seq, ts, order_id, account, side, None, qty, False, stp):
            out.append(Cancelled(seq, ts, order_id, account, left, codes.EXPIRED))
        return out

    def buy_with_budget(self, seq, ts, order_id, account, budget, stp=CANCEL_NEWEST):
        code = self._fault(order_id, BUY, 1, stp) or (
            codes.INVALID_BUDGET if _bad(budget) else codes.INVALID_STP_MODE if stp == DECREMENT else None
        )
        if code:
            return [Rejected(seq, ts, order_id, code)]
        out = [Accepted(seq, ts, order_id, account, BUY, None, None, budget)]
        if self._take(out, seq, ts, order_id, account, BUY, None, budget, True, stp):
            out.append(Cancelled(seq, ts, order_id, account, 0, codes.EXPIRED))
        return out

    def cancel(self, seq, ts, order_id):
        if type(order_id) is not int:
            return [Rejected(seq, ts, order_id, codes.INVALID_ORDER_ID)]
        order = self.find(order_id)
        if order is None:
            return [Rejected(seq, ts, order_id, codes.UNKNOWN_ORDER)]
        self.orders.remove(order)
        return [Cancelled(seq, ts, order_id, order.account, order.qty, codes.BY_REQUEST),
                self._level(seq, ts, order.side, order.price)]

    def amend(self, seq, ts, order_id, price=None, qty=None):
        o = self.find(order_id) if type(order_id) is int else None
        moved = o is not None and price is not None and price != o.price
        code = (
            codes.INVALID_ORDER_ID if type(order_id) is not int
            else codes.UNKNOWN_ORDER if o is None
            else codes.INVALID_QTY if qty is not None and _bad(qty)
            else codes.INVALID_PRICE if price is not None and _bad(price)
            else codes.OFF_TICK_PRICE if price is not None and price % self.tick
            else codes.NO_CHANGE if not moved and qty in (None, o.qty)
            else codes.WOULD_TAKE if moved and o.post_only and self.crosses(o.side, price)
            else None
        )
        if code:
            return [Rejected(seq, ts, order_id, code)]
        price, qty = price or o.price, qty or o.qty
        if not moved and qty < o.qty:
            o.qty = qty
            return [Amended(seq, ts, order_id, price, qty, True), self._level(seq, ts, o.side, price)]
        self.orders.remove(o)
        out = [Amended(seq, ts, order_id, price, qty, False)]
        if moved:
            out.append(self._level(seq, ts, o.side, o.price))
        self._place(out, seq, ts, order_id, o.account, o.side, price, qty, GTC, o.post_only, o.stp)
        return out

    # Matching

    def _fault(self, order_id, side, qty, stp) -> str | None:
        """The rejection code for the fields every new order has, checked in this order."""
        return (
            codes.INVALID_ORDER_ID if type(order_id) is not int or order_id <= 0
            else codes.INVALID_SIDE if type(side) is not str or side not in (BUY, SELL)
            else codes.INVALID_QTY if _bad(qty)
            else codes.INVALID_STP_MODE if type(stp) is not str or stp not in codes.STP_MODES
            else codes.DUPLICATE_ORDER_ID if self.find(order_id)
            else None
        )

    def _level(self, seq, ts, side, price) -> LevelChanged:
        return LevelChanged(seq, ts, side, price, self.total(side, price))

    def _reachable(self, side: str, limit: int | None) -> list[Order]:
        """The resting orders an incoming ``side`` order limited to ``limit`` meets, in the order it meets them."""
        makers = self.queue(SELL if side == BUY else BUY)
        return [o for o in makers if limit is None or (o.price <= limit if side == BUY else o.price >= limit)]

    def _tradable(self, account, side, limit, stp) -> int:
        """Lots an order could trade now: own orders end it, except under cancel_oldest, which clears them."""
        lots = 0
        for maker in self._reachable(side, limit):
            if maker.account != account:
                lots += maker.qty
            elif stp != CANCEL_OLDEST:
                break
        return lots

    def _place(self, out, seq, ts, order_id, account, side, price, qty, tif, post_only, stp) -> None:
        """Match a priced order, then rest (GTC) or expire what is left."""
        left = self._take(out, seq, ts, order_id, account, side, price, qty, False, stp)
        if left and tif == GTC:
            self.arrivals += 1
            self.orders.append(Order(order_id, account, side, price, left, post_only, stp, self.arrivals))
            out.append(self._level(seq, ts, side, price))
        elif left:
            out.append(Cancelled(seq, ts, order_id, account, left, codes.EXPIRED))

    def _shrink(self, maker: Order, lots: int) -> None:
        maker.qty -= lots
        if not maker.qty:
            self.orders.remove(maker)

    def _take(self, out, seq, ts, order_id, account, side, limit, left, by_budget, stp) -> int:
        """Match an incoming order; return what is left of it (lots, or micro-yuan when ``by_budget``), 0 once
        self-trade prevention closed it. A level's LevelChanged follows the events at that level."""
        maker_side = SELL if side == BUY else BUY
        for price, makers in groupby(self._reachable(side, limit), key=lambda o: o.price):
            before = self.total(maker_side, price)
            for maker in makers:
                if not left or (by_budget and left < price):
                    break
                if maker.account != account:
                    lots = min(maker.qty, left // price if by_budget else left)
                    self._shrink(maker, lots)
                    out.append(Trade(seq, ts, price, lots, maker.order_id, maker.account, order_id, account, side,
                                     maker.qty))
                    left -= lots * price if by_budget else lots
                elif stp == DECREMENT:
                    cut = min(maker.qty, left)
                    self._shrink(maker, cut)
                    left -= cut
                    for oid, remaining in ((maker.order_id, maker.qty), (order_id, left)):
                        out.append(Decremented(seq, ts, oid, account, cut, remaining) if remaining
                                   else Cancelled(seq, ts, oid, account, cut, SELF_TRADE))
                else:
                    if stp in (CANCEL_OLDEST, CANCEL_BOTH):
                        out.append(Cancelled(seq, ts, maker.order_id, account, maker.qty, SELF_TRADE))
                        self._shrink(maker, maker.qty)
                    if stp != CANCEL_OLDEST:
                        out.append(Cancelled(seq, ts, order_id, account, 0 if by_budget else left, SELF_TRADE))
                        left = 0
            if self.total(maker_side, price) != before:
                out.append(self._level(seq, ts, maker_side, price))
        return left
