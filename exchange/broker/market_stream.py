"""The engine's side of the market-data stream: each committed batch to JetStream, its account events and the
committed seqs to the gateways.

Messages (msgpack, ``msgspec`` Structs encoded as arrays)
---------------------------------------------------------
``MarketBatch`` on ``tokex.md.<symbol>`` (stream TOKEX_MD): what one committed batch did to one instrument, its
book events in order (each as ``[kind, *fields]``, ``EVENT_KINDS`` naming the kinds), the ids of its fills, one
per Trade event, and its seq range ``first_seq``..``seq``. An instrument's seq grows by one per command, so the
batches of an instrument follow each other without a hole: the next one's ``first_seq`` is this one's
``seq`` + 1. Header Nats-Msg-Id ``<symbol>:<seq>``: an engine that takes over and publishes a batch again
changes nothing.

``AccountMessage`` on ``tokex.user`` (core NATS): the ``AccountEvents`` of one batch, every account's (a batch
whose events weigh more than ``MAX_ACCOUNT_MESSAGE_BYTES`` is split over several messages), with ``epoch``, drawn
at random when the publisher starts, and ``number``, counting this publisher's account messages from 1. Every
gateway takes every message and so notices a missing number. One message per batch rather than per account: the
cost of a message (a publish, a write's share, a delivery on every gateway) is paid once per batch.

``list[IndexRow]`` on ``tokex.index`` (core NATS): the price index's new rows, from the leader's minute job.

``Settled`` on ``tokex.engine.seqs`` (core NATS), every ``beat_interval`` seconds and after a resync: for each
instrument the highest seq that is settled (in the stream, or never to be: dropped when the queue was full, or
committed by an engine that may not have published it), and the number of the last account message settled
the same way. A gateway behind either for more than a moment missed something and reloads from PostgreSQL;
so a lost last batch is noticed without waiting for the next trade.

Delivery
--------
``publish`` and ``publish_effects`` run in the sequencer's writer task: they only encode and queue. A task sends
the market batches in order, a window of them at a time, each acknowledged by JetStream; on failure (NATS down,
no stream leader) it retries from the first unacknowledged one with backoff, in order, for as long as it takes.
Account messages go out the same way from a queue of their own. Each queue is bounded (``max_pending_bytes``):
beyond it, a new message is dropped and counted settled, and the gateways' gap detection repairs it from
PostgreSQL. ``stop`` sends what is queued for up to ``stop_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque

import asyncpg
import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from exchange.account_events import AccountEvents, account_events
from exchange.broker import subjects
from exchange.database.queries import sql
from exchange.indexer import IndexRow
from exchange.settlement import Effects
from matching import events as ev

log = logging.getLogger(__name__)

INSTRUMENT_SEQS = sql("instrument_seqs")

EVENT_KINDS: tuple[type[ev.Event], ...] = (ev.Accepted, ev.Rejected, ev.Trade, ev.Cancelled, ev.Decremented,
                                           ev.Amended, ev.LevelChanged)
"""Book event classes by their kind number in a ``MarketBatch``: append only, the numbers are on the wire."""
_KIND = {kind: number for number, kind in enumerate(EVENT_KINDS)}


class MarketBatch(msgspec.Struct, frozen=True, array_like=True):
    """One committed batch's book events on one instrument; ``first_seq``..``seq`` are the seqs they carry."""

    symbol: str
    first_seq: int
    seq: int
    events: list[tuple]
    fill_ids: list[int]

    def book_events(self) -> list[ev.Event]:
        """The events as the book made them."""
        kinds = EVENT_KINDS
        return [kinds[kind](*fields) for kind, *fields in self.events]


class AccountMessage(msgspec.Struct, frozen=True, array_like=True):
    """The account events of one batch (or of a part of it), numbered by the publisher of ``epoch``."""

    epoch: int
    number: int
    events: list[AccountEvents]


