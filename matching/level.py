"""A price level: the FIFO queue of resting orders at one price, with its running total.

Layout
------
``orders`` is a deque in time priority. Cancelling an order in the middle would cost O(n) in a deque, so a
cancelled order is only marked dead (``qty == 0``) and stays in the queue until matching pops it from the
front or the level compacts itself. ``total`` sums the open lots and ``dead`` counts the dead entries, so
both are exact at all times. Every open order has at least one lot, so ``total == 0`` means the level is
empty; the book drops it then. (Counting dead entries rather than live ones keeps the hot path of resting a
new order one counter lighter.)

Invariants
----------
- ``total`` is the sum of ``qty`` over the queue and ``dead`` the number of entries with ``qty == 0``.
- Dead entries never outnumber live ones by more than ``COMPACT_SLACK``: whoever kills an entry compacts.
"""

from collections import deque

import msgspec

from matching.types import AccountId, OrderId, Price, Qty

COMPACT_SLACK = 32
"""Dead entries a level tolerates beyond its live count before it rebuilds its queue."""


class RestingOrder(msgspec.Struct, gc=False):
    """An order waiting on the book. ``qty`` is its open quantity; 0 marks an entry that left the book."""

    order_id: OrderId
    account: AccountId
    side: str
    price: Price
    qty: Qty
    post_only: bool = False
    stp: str = "cancel_newest"


class Level(msgspec.Struct, gc=False):
    """The orders resting at one price, oldest first. Build with ``Level(price, 0, 0, deque())``."""

    price: Price
    total: Qty
    dead: int
    orders: deque[RestingOrder]

    def append(self, order: RestingOrder) -> None:
        """Queue ``order`` behind every order already here."""
        self.orders.append(order)
        self.total += order.qty

    def drop(self, order: RestingOrder) -> None:
        """Take ``order`` out of the level wherever it stands: O(1), amortized over compaction."""
        self.total -= order.qty
        order.qty = 0
        self.dead += 1
        self.compact_if_sparse()

    def compact_if_sparse(self) -> None:
        """Forget the dead entries once they outnumber the live ones by ``COMPACT_SLACK``."""
        if 2 * self.dead > len(self.orders) + COMPACT_SLACK:
            self.orders = deque(o for o in self.orders if o.qty)
            self.dead = 0

    def open_orders(self) -> list[RestingOrder]:
        """The open orders in priority order."""
        return [o for o in self.orders if o.qty]
