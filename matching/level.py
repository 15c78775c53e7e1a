"""A price level: the FIFO queue of resting orders at one price, with its running total.

Layout
------
``orders`` is a deque in time priority. Cancelling an order in the middle would cost O(n) in a deque, so a
cancelled order is only marked dead (``qty == 0``) and stays in the queue until matching pops it from the
front or the level compacts itself. ``live`` counts the orders still open and ``total`` their lots, so both
are exact at all times; the book drops a level as soon as ``live`` reaches zero.

Invariants
----------
- ``total`` is the sum of ``qty`` over the queue and ``live`` the number of entries with ``qty > 0``.
- Dead entries never outnumber live ones by more than ``COMPACT_SLACK`` for long: ``drop`` compacts.
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
    live: int
    orders: deque[RestingOrder]

    def append(self, order: RestingOrder) -> None:
        """Queue ``order`` behind every order already here."""
        self.orders.append(order)
        self.total += order.qty
        self.live += 1

    def drop(self, order: RestingOrder) -> None:
        """Take ``order`` out of the level wherever it stands: O(1), amortized over compaction."""
        self.total -= order.qty
        self.live -= 1
        order.qty = 0
        if len(self.orders) > 2 * self.live + COMPACT_SLACK:
            self.compact()

    def compact(self) -> None:
        """Forget the dead entries."""
        self.orders = deque(o for o in self.orders if o.qty)

    def open_orders(self) -> list[RestingOrder]:
        """The open orders in priority order."""
        return [o for o in self.orders if o.qty]
