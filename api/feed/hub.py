"""The feed's fan-out: every connection and subscription, the books as published, and the tasks that flush and
beat (``api.feed.protocol`` describes what clients see)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

from api.feed.connection import Connection, Feed, Group
from api.feed.ladder import Ladder
from api.feed.limits import FeedLimits
from api.feed.protocol import (
    GOING_AWAY,
    INTERVAL_MINUTES,
    CandleUpdate,
    Heartbeat,
    IndexHeartbeat,
    IndexUpdate,
    PackageUpdate,
    Snapshot,
    Ticker,
    TradeItem,
    Trades,
    Update,
    checksum,
    encode,
    frame,
)
from api.feed.user import UserChannel
from api.marketdata import MINUTE_US, Batch, MarketData
from api.schemas import Execution, candle, empty_candle, price_index, ticker_figures
from api.services import Services
from api.uvicorn_coupling import wire_frame
from exchange.indexer import IndexRow
from matching import events as ev

log = logging.getLogger(__name__)


def now_us() -> int:
    return time.time_ns() // 1000


class Hub:
    """Every connection and subscription, the books as published, and the tasks that flush, beat and read the
    user channel's snapshots. ``publish`` is a ``MarketData`` listener, ``user.receive`` an account listener."""

    def __init__(self, market: MarketData, limits: FeedLimits | None = None) -> None:
        self.market = market
        self.limits = limits or FeedLimits()
        self.ladders: dict[str, Ladder] = {symbol: Ladder.of(view) for symbol, view in market.books.items()}
        self.feeds: dict[tuple, Feed] = {}
        self.connections: set[Connection] = set()
        self.per_address: Counter[str] = Counter()
        self.per_address_elsewhere: Counter[str] = Counter()
        """Connections per address open on the other gateways, kept by ``api.shared_limits``; empty in one process."""
        self.services: Services | None = None
        self.groups: list[Group] = []
        self._dirty: dict[Feed, None] = {}
        """Feeds whose log some group has yet to take, in the order they were first queued to."""
        self._deliveries: deque[tuple[Connection, str | asyncio.Event, bytes | None]] = deque()
        self._flush_wanted = asyncio.Event()
        self._last_flush = 0.0
        self._flush_cost = 0.0
        """Seconds the last flush took to build its frames and hand them over."""
        self.user = UserChannel(self)
        self.indices: dict[str, IndexRow] = {}
        """group -> its newest price index"""
        self._tasks: list[asyncio.Task] = []
        self.stats = Counter()

    # Lifecycle

    def start(self, services: Services) -> None:
        self.services = services
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._flusher(), name="feed-flush"),
                       loop.create_task(self._heartbeats(), name="feed-heartbeat"),
                       loop.create_task(self.user.run(), name="feed-user")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for connection in list(self.connections):
            connection.close(GOING_AWAY, "the server is stopping")

    # Publication: in the sequencer's writer task, right after a commit

    def publish(self, batch: Batch, fill_ids: list[int]) -> None:
        """Queue the messages of one committed batch of (symbol, book events); ``fill_ids`` names the batch's
        Trade events in order, as committed."""
        next_fill = iter(fill_ids).__next__
        touched: dict[str, bool] = {}
        for symbol, events in batch:
            ladder = self.ladders.get(symbol)
            if ladder is None:
                ladder = self.ladders[symbol] = Ladder(0)
            traded = touched.get(symbol, False)
            seq = -1
            ts = 0
            levels: list[ev.LevelChanged] = []
            trades: list[tuple[int, ev.Trade]] = []
            for event in events:
                if event.seq != seq:
                    if seq >= 0:
                        self._emit(symbol, ladder, seq, ts, levels, trades)
                        levels, trades = [], []
                    seq, ts = event.seq, event.ts
                kind = type(event)
                if kind is ev.LevelChanged:
                    levels.append(event)
                elif kind is ev.Trade:
                    trades.append((next_fill(), event))
                    traded = True
            if seq >= 0:
                self._emit(symbol, ladder, seq, ts, levels, trades)
                touched[symbol] = traded
        for symbol, traded in touched.items():
            self._after_batch(symbol, self.ladders[symbol], traded)
        self._flush_wanted.set()

    def resync(self) -> None:
        """Start again from the market view, which was just read anew from the database (``MarketData.reload``):
        the sequencer could not tell whether a batch committed, or a publish failed partway.

        Every book's ladder is made again from the view, at the view's seq, as at start-up: each level2
        subscriber gets a fresh snapshot (the next update's ``prev_seq`` is its seq), each ticker and candles
        subscriber a fresh message, and trades and heartbeats continue from that seq, so a client whose last
        trades seq is below it fetches the trades it missed over REST. The user channel sends each subscriber's
        balances and open orders again, and the fills committed after the last one it sent.
        """
        self.flush()  # what is queued predates the snapshots
        for symbol, view in self.market.books.items():
            old = self.ladders.get(symbol)
            ladder = self.ladders[symbol] = Ladder.of(view)
            if old is not None:
                ladder.ts = old.ts
        for key, feed in self.feeds.items():
            ladder = self.ladders.get(key[1]) if key[0] in ("level2", "ticker", "candles") else None
            if ladder is None:
                continue
            symbol = key[1]
            if key[0] == "level2":
                bids, asks = ladder.levels()
                self.queue(feed, encode(Snapshot("level2", symbol, ladder.seq, ladder.ts, bids, asks,
                                                  checksum(bids, asks))))
            elif key[0] == "ticker":
                self.queue(feed, self.ticker(symbol, ladder))
            else:
                self.queue(feed, self.candle(symbol, ladder, key[2]))
        self.user.owe_all()
        self._flush_wanted.set()

    def _emit(self, symbol: str, ladder: Ladder, seq: int, ts: int, levels: list[ev.LevelChanged],
              trades: list[tuple[int, ev.Trade]]) -> None:
        if seq > ladder.seq:
            ladder.seq = seq
        ladder.ts = ts
        feeds = self.feeds
        if levels:
            for event in levels:
                ladder.set_level(event.side, event.price, event.total)
            feed = feeds.get(("level2", symbol))
            if feed is not None:
                price = ladder.price
                bids = [(price(e.price), e.total) for e in levels if e.side == "buy"]
                asks = [(price(e.price), e.total) for e in levels if e.side != "buy"]
                self.queue(feed, encode(Update("level2", symbol, seq, ladder.level2_seq, ts, bids, asks,
                                                ladder.checksum())))
            ladder.level2_seq = seq
        if trades:
            feed = feeds.get(("trades", symbol))
            if feed is not None:
                price = ladder.price
                items = [TradeItem(fill_id, price(t.price), t.qty, t.taker_side) for fill_id, t in trades]
                self.queue(feed, encode(Trades("trades", symbol, seq, ladder.trades_seq, ts, items)))
            ladder.trades_seq = seq

    def _after_batch(self, symbol: str, ladder: Ladder, traded: bool) -> None:
        top = ladder.best()
        moved = top != ladder.top
        ladder.top = top
        feed = self.feeds.get(("ticker", symbol))
        if feed is not None and (moved or traded):
            self.queue(feed, self.ticker(symbol, ladder))
        if traded:
            for interval in INTERVAL_MINUTES:
                feed = self.feeds.get(("candles", symbol, interval))
                if feed is not None:
                    self.queue(feed, self.candle(symbol, ladder, interval))

    def publish_index(self, rows: list[IndexRow]) -> None:
        """Queue newly computed price index rows, oldest first; the ``exchange.indexer.Indexer``'s ``publish``."""
        for row in rows:
            group = row.substitution_group
            newest = self.indices.get(group)
            if newest is None or row.at > newest.at:
                self.indices[group] = row
            feed = self.feeds.get(("index", group))
            if feed is not None:
                self.queue(feed, encode(IndexUpdate("index", group, price_index(row))))
        self._flush_wanted.set()

    def flush_soon(self) -> None:
        """Have the flusher send what is queued."""
        self._flush_wanted.set()

    def queue(self, feed: Feed, message: str) -> None:
        """Queue ``message`` on the stream ``feed`` for the next flush."""
        if not feed.log:
            self._dirty[feed] = None
        feed.append(message)

    def ticker(self, symbol: str, ladder: Ladder) -> str:
        """The ticker message of ``symbol`` now."""
        figures = ticker_figures(self.market.books.get(symbol), *ladder.best(), now_us() // MINUTE_US)
        return encode(Ticker("ticker", symbol, ladder.seq, ladder.ts, *figures))

    def candle(self, symbol: str, ladder: Ladder, interval: str) -> str:
        """The candle message of ``symbol``'s current bin of ``interval``."""
        span = INTERVAL_MINUTES[interval]
        view = self.market.books.get(symbol)
        minutes = view.minutes if view is not None else ()
        now = now_us() // MINUTE_US
        if minutes and minutes[-1][0] > now:
            now = minutes[-1][0]  # the clock stepped back: the newest bucket is the current one
        first = now // span * span
        current = [bucket for bucket in reversed(minutes) if bucket[0] >= first] if minutes else []
        start = datetime.fromtimestamp(first * 60, UTC)
        if not current:
            bar = empty_candle(start)
        else:
            current.reverse()
            bar = candle(start, current[0][1], max(b[2] for b in current), min(b[3] for b in current),
                         current[-1][4], sum(b[5] for b in current), sum(b[6] for b in current))
        return encode(CandleUpdate("candles", symbol, interval, ladder.seq, ladder.ts, bar))

    # Flushing

    async def _flusher(self) -> None:
        """Flush at once on a quiet server; under load, space flushes by what the last one cost.

        A flush goes through the delivery groups in turn: each group's frames are built from what is queued when
        its turn comes and handed over before the next group's are built, so a message published during a flush
        still reaches the groups whose turn has not come, and no connection's frame waits behind a whole flush's
        sends on top of the wait for the flush itself.

        A flush's cost is one send per subscriber, so it is the hub's own time (building the frames and handing
        them over, not the turns of the loop in between) that sets the pace: after a flush that took ``t``
        seconds, the next waits until ``t x flush_spacing`` has passed since it began, never more than
        ``flush_interval``. A lone update thus leaves on the next turn of the loop, and a busy hub sends fewer,
        larger frames and keeps its share of the loop bounded."""
        loop = asyncio.get_running_loop()
        limits = self.limits
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            try:
                if self._dirty:
                    wait = self._last_flush + min(limits.flush_interval, self._flush_cost * limits.flush_spacing) \
                        - loop.time()
                    # One turn of the loop at least: what the callbacks ready now publish goes in this flush.
                    await asyncio.sleep(max(wait, 0))
                    self._last_flush = loop.time()
                    self._flush_cost = 0.0
                    self.stats["flushes"] += 1
                    for group in list(self.groups):
                        started = loop.time()
                        self.flush_group(group)
                        self._flush_cost += loop.time() - started
                        await self._hand_over()
                    self._drop_taken()
                await self._hand_over()
            except Exception:
                log.exception("flushing the feed failed")

    async def _hand_over(self) -> None:
        """Hand over every queued frame, ``delivery_chunk`` per turn of the loop, so that the sequencer's commits
        go on meanwhile."""
        loop = asyncio.get_running_loop()
        deliveries = self._deliveries
        chunk = self.limits.delivery_chunk
        while deliveries:
            started = loop.time()
            for _ in range(min(chunk, len(deliveries))):
                connection, text, wire = deliveries.popleft()
                connection.put(text, wire)
            self._flush_cost += loop.time() - started
            await asyncio.sleep(0)

    def flush(self) -> None:
        """Turn every queued message into frames for its subscribers, in order, group by group. The flusher hands
        them over."""
        if not self._dirty:
            return
        for group in self.groups:
            self.flush_group(group)
        self._drop_taken()
        self.stats["flushes"] += 1

    def flush_group(self, group: Group) -> None:
        """Turn the messages queued that ``group`` has not taken into frames for its connections, in order: one
        frame per connection, built once per distinct set of streams."""
        parts: dict[Feed, str] = {}
        targets: dict[Connection, list[Feed]] = {}
        for feed in self._dirty:
            members = feed.members.get(group)
            if members is None:
                continue
            queued = feed.log
            taken = feed.taken[group]
            if taken == len(queued):
                continue
            parts[feed] = ",".join(queued[taken:])
            feed.taken[group] = len(queued)
            feed.behind -= 1
            for connection in members:
                found = targets.get(connection)
                if found is None:
                    targets[connection] = [feed]
                else:
                    found.append(feed)
        if not targets:
            return
        frames: dict[Any, tuple[str, bytes]] = {}
        deliveries = self._deliveries
        for connection, feeds in targets.items():
            key = feeds[0] if len(feeds) == 1 else tuple(feeds)
            made = frames.get(key)
            if made is None:
                text = "[" + ",".join(parts[feed] for feed in feeds) + "]"
                made = frames[key] = (text, wire_frame(text))
            deliveries.append((connection, *made))
        self._flush_wanted.set()
        self.stats["frames"] += len(targets)

    def _drop_taken(self) -> None:
        """Start the logs that every group has taken again, empty."""
        done = [feed for feed in self._dirty if feed.behind <= 0]
        for feed in done:
            del self._dirty[feed]
            feed.restart()

    def handed(self, connection: Connection) -> asyncio.Event:
        """An event set once everything queued for ``connection`` so far is handed over to it."""
        event = asyncio.Event()
        self._deliveries.append((connection, event, None))
        self._flush_wanted.set()
        return event

    def send(self, connection: Connection, *messages: str) -> None:
        """Queue a frame for one connection, after what is queued for it already."""
        self._deliveries.append((connection, frame(*messages), None))
        self._flush_wanted.set()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.limits.heartbeat_interval)
            try:
                self.beat()
            except Exception:
                log.exception("sending heartbeats failed")

    def beat(self) -> None:
        """Send each subscribed instrument's heartbeat, after everything queued before it."""
        self.flush()
        ts = now_us()
        for key, feed in self.feeds.items():
            if key[0] == "heartbeat" and feed.members:
                ladder = self.ladders[key[1]]
                self.queue(feed, encode(Heartbeat(key[1], ladder.seq, ladder.level2_seq, ladder.trades_seq, ts)))
            elif key[0] == "index_heartbeat" and feed.members:
                newest = self.indices.get(key[1])
                self.queue(feed, encode(IndexHeartbeat(key[1], None if newest is None else newest.at, ts)))
        self.flush()
        if self.user.feeds:
            self.user.keys_due = True
            self.user.wake.set()

    # Subscriptions

    def subscribe(self, connection: Connection, key: tuple, first: list[str]) -> None:
        """Add ``connection`` to the stream ``key``; ``first`` (the answer, a snapshot) precedes its messages."""
        self.flush()  # whatever is queued now predates the snapshot
        feed = self._feed(key)
        feed.add(connection)
        connection.feeds[key] = feed
        self._feed(heartbeat_key(key)).add(connection)
        self.send(connection, *first)
        if key[0] == "user":
            self.user.add(feed)  # its snapshot follows the answer

    def unsubscribe(self, connection: Connection, key: tuple) -> None:
        feed = connection.feeds.pop(key, None)
        connection.keys.pop(key, None)
        if feed is not None:
            self._leave(feed, connection)
        beat = heartbeat_key(key)
        if not any(heartbeat_key(other) == beat for other in connection.feeds):
            heartbeat = self.feeds.get(beat)
            if heartbeat is not None:
                self._leave(heartbeat, connection)

    def add(self, connection: Connection) -> None:
        """Take ``connection`` in, in the smallest delivery group, or a new one when every group is full."""
        group = min(self.groups, key=lambda g: g.size, default=None)
        if group is None or group.size >= self.limits.delivery_chunk:
            group = Group()
            self.groups.append(group)
        group.size += 1
        connection.group = group
        self.connections.add(connection)
        self.per_address[connection.address] += 1

    def drop(self, connection: Connection) -> None:
        """Forget ``connection`` everywhere."""
        for key in list(connection.feeds):
            self.unsubscribe(connection, key)
        if connection in self.connections:
            self.connections.discard(connection)
            assert connection.group is not None
            connection.group.size -= 1
            self.per_address[connection.address] -= 1
            if self.per_address[connection.address] <= 0:
                del self.per_address[connection.address]

    def _feed(self, key: tuple) -> Feed:
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = Feed(key)
        return feed

    def _leave(self, feed: Feed, connection: Connection) -> None:
        feed.remove(connection)
        if not feed.members:
            del self.feeds[feed.key]
            self._dirty.pop(feed, None)
            feed.restart()
            if feed.key[0] == "user":
                self.user.remove(feed)

    def package_executed(self, account_id: int, symbols: list[str], execution: Execution) -> None:
        """Report a committed package execution to the account's user subscriptions on ``symbols``."""
        for symbol in symbols:
            feed = self.user.get(symbol, account_id)
            if feed is not None:
                ladder = self.ladders.get(symbol)
                self.queue(feed, encode(PackageUpdate("user", symbol, ladder.seq if ladder else 0, execution)))
        self._flush_wanted.set()


def heartbeat_key(key: tuple) -> tuple:
    """The heartbeat stream that accounts for stream ``key``: its instrument's, or its group's."""
    return ("index_heartbeat", key[1]) if key[0] == "index" else ("heartbeat", key[1])
