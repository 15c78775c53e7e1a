"""A price level: the FIFO queue of resting orders at one price, with its running total.

Layout
------
``orders`` is a deque of ``Entry`` records in time priority. Cancelling an order in the middle would cost O(n)
in a deque, so a cancelled order is only marked dead (``qty == 0``) and stays in the queue until matching pops
it from the front or the level compacts itself. ``total`` sums the open lots and ``dead`` counts the dead
entries, so both are exact at all times. Every open order has at least one lot, so ``total == 0`` means the
level is empty; the book drops it then. (Counting dead entries rather than live ones keeps the hot path of
resting a new order one counter lighter.)

Invariants
----------
- ``total`` is the sum of ``qty`` over the queue and ``dead`` the number of entries with ``qty == 0``.
- Dead entries never outnumber live ones by more than ``COMPACT_SLACK``: whoever kills an entry compacts.
"""

from collections import deque

import msgspec

from matching.types import AccountId, OrderId, Price, Qty

try:
    import cython
except ImportError:  # uncompiled, without Cython installed: the class decorators below only instruct the compiler
    from types import SimpleNamespace

    cython = SimpleNamespace(cclass=lambda cls: cls, no_gc=lambda cls: cls)

COMPACT_SLACK = 32
"""Dead entries a level tolerates beyond its live count before it rebuilds its queue."""


class RestingOrder(msgspec.Struct, gc=False):
    """A copy of an order waiting on the book, as queries return it and ``OrderBook.rebuild`` takes it."""

    order_id: OrderId
    account: AccountId
    side: str
    price: Price
    qty: Qty
    post_only: bool = False
    stp: str = "cancel_newest"


# One Entry per resting order, so it stays out of the cyclic GC as RestingOrder did (gc=False): it holds only ids,
# numbers and codes, so it closes no cycle. Cython takes ``no_gc`` only from the class itself, not from level.pxd.
@cython.no_gc
@cython.cclass
class Entry:
    """An order's place in its level's queue. ``qty`` is its open quantity; 0 marks an entry that left the book.

    The book's own mutable record; callers only ever see ``RestingOrder`` copies of it.
    """

    __slots__ = ("account", "order_id", "post_only", "price", "qty", "side", "stp")

    def __init__(
        self, order_id: OrderId, account: AccountId, side: str, price: Price, qty: Qty, post_only: bool, stp: str
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price
        self.qty = qty
        self.post_only = post_only
        self.stp = stp

    def copy(self) -> RestingOrder:
        """This order as the caller sees it."""
        return RestingOrder(self.order_id, self.account, self.side, self.price, self.qty, self.post_only, self.stp)


class Level:
    """The orders resting at one price, oldest first."""

    __slots__ = ("dead", "orders", "price", "total")

    def __init__(self, price: Price) -> None:
        self.price = price
        self.total: Qty = 0
        self.dead = 0
        self.orders: deque[Entry] = deque()

    def append(self, order: Entry) -> None:
        """Queue ``order`` behind every order already here."""
        self.orders.append(order)
        self.total += order.qty

    def drop(self, order: Entry) -> None:
        """Take ``order`` out of the level wherever it stands: O(1), amortized over compaction."""
        self.total -= order.qty
        order.qty = 0
        self.dead += 1
        self.compact_if_sparse()

    def compact_if_sparse(self) -> None:
        """Forget the dead entries once they outnumber the live ones by ``COMPACT_SLACK``."""
        if 2 * self.dead > len(self.orders) + COMPACT_SLACK:
            # A list, not a generator: Cython compiles no closure inside a method that level.pxd makes cpdef.
            self.orders = deque([o for o in self.orders if o.qty])
            self.dead = 0

    def open_orders(self) -> list[Entry]:
        """The open orders in priority order."""
        return [o for o in self.orders if o.qty]