class Settled(msgspec.Struct, frozen=True, array_like=True):
    """The leading engine's settled seq of every instrument and its last settled account message number."""

    epoch: int
    accounts: int
    seqs: dict[str, int]


encode = msgspec.msgpack.Encoder().encode
decode_batch = msgspec.msgpack.Decoder(MarketBatch).decode
decode_account = msgspec.msgpack.Decoder(AccountMessage).decode
decode_settled = msgspec.msgpack.Decoder(Settled).decode
decode_index = msgspec.msgpack.Decoder(list[IndexRow]).decode

MAX_ACCOUNT_MESSAGE_BYTES = 256 * 1024
"""Above this, a batch's account events are split over several messages: NATS refuses a payload over its limit
(1 MB by default)."""


def market_batches(batch: list[tuple[str, list]], fill_ids: list[int]) -> list[MarketBatch]:
    """Split a committed batch of (symbol, book events) per command into one ``MarketBatch`` per instrument."""
    next_fill = iter(fill_ids).__next__
    split: dict[str, tuple[list, list]] = {}
    kind_of = _KIND
    astuple = msgspec.structs.astuple
    trade = ev.Trade
    for symbol, events in batch:
        found = split.get(symbol)
        if found is None:
            found = split[symbol] = ([], [])
        encoded, fills = found
        for event in events:
            kind = type(event)
            encoded.append((kind_of[kind], *astuple(event)))
            if kind is trade:
                fills.append(next_fill())
    # A command's events share its seq, and an instrument's seqs grow by one per command.
    return [MarketBatch(symbol, encoded[0][1], encoded[-1][1], encoded, fills)
            for symbol, (encoded, fills) in split.items() if encoded]


class _Outbox:
    """Encoded messages waiting to be sent, in order, and what they weigh."""

    def __init__(self, max_bytes: int) -> None:
        self.items: deque[tuple[str, bytes, dict | None, object]] = deque()
        self.bytes = 0
        self.max_bytes = max_bytes
        self.ready = asyncio.Event()
        self.dropped = 0

    def put(self, subject: str, payload: bytes, headers: dict | None, settles: object) -> bool:
        """Queue a message; False (and nothing queued) when the queue is full."""
        if self.bytes + len(payload) > self.max_bytes:
            self.dropped += 1
            return False
        self.items.append((subject, payload, headers, settles))
        self.bytes += len(payload)
        self.ready.set()
        return True

    def pop(self) -> None:
        self.bytes -= len(self.items.popleft()[1])


class _PubAck(msgspec.Struct):
    """JetStream's answer to a publish: the stream's sequence number, or an error."""

    seq: int = 0
    error: dict | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode


