"""One instrument's levels as the feed last published them: the market view's ``Levels``, with the seqs of
the feed's last messages and the checksum of the level2 channel."""

from __future__ import annotations

from api.feed.protocol import CHECKSUM_DEPTH, checksum
from api.marketdata import BookView, Levels
from api.units import from_micro


class Ladder(Levels):
    """One instrument's levels as the feed last published them, and the seq of its last messages."""

    __slots__ = ("level2_seq", "prices", "seq", "top", "trades_seq", "ts")

    def __init__(self, seq: int) -> None:
        super().__init__()
        self.seq = seq
        self.level2_seq = seq
        self.trades_seq = seq
        self.ts = 0
        self.prices: dict[int, str] = {}
        self.top: tuple[int | None, int | None] = (None, None)

    @classmethod
    def of(cls, view: BookView) -> Ladder:
        ladder = cls(view.seq)
        ladder.bids.update(view.bids)
        ladder.asks.update(view.asks)
        ladder.top = ladder.best()
        return ladder

    def price(self, value: int) -> str:
        text = self.prices.get(value)
        if text is None:
            if len(self.prices) > 50_000:
                self.prices.clear()
            text = self.prices[value] = from_micro(value)
        return text

    def levels(self, depth: int | None = None) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Bids and asks, best first, as (price string, lots); all of them when ``depth`` is None."""
        price, bids, asks = self.price, self.bids, self.asks
        return ([(price(-key), bids[key]) for key in bids.islice(0, depth)],
                [(price(key), asks[key]) for key in asks.islice(0, depth)])

    def checksum(self) -> int:
        return checksum(*self.levels(CHECKSUM_DEPTH))
