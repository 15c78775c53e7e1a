"""One side of a book: its price levels, found by price and walked in price order.

Layout
------
``levels`` maps each price that has resting orders to its ``Level`` (O(1) lookup). ``prices`` is a
``SortedList`` of those prices for ordered walks, ascending on both sides; ``best`` caches the touch (the
highest bid or the lowest ask).

Adding and removing prices in a ``SortedList`` costs far more than a dict operation, and order flow opens and
empties deep levels constantly. So a level that empties away from the touch leaves its price in ``prices`` as
*stale* (remembered in ``stale``) and a level that reopens at a stale price reuses the entry. Stale prices are
skipped by every walk, removed eagerly at the touch, and swept out whenever they outnumber live levels.

Invariants
----------
- ``prices`` holds exactly the keys of ``levels`` plus ``stale``; the two never overlap.
- The best end of ``prices`` is live: ``best`` is its extreme element, or None when there are no levels.
"""

from collections.abc import Iterator

from sortedcontainers import SortedList

from matching.level import Level
from matching.types import Price

STALE_SLACK = 512
"""Stale prices tolerated beyond the number of live levels before the index is rebuilt. Generous, because
a stale price is a free reopening while each insert into ``prices`` costs about as much as a whole order."""


class BookSide:
    """The bid or ask levels of one book."""

    __slots__ = ("best", "is_bid", "levels", "prices", "stale")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[Price, Level] = {}
        self.prices = SortedList()
        self.stale: set[Price] = set()
        self.best: Price | None = None

    def open_level(self, price: Price) -> Level:
        """Create the empty level at ``price`` (which must have none) and move the touch if it is better."""
        level = self.levels[price] = Level(price)
        if price in self.stale:
            self.stale.discard(price)
        else:
            self.prices.add(price)
        best = self.best
        if best is None or (price > best if self.is_bid else price < best):
            self.best = price
        return level

    def close_level(self, price: Price) -> None:
        """Forget the emptied level at ``price``."""
        del self.levels[price]
        if price != self.best:
            self.stale.add(price)
            if len(self.stale) > len(self.levels) + STALE_SLACK:
                self.prices = SortedList(self.levels)
                self.stale.clear()
            return
        # The touch moved: drop this price and any stale ones now at the end, so the extreme stays live.
        prices, stale = self.prices, self.stale
        end = -1 if self.is_bid else 0
        prices.pop(end)
        while prices and prices[end] in stale:
            stale.discard(prices.pop(end))
        self.best = prices[end] if prices else None

    def walk(self, limit: Price | None = None) -> Iterator[Price]:
        """Live prices from the touch outwards, up to ``limit`` inclusive when given."""
        levels = self.levels
        if self.is_bid:
            prices = self.prices.irange(minimum=limit, reverse=True)
        else:
            prices = self.prices.irange(maximum=limit)
        return (p for p in prices if p in levels)

    def check(self) -> None:
        """Raise AssertionError if the index is out of step with the levels."""
        indexed = set(self.prices)
        if len(indexed) != len(self.prices):
            raise AssertionError("a price is indexed twice")
        if indexed != set(self.levels) | self.stale or self.stale & set(self.levels):
            raise AssertionError("price index out of step with the levels")
        expected = (max(self.levels) if self.is_bid else min(self.levels)) if self.levels else None
        if self.best != expected:
            raise AssertionError(f"cached best {self.best} != {expected}")
        if self.prices and self.prices[-1 if self.is_bid else 0] != expected:
            raise AssertionError("a stale price sits at the touch")