class _Acks:
    """Publish a window of messages to JetStream and wait for the stream's acknowledgements, which come to one
    inbox of this publisher's: a message costs one publish and one acknowledgement read, not a request of its own
    (a reply subscription, a future and a timer each)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.inbox = ""
        self._subscription = None
        self._window = 0
        """Numbers the windows, so that a late acknowledgement of an earlier one is ignored."""
        self._acked: list[bool] = []
        self._left = 0
        self._done: asyncio.Future | None = None

    async def start(self) -> None:
        self.inbox = self.nc.new_inbox()
        self._subscription = await self.nc.subscribe(f"{self.inbox}.*.*", cb=self._on_ack)

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def publish(self, window: list[tuple[str, bytes, dict | None, object]], timeout: float) -> tuple[int, str]:
        """Publish ``window`` in order; return how many of it, from the first, the stream stored (or had already),
        and why the next one was not, if one was not."""
        self._window += 1
        prefix = f"{self.inbox}.{self._window}."
        self._acked = [False] * len(window)
        self._left = len(window)
        loop = asyncio.get_running_loop()
        done = self._done = loop.create_future()
        timer = loop.call_later(timeout, _time_out, done)
        failure = ""
        try:
            publish = self.nc.publish
            for position, (subject, payload, headers, _) in enumerate(window):
                await publish(subject, payload, reply=f"{prefix}{position}", headers=headers)
            await done
        except TimeoutError:
            failure = "no acknowledgement in time"
        except Exception as exc:
            failure = type(exc).__name__
        finally:
            timer.cancel()
            self._done = None
        acknowledged = 0
        for acked in self._acked:
            if not acked:
                return acknowledged, failure or "refused by the stream"
            acknowledged += 1
        return acknowledged, ""

    async def _on_ack(self, msg: Msg) -> None:
        _, window, position = msg.subject.rsplit(".", 2)
        if int(window) != self._window or self._done is None:
            return
        try:
            ack = _decode_ack(msg.data)  # a status message (no stream answers: 503) has no body
        except msgspec.DecodeError:
            ack = _PubAck(error={"description": "no stream answered"})
        if ack.error is None:
            self._acked[int(position)] = True
        self._left -= 1
        if self._left == 0 and not self._done.done():
            self._done.set_result(None)


def _time_out(done: asyncio.Future) -> None:
    if not done.done():
        done.set_exception(TimeoutError())


class MarketStreamPublisher:
    """Publish committed market data to JetStream, account events and settled seqs to core NATS (module
    docstring). ``publish``, ``resync`` and ``publish_effects`` are the sequencer's callbacks."""

    def __init__(self, nc: Client, js: JetStreamContext, *, beat_interval: float = 1.0, window: int = 64,
                 publish_timeout: float = 2.0, max_pending_bytes: int = 64 * 1024 * 1024,
                 stop_timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = js
        self.epoch = secrets.randbits(62)
        self.beat_interval = beat_interval
        self.window = window
        self.publish_timeout = publish_timeout
        self.stop_timeout = stop_timeout
        self.settled: dict[str, int] = {}
        """symbol -> the highest seq that is in the stream or never will be"""
        self.accounts_settled = 0
        """The number of the last account message sent or given up."""
        self._accounts_numbered = 0
        self._market = _Outbox(max_pending_bytes)
        self._accounts = _Outbox(max_pending_bytes)
        self._acks = _Acks(nc)
        self._tasks: list[asyncio.Task] = []
        self._index_sends: set[asyncio.Task] = set()

    @property
    def pending(self) -> int:
        """Messages waiting to be sent."""
        return len(self._market.items) + len(self._accounts.items)

    @property
    def dropped(self) -> int:
        """Messages given up because their queue was full."""
        return self._market.dropped + self._accounts.dropped

    async def start(self, conn: asyncpg.Connection) -> None:
        """Make sure the stream exists, announce every instrument's committed seq (read on ``conn``) and start
        sending; ``publish`` may have queued batches already."""
        await subjects.ensure_market_data_stream(self.js)
        await self._acks.start()
        await self.resync(conn)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send_market(), name="market-stream"),
                       loop.create_task(self._send_accounts(), name="account-stream"),
                       loop.create_task(self._beat(), name="market-seqs")]

    async def stop(self) -> None:
        """Send what is queued, for up to ``stop_timeout`` seconds, then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_timeout
        while self.pending and loop.time() < deadline and self._tasks:
            await asyncio.sleep(0.01)
        if self.pending:
            log.warning("market stream: %d messages unsent at shutdown; gateways will reload from the database",
                        self.pending)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._acks.stop()

    # The sequencer's callbacks, in its writer task: encode and queue, never wait.

    def publish(self, batch: list[tuple[str, list]], fill_ids: list[int]) -> None:
        """Queue a committed batch of (symbol, book events), one message per instrument."""
        for market in market_batches(batch, fill_ids):
            settles = (market.symbol, market.seq)
            if not self._market.put(subjects.market_data_subject(market.symbol), encode(market),
                                    {subjects.MSG_ID_HEADER: subjects.market_data_msg_id(market.symbol, market.seq)},
                                    settles):
                self._settle(settles)

    def publish_effects(self, effects: Effects) -> None:
        """Queue the account events of a committed batch, in one message unless they weigh too much."""
        events = account_events(effects)
        if events:
            self._queue_accounts(events)

    def _queue_accounts(self, events: list[AccountEvents]) -> None:
        number = self._accounts_numbered + 1
        payload = encode(AccountMessage(self.epoch, number, events))
        if len(payload) > MAX_ACCOUNT_MESSAGE_BYTES and len(events) > 1:
            half = len(events) // 2
            self._queue_accounts(events[:half])
            self._queue_accounts(events[half:])
            return
        self._accounts_numbered = number
        if not self._accounts.put(subjects.USER_EVENTS, payload, None, number):
            self._settle_account(number)

    def publish_index(self, rows: list[IndexRow]) -> None:
        """Send the price index's new rows (the ``exchange.indexer.Indexer``'s ``publish``)."""
        task = asyncio.get_running_loop().create_task(self._send_index(encode(rows)), name="price-index-rows")
        self._index_sends.add(task)
        task.add_done_callback(self._index_sends.discard)

    async def _send_index(self, payload: bytes) -> None:
        try:
            await self.nc.publish(subjects.PRICE_INDEX, payload)
        except Exception as exc:
            # Once a minute, and the gateways read the latest rows when they start: one lost is a minute stale.
            log.warning("price index rows not sent: %s", exc)

    async def resync(self, conn: asyncpg.Connection) -> None:
        """After a reload (or when taking over): every instrument's committed seq is settled, since what this
        engine cannot know it published never will be, and so is an account message number, for the account
        events of a batch whose commit was in doubt. Tell the gateways at once."""
        for _, symbol, seq in await conn.fetch(INSTRUMENT_SEQS):
            self._settle((symbol, seq))
        self._accounts_numbered += 1
        number = self._accounts_numbered
        # Settled once what is queued before it is: a gateway is not told of a gap before it could see one.
        if not self._accounts.items or not self._accounts.put("", b"", None, number):
            self._settle_account(number)
        await self._announce()

    # Sending

    def _settle_account(self, number: int) -> None:
        if number > self.accounts_settled:
            self.accounts_settled = number

    def _settle(self, settles: tuple[str, int]) -> None:
        symbol, seq = settles
        if seq > self.settled.get(symbol, 0):
            self.settled[symbol] = seq

    async def _send_market(self) -> None:
        outbox = self._market
        items = outbox.items
        backoff = 0.05
        while True:
            if not items:
                outbox.ready.clear()
                await outbox.ready.wait()
                continue
            window = [items[i] for i in range(min(self.window, len(items)))]
            acknowledged, failure = await self._acks.publish(window, self.publish_timeout)
            for _, _, _, settles in window[:acknowledged]:
                outbox.pop()
                self._settle(settles)
            if failure:
                # In order: the first unacknowledged one and those after it go again (a copy that did land is
                # dropped by its id).
                log.warning("market stream: publishing failed (%s); retrying in %.2f s", failure, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            else:
                backoff = 0.05

    async def _send_accounts(self) -> None:
        outbox = self._accounts
        items = outbox.items
        backoff = 0.05
        sent = 0
        while True:
            if not items:
                outbox.ready.clear()
                await outbox.ready.wait()
                continue
            subject, payload, _, number = items[0]
            if subject:
                try:
                    await self.nc.publish(subject, payload)
                except Exception as exc:
                    log.warning("account events: publishing failed (%s); retrying in %.2f s", type(exc).__name__,
                                backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
            outbox.pop()
            self._settle_account(number)
            backoff = 0.05
            sent += 1
            if sent % 256 == 0:
                await asyncio.sleep(0)  # publishing only fills a buffer: a long queue must not hold the loop

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.beat_interval)
            await self._announce()

    async def _announce(self) -> None:
        try:
            await self.nc.publish(subjects.ENGINE_SEQS,
                                  encode(Settled(self.epoch, self.accounts_settled, dict(self.settled))))
        except Exception as exc:
            # The next beat says it again; a gateway misses nothing meanwhile that it cannot notice later.
            log.debug("settled seqs not sent: %s", exc)
