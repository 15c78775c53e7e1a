"""The committed market view: each instrument's price levels, last trade and 24-hour figures.

Source
------
``load`` reads the view from the database before the sequencer takes its first command; from then on the
sequencer's ``publish`` callback (``apply``) hands over the book events of each batch after it has committed.
So the view never shows anything uncommitted, and a batch that failed to commit never reaches it. LevelChanged
events carry absolute totals per (side, price), so applying one is an assignment; every event carries the
instrument's seq, and a book's ``seq`` is the last one applied. ``listeners`` are called after each batch, with
the same arguments, for consumers (such as a feed) that must see changes in the view's order; they run inside
the sequencer's writer task, so they must be quick and must not block.

After the sequencer reloaded its engine (a commit whose outcome it could not know, say) or a publish raised
partway, the view may miss committed batches: the sequencer's ``resync`` callback (``reload``) reads the view
anew, between two commits, and tells each of ``reloaded`` so that it starts again from the view.

Layout
------
Per symbol: bids and asks as sorted maps from price to total lots (bids keyed by negated price, so both iterate
best first), the last trade, and one bucket per minute of trades (open, high, low, close, lots, notional) for
the trailing 24 hours. A depth-N read is O(N); applying a batch is O(events x log levels).

Accounts
--------
The view also passes on what each batch changed for each account (``exchange.account_events``), to
``account_listeners`` (the feed's user channel): ``apply_effects`` is the sequencer's ``publish_effects`` in one
process, ``apply_accounts`` takes them from an engine elsewhere (``api.market_follower``). Listeners run in the
caller's task as ``listeners`` do.

What it does not do: checksums and gap detection are the feed's; it keeps no per-order data.
"""

from collections import deque
from collections.abc import Callable

import asyncpg
from sortedcontainers import SortedDict

from exchange.account_events import AccountEvents, account_events
from exchange.database.queries import sql
from exchange.settlement import Effects
from matching import events as ev

MINUTE_US = 60_000_000
DAY_MINUTES = 1440

Batch = list[tuple[str, list]]
"""(symbol, book events) per command of one committed batch."""

LOAD_INSTRUMENTS = sql("instrument_seqs")
INSTRUMENT_SEQ = sql("instrument_seq")
LOAD_LEVELS = sql("open_levels")
LOAD_LAST_TRADES = sql("last_trades")
LOAD_MINUTES = sql("trade_minutes")


