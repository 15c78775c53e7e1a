"""The token price index of one substitution group: a trimmed, volume-weighted mean price per 1M tokens.

Method
------
The index at a whole UTC minute ``at`` is computed from the trades of the group's compute instruments with
``at - 24 h <= created_at < at``. Instruments of one group differ in tokens per lot, so each trade is first put on
a common footing:

- its unit price ``p = price x 1,000,000 / tokens_per_lot``: micro-yuan per 1M tokens, an exact fraction;
- its volume ``w = qty x tokens_per_lot``: tokens.

Trades are sorted by unit price and laid end to end on a line of length ``W = sum(w)`` tokens. Exactly 10% of
``W`` is cut from each end: the part of the line in ``[W/10, 9W/10)`` is kept, and a trade that straddles a cut
is split there, keeping only its share inside. The index is the mean of the kept unit prices weighted by kept
tokens, ``sum(kept_i x p_i) / (0.8 W)``, computed exactly with fractions, then rounded half to even to a whole
micro-yuan per 1M tokens (the published value). Trades at the same unit price may be ordered either way: they
contribute the same whatever their order.

A group with no trade in the window is stale: it has no value, and nothing is carried over or extrapolated.

What it does not do: read trades or keep history (``exchange.indexer`` does); this module has no I/O.
"""

from collections.abc import Iterable
from fractions import Fraction
from typing import Final, NamedTuple

TOKENS_PER_UNIT: Final = 1_000_000
"""The index is quoted per this many tokens."""
TRIM: Final = Fraction(1, 10)
"""The share of volume cut from each end of the price-sorted trades."""


class IndexTrade(NamedTuple):
    """One trade as the index sees it: micro-yuan per lot, lots, and the instrument's tokens per lot."""

    price: int
    qty: int
    tokens_per_lot: int


class IndexValue(NamedTuple):
    """The index of one group at one minute, with the figures it was computed from (before trimming)."""

    value: int | None
    """Micro-yuan per 1M tokens, rounded half to even; None when stale."""
    trades: int
    volume_tokens: int
    notional: int
    """Micro-yuan traded: sum of price x qty."""

    @property
    def stale(self) -> bool:
        return self.value is None


def unit_price(trade: IndexTrade) -> Fraction:
    """The trade's price in micro-yuan per 1M tokens, exactly."""
    return Fraction(trade.price * TOKENS_PER_UNIT, trade.tokens_per_lot)


def trimmed_mean(points: Iterable[tuple[Fraction, int]]) -> Fraction:
    """The mean of ``(price, weight)`` points weighted by weight after cutting ``TRIM`` of the total weight off
    each end of the price order, splitting a point at each cut; exact. ``points`` must weigh more than zero."""
    ordered = sorted(points)
    total = sum(weight for _, weight in ordered)
    if total <= 0:
        raise ValueError("trimmed_mean needs points of positive total weight")
    low, high = total * TRIM, total * (1 - TRIM)
    weighted = Fraction(0)
    start = 0
    for price, weight in ordered:
        end = start + weight
        kept = min(end, high) - max(start, low)
        if kept > 0:
            weighted += kept * price
        start = end
    return weighted / (high - low)


def compute(trades: Iterable[IndexTrade]) -> IndexValue:
    """The index of the trades of one group's window."""
    count = volume = notional = 0
    # Trades at one price and lot size sit side by side in price order, so merging them changes nothing; the
    # exact arithmetic then runs once per distinct price rather than once per trade.
    lots: dict[tuple[int, int], int] = {}
    for price, qty, tokens_per_lot in trades:
        count += 1
        volume += qty * tokens_per_lot
        notional += price * qty
        key = (price, tokens_per_lot)
        lots[key] = lots.get(key, 0) + qty
    if not count:
        return IndexValue(None, 0, 0, 0)
    mean = trimmed_mean((unit_price(IndexTrade(price, qty, tokens_per_lot)), qty * tokens_per_lot)
                        for (price, tokens_per_lot), qty in lots.items())
    # Fraction's round() rounds half to even: a published value that ends in exactly half a micro-yuan goes to
    # the even neighbour, so rounding favours neither side over many values.
    return IndexValue(round(mean), count, volume, notional)
