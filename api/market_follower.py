"""A gateway's market view, kept from the engine's stream: the committed view read from PostgreSQL, then each
batch from JetStream, and each account's events (``exchange.broker.market_stream`` describes the messages).

Catching up, never guessing
---------------------------
``start`` notes the stream's last sequence number *before* reading the view, then consumes from the next one.
Whatever the stream held by then was committed before the view was read, so the view has it; what comes after
may or may not be in the view, and the instrument's seq tells: a batch whose ``seq`` is not above the view's is
skipped, one whose ``first_seq`` follows the view's seq is applied through the market view (so the feed sees it
exactly as in one process: same seq, prev_seq and checksums on every gateway), and anything else is a gap.

Gaps
----
A batch that skips seqs, an account message that skips a number or comes from another engine, or the engine's
settled seqs (``tokex.engine.seqs``) ahead of the view for more than ``grace`` seconds: something was lost
(the engine's queue overflowed, a commit was in doubt, an engine took over). The view is then read again from
PostgreSQL (``MarketData.reload``: the feed sends fresh snapshots, and its user channel too); batches that
arrive while it is read are held and applied after it by the same rules.

NATS restarts
-------------
The connection reconnects by itself (``exchange.broker.connection``); the ordered consumer, missing its
heartbeats (``idle_heartbeat``), starts again after the last stream message it delivered, and the core
subscriptions are restored with the connection. What was published while the gateway was away is in the
stream, or noticed by the settled seqs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from api.marketdata import MarketData
from exchange import tasks
from exchange.broker import subjects
from exchange.broker.market_stream import (
    MarketBatch,
    Settled,
    decode_account,
    decode_batch,
    decode_index,
    decode_settled,
)
from exchange.indexer import IndexRow

log = logging.getLogger(__name__)


class MarketFollower:
    """Keep ``market_view`` from the engine's stream, reading it from ``pool`` at the start and after a gap."""

    def __init__(self, nc: Client, js: JetStreamContext, market_view: MarketData, pool: asyncpg.Pool, *,
                 grace: float = 2.0, idle_heartbeat: float = 1.0, max_held: int = 100_000) -> None:
        self.nc = nc
        self.js = js
        self.market = market_view
        self.pool = pool
        self.grace = grace
        self.idle_heartbeat = idle_heartbeat
        self.max_held = max_held
        self.reloads = 0
        """Times the view was read again after a gap."""
        self.applied = 0
        """Batches applied."""
        self._held: list[MarketBatch] | None = None
        """Batches that arrived while the view is read; None when it is not."""
        self._behind: dict[str, float] = {}
        """symbol -> when the settled seqs were first seen ahead of the view"""
        self._accounts_behind: float | None = None
        self._settled: Settled | None = None
        """The engine's last settled seqs received."""
        self._epoch: int | None = None
        self._number = 0
        self._reload = asyncio.Event()
        self._subscriptions: list = []
        self._task: asyncio.Task | None = None
        self.on_index: Callable[[list[IndexRow]], None] | None = None
        """Called with the price index's new rows (the feed's ``Hub.publish_index``)."""

    async def start(self) -> None:
        """Read the view and follow the stream from where it stands."""
        await subjects.ensure_market_data_stream(self.js)
        info = await self.js.stream_info(subjects.MARKET_DATA_STREAM)
        self._held = []
        self._subscriptions = [
            await self.nc.subscribe(subjects.USER_EVENTS, cb=self._on_accounts),
            await self.nc.subscribe(subjects.ENGINE_SEQS, cb=self._on_settled),
            await self.nc.subscribe(subjects.PRICE_INDEX, cb=self._on_index),
            await self.js.subscribe(subjects.MARKET_DATA_SUBJECTS, stream=subjects.MARKET_DATA_STREAM,
                                    cb=self._on_batch, ordered_consumer=True, idle_heartbeat=self.idle_heartbeat,
                                    config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                                          opt_start_seq=info.state.last_seq + 1)),
        ]
        async with self.pool.acquire() as conn:
            await self.market.load(conn)
        self._replay_held()
        self._task = asyncio.get_running_loop().create_task(self._reloader(), name="market-follower")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions = []

    async def _on_index(self, msg: Msg) -> None:
        try:
            rows = decode_index(msg.data)
        except Exception:
            log.exception("market follower: price index rows could not be read")
            return
        if self.on_index is not None:
            self.on_index(rows)

    # Market data

    async def _on_batch(self, msg: Msg) -> None:
        try:
            batch = decode_batch(msg.data)
        except Exception:
            log.exception("market follower: a message on %s could not be read; reloading", msg.subject)
            self._reload.set()
            return
        held = self._held
        if held is not None:
            if len(held) < self.max_held:
                held.append(batch)
            else:
                self._reload.set()  # read again once this reading is done: what overflowed is in it
            return
        self._follow(batch)

    def _follow(self, batch: MarketBatch) -> None:
        view = self.market.books.get(batch.symbol)
        seq = view.seq if view is not None else 0
        if batch.seq <= seq:
            return
        if batch.first_seq != seq + 1:
            log.warning("market follower: %s jumped from seq %d to %d; reloading from the database",
                        batch.symbol, seq, batch.first_seq)
            self._reload.set()
            return
        try:
            self.market.apply([(batch.symbol, batch.book_events())], batch.fill_ids)
        except Exception:
            log.exception("market follower: applying a batch of %s failed; reloading", batch.symbol)
            self._reload.set()
            return
        self.applied += 1

    def _replay_held(self) -> None:
        held, self._held = self._held or [], None
        for batch in held:
            self._follow(batch)

    # Account events and settled seqs

    async def _on_accounts(self, msg: Msg) -> None:
        try:
            message = decode_account(msg.data)
        except Exception:
            log.exception("market follower: a message on %s could not be read; reloading", msg.subject)
            self._reload.set()
            return
        if message.epoch != self._epoch or message.number > self._number + 1:
            if self._epoch is not None:
                log.warning("market follower: account events missed (engine %x message %d after %x %d); reloading",
                            message.epoch, message.number, self._epoch, self._number)
                self._reload.set()
            self._epoch, self._number = message.epoch, message.number
        # Below the last number seen: sent before a settled count this follower took as its start; not a copy.
        self._number = max(self._number, message.number)
        self.market.apply_accounts(message.events)

    async def _on_settled(self, msg: Msg) -> None:
        try:
            settled = decode_settled(msg.data)
        except Exception:
            log.exception("market follower: settled seqs could not be read")
            return
        self._settled = settled
        if self._held is not None:
            return  # the view is being read: it is compared once it is
        now = asyncio.get_running_loop().time()
        books = self.market.books
        behind = self._behind
        for symbol, seq in settled.seqs.items():
            view = books.get(symbol)
            if seq > (view.seq if view is not None else 0):
                since = behind.setdefault(symbol, now)
                if now - since >= self.grace:
                    log.warning("market follower: %s stays behind the engine's seq %d; reloading", symbol, seq)
                    self._reload.set()
            else:
                behind.pop(symbol, None)
        if self._epoch is None:
            self._epoch, self._number = settled.epoch, settled.accounts  # what came before is in the view read
        elif settled.epoch != self._epoch or settled.accounts > self._number:
            if self._accounts_behind is None:
                self._accounts_behind = now
            elif now - self._accounts_behind >= self.grace:
                log.warning("market follower: account events missed (engine %x settled %d, seen %x %d); reloading",
                            settled.epoch, settled.accounts, self._epoch, self._number)
                self._epoch, self._number = settled.epoch, settled.accounts
                self._reload.set()
        else:
            self._accounts_behind = None

    # Reloading

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            self._held = []
            try:
                async with self.pool.acquire() as conn:
                    await self.market.reload(conn)
                    # Counted before the connection goes back (an await): whoever sees the new view sees it counted.
                    self.reloads += 1
            except Exception:
                log.exception("market follower: reading the view failed; retrying")
                self._reload.set()
                await asyncio.sleep(0.5)
                continue
            finally:
                self._replay_held()
            self._behind.clear()
            self._accounts_behind = None
            settled = self._settled
            if settled is not None:
                # Every account message settled before the view was read is in it.
                if settled.epoch != self._epoch:
                    self._epoch, self._number = settled.epoch, settled.accounts
                else:
                    self._number = max(self._number, settled.accounts)