class Levels:
    """An instrument's price levels, best first on each side; the market view's and the feed's."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        """-price -> lots"""
        self.asks: SortedDict = SortedDict()
        """price -> lots"""

    def set_level(self, side: str, price: int, total: int) -> None:
        levels, key = (self.bids, -price) if side == "buy" else (self.asks, price)
        if total:
            levels[key] = total
        else:
            levels.pop(key, None)

    def best(self) -> tuple[int | None, int | None]:
        """The best bid and ask prices; None for an empty side."""
        return (-self.bids.peekitem(0)[0] if self.bids else None, self.asks.peekitem(0)[0] if self.asks else None)


class BookView(Levels):
    """One instrument's committed levels and trade figures."""

    __slots__ = ("last_price", "last_qty", "minutes", "seq")

    def __init__(self, seq: int = 0) -> None:
        super().__init__()
        self.seq = seq
        self.last_price: int | None = None
        self.last_qty: int | None = None
        self.minutes: deque[list[int]] = deque()
        """[minute, open, high, low, close, lots, notional], oldest first"""

    def trade(self, minute: int, price: int, qty: int) -> None:
        self.last_price, self.last_qty = price, qty
        minutes = self.minutes
        if minutes and minutes[-1][0] >= minute:
            bucket = minutes[-1]  # a clock step backwards lands in the newest bucket rather than reordering
            bucket[2] = max(bucket[2], price)
            bucket[3] = min(bucket[3], price)
            bucket[4] = price
            bucket[5] += qty
            bucket[6] += price * qty
        else:
            minutes.append([minute, price, price, price, price, qty, price * qty])
        while minutes and minutes[0][0] <= minute - DAY_MINUTES:
            minutes.popleft()

    def depth(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``n`` levels of each side as (price, lots), best first."""
        bids = [(-key, self.bids[key]) for key in self.bids.islice(0, n)]
        asks = [(key, self.asks[key]) for key in self.asks.islice(0, n)]
        return bids, asks

    def day(self, now_minute: int) -> tuple[int | None, int | None, int | None, int, int]:
        """(open, high, low, lots, notional) over the 24 hours up to ``now_minute``."""
        recent = [bucket for bucket in self.minutes if bucket[0] > now_minute - DAY_MINUTES]
        if not recent:
            return None, None, None, 0, 0
        return (recent[0][1], max(b[2] for b in recent), min(b[3] for b in recent), sum(b[5] for b in recent),
                sum(b[6] for b in recent))


class MarketData:
    """Every instrument's ``BookView``, by symbol."""

    def __init__(self) -> None:
        self.books: dict[str, BookView] = {}
        self.listeners: list[Callable[[Batch, list[int]], None]] = []
        self.reloaded: list[Callable[[], None]] = []
        self.account_listeners: list[Callable[[list[AccountEvents]], None]] = []

    async def load(self, conn: asyncpg.Connection) -> None:
        """Read the committed view; call before the sequencer starts."""
        books: dict[str, BookView] = {}
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            symbols = {}
            for instrument_id, symbol, seq in await conn.fetch(LOAD_INSTRUMENTS):
                symbols[instrument_id] = symbol
                books[symbol] = BookView(seq)
            for instrument_id, side, price, total in await conn.fetch(LOAD_LEVELS):
                books[symbols[instrument_id]].set_level(side, price, total)
            for instrument_id, price, qty in await conn.fetch(LOAD_LAST_TRADES):
                book = books[symbols[instrument_id]]
                book.last_price, book.last_qty = price, qty
            for instrument_id, minute, open_, high, low, close, lots, notional in await conn.fetch(LOAD_MINUTES):
                books[symbols[instrument_id]].minutes.append([minute, open_, high, low, close, lots, int(notional)])
        # Swapped in whole: readers never see a view half read.
        self.books = books

    async def reload(self, conn: asyncpg.Connection) -> None:
        """Read the committed view anew and have ``reloaded`` start again from it; the sequencer's ``resync``."""
        await self.load(conn)
        for listener in self.reloaded:
            listener()

    def apply(self, batch: Batch, fill_ids: list[int]) -> None:
        """Apply one committed batch of (symbol, book events) and the ids of its fills, one per Trade event in
        order; the sequencer's ``publish``. What raises here or in a listener makes the sequencer ``reload``."""
        books = self.books
        for symbol, events in batch:
            book = books.get(symbol)
            if book is None:
                book = books[symbol] = BookView()
            for event in events:
                kind = type(event)
                if kind is ev.LevelChanged:
                    book.set_level(event.side, event.price, event.total)
                elif kind is ev.Trade:
                    book.trade(event.ts // MINUTE_US, event.price, event.qty)
                if event.seq > book.seq:
                    book.seq = event.seq
        for listener in self.listeners:
            listener(batch, fill_ids)

    def apply_effects(self, effects: Effects) -> None:
        """Pass on what a committed batch changed for each account; the sequencer's ``publish_effects``."""
        events = account_events(effects)
        if events:
            self.apply_accounts(events)

    def apply_accounts(self, events: list[AccountEvents]) -> None:
        """Pass on committed account events, in commit order."""
        for listener in self.account_listeners:
            listener(events)

    def known(self, symbol: str, seq: int) -> BookView:
        """The view of ``symbol``, adding an empty one at ``seq`` for an instrument listed since ``load``."""
        return self.books.setdefault(symbol, BookView(seq))

    async def view_of(self, connection: Callable, symbol: str) -> BookView | None:
        """The view of ``symbol``, or None when no instrument has that symbol. One listed since ``load`` and never
        traded is looked up on ``connection()`` (an async context manager, such as ``Services.connection``)."""
        view = self.books.get(symbol)
        if view is None:
            async with connection() as conn:
                seq = await conn.fetchval(INSTRUMENT_SEQ, symbol)
            if seq is None:
                return None
            view = self.known(symbol, seq)
        return view
