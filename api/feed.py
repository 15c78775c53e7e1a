"""The market-data feed at ``/v1/ws``: public channels per instrument, and each account's own, over WebSocket.

Requests
--------
The client sends JSON text messages, one per frame, of at most 4 KiB (a larger frame or message closes the
connection with 1009, message too big, before it is read whole):

    {"type": "subscribe", "channel": "level2", "symbol": "DEEPSEEK-V3"}
    {"type": "subscribe", "channel": "candles", "symbol": "DEEPSEEK-V3", "interval": "5m"}
    {"type": "unsubscribe", "channel": "level2", "symbol": "DEEPSEEK-V3"}
    {"type": "subscribe", "channel": "index", "group": "chat-general"}
    {"type": "challenge"}

Channels: ``ticker``, ``level2``, ``trades``, ``candles`` (``interval`` ``1m``, ``5m``, ``1h`` or ``1d``),
``user``, and ``index``, which takes a substitution ``group`` instead of a ``symbol``. An optional ``id`` (number
or string) comes back in the answer, ``subscribed``/``unsubscribed``, ``challenge`` or ``error``. ``level2`` takes
``"snapshot": false`` for a client that starts from the REST book instead.
Subscribing again to a channel one holds answers as the first time (for ``level2``, with a fresh snapshot): that
is how to resync without reconnecting.

Frames
------
Every frame the server sends is a JSON array of one or more messages, in order. Messages are encoded once, and
subscribers with the same subscriptions receive the very same frame. Each message has a ``type``; data messages
also have ``channel`` and ``symbol``, and every message about an instrument carries its ``seq``: the
instrument's sequence number, one per command on that instrument (several events of one command share it),
the same numbering as REST (``GET /v1/instruments/{symbol}/book`` answers with the ``seq`` it reflects) and
heartbeats. Order is kept within a channel of an instrument. Prices and CNY amounts are decimal strings in
yuan, quantities integer lots, ``ts`` microseconds since the epoch (the time of the command).

level2
------
    {"type": "snapshot", "channel": "level2", "symbol": S, "seq": 41, "ts": ...,
     "bids": [["2.17", 163], ["2.16", 172]], "asks": [["2.2", 216]], "checksum": 1428513646}
    {"type": "update", "channel": "level2", "symbol": S, "seq": 44, "prev_seq": 41, "ts": ...,
     "bids": [["2.17", 0]], "asks": [["2.18", 5]], "checksum": 3656971804}

The snapshot is the whole book at ``seq``, best price first. An update carries every level one command
changed, with its new absolute size (0: the level is gone), to apply in the order given; ``prev_seq`` is the
``seq`` of the previous level2 update of the instrument (or the seq the server started at), so commands that
changed no level leave no hole. A client keeps the ``seq`` of its book and, for each update:

1. ``seq`` <= the book's seq: already in the book (after a REST sync or a new snapshot); skip it.
2. ``prev_seq`` > the book's seq: an update was missed; resync.
3. Otherwise apply it, take its ``seq``, and check the checksum; a mismatch means resync.

A heartbeat whose ``level2_seq`` is above the book's seq also means an update was missed. A ``snapshot`` can also
come unasked, to every level2 subscriber, when the exchange has rebuilt its market data from the database (after a
commit whose outcome it could not know): it replaces the book, as the first one did; ticker and candles
subscribers get a fresh message too, and the trades chain goes on from the snapshot's seq. To resync,
subscribe again (a new snapshot follows), or fetch the REST book (seq R) and apply the buffered updates with
``"snapshot": false`` by the same three rules.

**Checksum**: CRC-32 (ISO-HDLC, as zlib's ``crc32`` and PNG), as an unsigned integer, of the ASCII string made
of the best ten bid levels, best first, then ``|``, then the best ten ask levels, best first; each level is
``price:qty`` with the price exactly as the feed writes it, and levels are joined by ``,``. A book with bids
1.85 x 10, 1.84 x 3 and one ask 1.9 x 7 gives ``1.85:10,1.84:3|1.9:7``; an empty book gives ``|``.

trades
------
    {"type": "trades", "channel": "trades", "symbol": S, "seq": 44, "prev_seq": 40, "ts": ...,
     "trades": [{"id": 981, "price": "1.85", "qty": 4, "side": "buy"}]}

One message per command that traded; ``id`` is the trade's id in ``GET /v1/instruments/{symbol}/trades``
and ``side`` the taker's. ``prev_seq`` chains the trades messages as it does level2 updates: a client
holding the last trades ``seq`` it saw (the ``seq`` of its ``subscribed`` answer to start with) skips a message
whose ``seq`` is not above it, and has missed trades when ``prev_seq`` or a heartbeat's ``trades_seq`` is above
it; REST pages with ``order=asc`` and ``cursor`` = the last trade id it has fill the hole.

ticker, candles
---------------
``ticker`` sends best bid and ask, the last trade and the trailing 24 hours (open, high, low, ``change_24h`` =
last - open, volume, notional) on subscribing and after each commit that moved them. ``candles`` sends the
current bin as ``{"type": "candle", ..., "interval": "1m", "candle": {...}}``, the object of
``GET /v1/instruments/{symbol}/candles``, on subscribing and after each commit with trades.

Heartbeats
----------
Every second, for each instrument a connection subscribes to anything of:
``{"type": "heartbeat", "symbol": S, "seq": 57, "level2_seq": 44, "trades_seq": 44, "ts": ...}``: the latest
seq of the instrument and of its last level2 and trades messages, sent after every message it accounts for.

index
-----
    {"type": "index", "channel": "index", "group": G, "index": {"group": G, "at": "2026-11-28T09:31:00Z",
     "value": "2.0875", "stale": false, "trades": 4, "volume_tokens": 50000000, "notional": "105", ...}}

The group's token price index, the object of ``GET /v1/indices``: the newest value on subscribing (none before
the first minute is computed), then each minute as it is computed (after an outage, every minute caught up, in
order). Its answers are ``{"type": "subscribed", "channel": "index", "group": G}`` and ``unsubscribed`` alike.
Every second, for each group a connection subscribes to: ``{"type": "heartbeat", "group": G, "at": ..., "ts":
...}``, ``at`` being that of the group's newest value (null before the first): a client whose newest ``at`` is
older missed a value, which ``GET /v1/indices/{group}/history`` fills in.

user
----
Orders, fills and balances (CNY and the instrument's token) of one's own account on one instrument, the
objects of ``GET /v1/orders``, ``/v1/fills`` and ``/v1/balances``, as ``{"type": "order"|"fill"|"balance",
"channel": "user", "symbol": S, "seq": N, "order"|"fill"|"balance": {...}}``. They are read from the committed
rows after each commit that touched the account's orders (balances also each second, for deposits and
mints); on subscribing the current balances and open orders come first. A routed order's children are orders
like any other. Each period a token package of the account runs is reported, on the user channel of every
instrument of the package's group, as ``{"type": "package_execution", ..., "execution": {...}}``: the object of
``GET /v1/packages/{id}/executions``. The subscribe message is signed as a
REST request is (``api.signing``), with a key holding the ``read`` scope, for this connection only: first ask
for the connection's challenge, a random nonce the server made for it, then sign it as the request's body:

    > {"type": "challenge"}
    < [{"type": "challenge", "nonce": "9f1c0e...(32 hex digits)"}]
    > {"type": "subscribe", "channel": "user", "symbol": S, "key": "tk_...", "timestamp": "1764288000",
       "signature": hex HMAC-SHA256(secret, timestamp + "SUBSCRIBE" + "/v1/ws/user/" + symbol + nonce)}

A captured subscription is of no use on another connection, whose nonce differs. The nonce stays the same for
the connection's life (one challenge serves every user subscription on it); the timestamp must be within the
signing window as for REST.

A revoked key loses its subscriptions within a few seconds (an ``error`` ``key_revoked`` says so).

Limits and errors
-----------------
Bad input gets ``{"type": "error", "code": ..., "detail": ...}`` and changes nothing else: ``malformed_message``
(not JSON, a key given twice in one object, nesting too deep, or a binary frame), ``unknown_type``,
``invalid_message``, ``unknown_channel``, ``unknown_instrument``, ``unknown_interval``, ``message_too_large``
(over a ``max_message_bytes`` set below the server's frame limit), ``too_many_subscriptions``,
``not_subscribed``, ``rate_limited`` (more than ``message_rate`` messages a second), ``unknown_group``
(``index``), and for ``user`` ``unauthenticated``, ``stale_timestamp``, ``invalid_signature``,
``insufficient_scope``. After ``max_errors`` of them the connection is closed with 1008 (policy violation), as
is a connection over ``max_connections_per_address`` (after an error ``too_many_connections``).

Fan-out
-------
``Hub.publish`` is the market view's listener: it runs in the sequencer's writer task after each commit, keeps
its own copy of every book's levels (so each update's checksum is that of the book right after its command),
encodes each message once and queues it on its stream. A flush, at most every ``flush_interval`` seconds, joins
each stream's queued messages into one part and makes one frame per connection from the parts of its streams,
built once per distinct set of streams: subscribers of the same channels get the very same string. The frames
are handed over ``delivery_chunk`` at a time per turn of the event loop, so that commits go on meanwhile; what
is published while they go out waits for the next flush, so a busier hub sends fewer and larger frames. A
flush's frame is also made once as WebSocket bytes and written as it is to each subscriber's socket while the
connection is open and its buffer has room (``Connection.write``, under uvicorn's sans-I/O protocol). Otherwise,
and for frames to one connection, a connection sends one frame at a time, straight to the server's ASGI
``send`` (no task per send; one only when the peer's buffer is full); frames that come while a send waits are
queued and merged into the next one. When
that queue overflows (``max_queue`` frames or ``max_queue_bytes``) the connection is dropped from every stream
and closed with 1013 and a reason: nothing else ever waits for a subscriber. A closing that the peer does not
read within ``close_timeout`` seconds is abandoned to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from sortedcontainers import SortedDict
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from api.marketdata import INSTRUMENT_SEQ, MINUTE_US, Batch, BookView, MarketData
from api.routes_history import Candle, candle, empty_candle
from api.routes_indices import GROUP_LISTED, PriceIndex, price_index
from api.routes_orders import COLUMNS, order_from_row
from api.routes_packages import Execution
from api.schemas import Balance, Fill, Order, asset_amount
from api.services import READ_ERRORS, Services
from api.signing import TIMESTAMP, WINDOW_SECONDS, signature
from api.strictjson import Malformed, check
from api.units import from_micro
from exchange.indexer import IndexRow
from matching import events as ev

log = logging.getLogger(__name__)

CHANNELS = ("ticker", "level2", "trades", "candles", "user", "index")
INTERVAL_MINUTES = {"1m": 1, "5m": 5, "1h": 60, "1d": 1440}
CHECKSUM_DEPTH = 10
# \Z, not $: $ also matches before a final newline.
SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}\Z")
SLOW_CONSUMER = 1013
WS_OPEN = State.OPEN
SERVER_SEND = "tokex.server_send"
POLICY_VIOLATION = 1008
MAX_MESSAGE_BYTES = 4096
"""A client message, and the server's frame limit (``api.server.uvicorn_config``)."""
GOING_AWAY = 1001


@dataclass(frozen=True)
class FeedLimits:
    """What one connection may do and be owed; the defaults suit a public server."""

    max_connections_per_address: int = 50
    max_subscriptions: int = 50
    max_message_bytes: int = MAX_MESSAGE_BYTES
    """Above the server's frame limit this has no effect: a longer frame closes the connection first."""
    message_rate: float = 10.0
    message_burst: float = 30.0
    max_errors: int = 10
    max_queue: int = 256
    """Frames waiting for one connection; a frame holds whatever accumulated during one flush interval."""
    max_queue_bytes: int = 8 * 1024 * 1024
    flush_interval: float = 0.05
    """Seconds between flushes at most. Every flush costs one send per subscriber, which dominates the feed's
    work: at 50 ms a thousand subscribers take a third less of the server than at 20 ms, and the slowest
    messages arrive sooner, because sends no longer queue behind each other."""
    delivery_chunk: int = 64
    """Frames handed over per turn of the event loop."""
    heartbeat_interval: float = 1.0
    close_timeout: float = 5.0


# Requests


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True, kw_only=True):
    channel: str
    symbol: str | None = None
    group: str | None = None
    interval: str | None = None
    snapshot: bool = True
    id: int | str | None = None
    key: str | None = None
    timestamp: str | None = None
    signature: str | None = None


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type", forbid_unknown_fields=True, kw_only=True):
    channel: str
    symbol: str | None = None
    group: str | None = None
    interval: str | None = None
    id: int | str | None = None


class AskChallenge(msgspec.Struct, tag="challenge", tag_field="type", forbid_unknown_fields=True, kw_only=True):
    id: int | str | None = None


decode_request = msgspec.json.Decoder(Subscribe | Unsubscribe | AskChallenge).decode


# Messages


class Message(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


class Subscribed(Message, tag="subscribed"):
    channel: str
    symbol: str
    seq: int
    interval: str | None = None
    id: int | str | None = None


class Unsubscribed(Message, tag="unsubscribed"):
    channel: str
    symbol: str
    interval: str | None = None
    id: int | str | None = None


class Challenge(Message, tag="challenge"):
    nonce: str
    id: int | str | None = None


class ErrorMessage(Message, tag="error"):
    code: str
    detail: str
    id: int | str | None = None


class Snapshot(Message, tag="snapshot"):
    channel: str
    symbol: str
    seq: int
    ts: int
    bids: list[tuple[str, int]]
    asks: list[tuple[str, int]]
    checksum: int


class Update(Message, tag="update"):
    channel: str
    symbol: str
    seq: int
    prev_seq: int
    ts: int
    bids: list[tuple[str, int]]
    asks: list[tuple[str, int]]
    checksum: int


class TradeItem(msgspec.Struct):
    id: int
    price: str
    qty: int
    side: str


class Trades(Message, tag="trades"):
    channel: str
    symbol: str
    seq: int
    prev_seq: int
    ts: int
    trades: list[TradeItem]


class Ticker(Message, tag="ticker"):
    channel: str
    symbol: str
    seq: int
    ts: int
    best_bid: str | None
    best_ask: str | None
    last_price: str | None
    last_qty: int | None
    open_24h: str | None
    high_24h: str | None
    low_24h: str | None
    change_24h: str | None
    volume_24h: int
    notional_24h: str


class CandleUpdate(Message, tag="candle"):
    channel: str
    symbol: str
    interval: str
    seq: int
    ts: int
    candle: Candle


class Heartbeat(Message, tag="heartbeat"):
    symbol: str
    seq: int
    level2_seq: int
    trades_seq: int
    ts: int


class OrderUpdate(Message, tag="order"):
    channel: str
    symbol: str
    seq: int
    order: Order


class FillUpdate(Message, tag="fill"):
    channel: str
    symbol: str
    seq: int
    fill: Fill


class BalanceUpdate(Message, tag="balance"):
    channel: str
    symbol: str
    seq: int
    balance: Balance


class GroupSubscribed(Message, tag="subscribed"):
    channel: str
    group: str
    id: int | str | None = None


class GroupUnsubscribed(Message, tag="unsubscribed"):
    channel: str
    group: str
    id: int | str | None = None


class IndexUpdate(Message, tag="index"):
    channel: str
    group: str
    index: PriceIndex


class IndexHeartbeat(Message, tag="heartbeat"):
    group: str
    at: datetime | None
    ts: int


class PackageUpdate(Message, tag="package_execution"):
    channel: str
    symbol: str
    seq: int
    execution: Execution


_encode = msgspec.json.Encoder().encode


def encode(message: Message) -> str:
    return _encode(message).decode()


def wire_frame(text: str) -> bytes:
    """``text`` as one final, unmasked WebSocket text frame, as a server writes it (no extensions: per-message
    compression is off)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def frame(*messages: str) -> str:
    return "[" + ",".join(messages) + "]"


def checksum_text(bids: list[tuple[str, int]], asks: list[tuple[str, int]]) -> str:
    """The string a level2 checksum is taken of: best ten levels a side, ``price:qty``, bids ``|`` asks."""
    return (",".join(f"{price}:{qty}" for price, qty in bids[:CHECKSUM_DEPTH]) + "|"
            + ",".join(f"{price}:{qty}" for price, qty in asks[:CHECKSUM_DEPTH]))


def checksum(bids: list[tuple[str, int]], asks: list[tuple[str, int]]) -> int:
    """CRC-32 of ``checksum_text``; levels are (decimal price string, lots), best first."""
    return zlib.crc32(checksum_text(bids, asks).encode("ascii"))


def now_us() -> int:
    return time.time_ns() // 1000


# State


class Ladder:
    """One instrument's levels as the feed last published them, and the seq of its last messages."""

    __slots__ = ("asks", "bids", "level2_seq", "prices", "seq", "top", "trades_seq", "ts")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.level2_seq = seq
        self.trades_seq = seq
        self.ts = 0
        self.bids: SortedDict = SortedDict()
        """-price -> lots"""
        self.asks: SortedDict = SortedDict()
        """price -> lots"""
        self.prices: dict[int, str] = {}
        self.top: tuple[int | None, int | None] = (None, None)

    @classmethod
    def of(cls, view: BookView) -> Ladder:
        ladder = cls(view.seq)
        ladder.bids.update(view.bids)
        ladder.asks.update(view.asks)
        ladder.top = ladder.best()
        return ladder

    def set(self, side: str, price: int, total: int) -> None:
        levels, key = (self.bids, -price) if side == "buy" else (self.asks, price)
        if total:
            levels[key] = total
        else:
            levels.pop(key, None)

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

    def best(self) -> tuple[int | None, int | None]:
        return (-self.bids.peekitem(0)[0] if self.bids else None, self.asks.peekitem(0)[0] if self.asks else None)


class Feed:
    """One stream: a channel of an instrument (and an interval or an account); its subscribers and the messages
    queued for the next flush."""

    __slots__ = ("key", "pending", "subscribers")

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.subscribers: set[Connection] = set()
        self.pending: list[str] = []


class FeedError(Exception):
    """A request refused with an error message; ``code`` is stable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Connection:
    """One WebSocket: its subscriptions and the frames it is owed, sent in order, at most one send at a time."""

    __slots__ = ("address", "bucket", "close_reason", "done", "draining", "errors", "feeds", "hub", "idle", "keys",
                 "nonce", "protocol", "queue", "queued", "send", "sending", "websocket")

    def __init__(self, hub: Hub, websocket: WebSocket, send: Send, address: str) -> None:
        self.hub = hub
        self.websocket = websocket
        self.send = send
        """The server's ASGI ``send``: data frames go to it without starlette's per-message checks."""
        server_send = getattr(websocket.scope.get(SERVER_SEND), "__self__", None)
        self.protocol = server_send if isinstance(server_send, WebSocketsSansIOProtocol) else None
        """uvicorn's sans-I/O WebSocket protocol, when the server is that (``KeepServerSend``): see ``write``."""
        self.address = address
        self.feeds: dict[tuple, Feed] = {}
        self.keys: dict[tuple, str] = {}
        """user feed key -> the API key that authorized it"""
        self.queue: list[str] = []
        """Frames waiting while a send is blocked (the peer reads slower than it is sent to)."""
        self.queued = 0
        self.sending: asyncio.Task | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.done = asyncio.Event()
        self.close_reason: tuple[int, str] | None = None
        self.draining = False
        self.errors = 0
        self.bucket = [hub.limits.message_burst, time.monotonic()]
        self.nonce = secrets.token_hex(16)
        """This connection's challenge: user subscriptions sign it, so that they are good on no other."""

    def put(self, text: str | asyncio.Event, wire: bytes | None = None) -> None:
        """Send one frame now, or queue it behind a send that waits; overflowing the queue closes the connection.
        ``wire`` is the frame as ``wire_frame`` makes it, when the caller has it. An event instead of a frame is
        set: everything queued for the connection before it has been put."""
        if type(text) is not str:
            text.set()
            return
        if self.close_reason is not None and not self.draining:
            return
        if self.sending is None:
            if wire is None or not self.write(wire):
                self._start(text)
            return
        queue = self.queue
        queue.append(text)
        self.queued += len(text)
        limits = self.hub.limits
        if len(queue) > limits.max_queue or self.queued > limits.max_queue_bytes:
            self.hub.stats["slow_consumer_closes"] += 1
            self.close(SLOW_CONSUMER, f"slow consumer: {len(queue)} frames ({self.queued} bytes) waiting; "
                                      "reconnect and resync")

    def write(self, wire: bytes) -> bool:
        """Write a ready frame straight to the socket, if the connection is open and its buffer has room.

        The flush sends the very same frame to every subscriber of the same streams: made once (``wire_frame``)
        and written as it is, it skips the server's per-send framing, which was most of the feed's cost. This
        needs the sans-I/O protocol's state (handshake done, no close sent, buffer not full), so any other server
        or state takes the ASGI ``send`` instead, which waits when it must.
        """
        protocol = self.protocol
        if (protocol is None or not protocol.handshake_complete or protocol.close_sent or protocol.disconnected
                or not protocol.writable.is_set() or protocol.conn.state is not WS_OPEN
                or protocol.transport.is_closing()):
            return False
        protocol.transport.write(wire)
        return True

    def _start(self, text: str) -> None:
        try:
            waiting = send_eagerly(self.send, {"type": "websocket.send", "text": text})
        except (OSError, RuntimeError):
            self.close(1000, "")
            return
        if waiting is not None:
            self.sending = waiting
            self.idle.clear()
            waiting.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task) -> None:
        self.sending = None
        if task.cancelled():
            self.idle.set()
            return
        if task.exception() is not None:
            self.close(1000, "")
            self.idle.set()
            return
        frames = self.queue
        if frames:
            self.queue = []
            self.queued = 0
            self._start(frames[0] if len(frames) == 1 else "[" + ",".join(f[1:-1] for f in frames) + "]")
        if self.sending is None:
            self.idle.set()

    def close(self, code: int, reason: str, drain: bool = False) -> None:
        """Have the connection closed with ``code``, after what is queued when ``drain``, else at once; the hub
        forgets it now."""
        if self.close_reason is not None:
            return
        self.close_reason = (code, reason)
        self.draining = drain
        if not drain:
            self.queue = []
            self.queued = 0
            if self.sending is not None:
                self.sending.cancel()
        self.hub.drop(self)
        self.done.set()

    def take_token(self) -> bool:
        limits = self.hub.limits
        now = time.monotonic()
        tokens = min(limits.message_burst, self.bucket[0] + (now - self.bucket[1]) * limits.message_rate)
        self.bucket[1] = now
        if tokens < 1.0:
            self.bucket[0] = tokens
            return False
        self.bucket[0] = tokens - 1.0
        return True


def send_eagerly(send: Send, message: dict) -> asyncio.Task | None:
    """Run ``send(message)`` now, in the caller's task; None when it finished, else the task that finishes it.

    A send finishes at once unless the connection's write buffer is full, so a task per send would only cost
    time: this is what Python 3.12 calls an eager task start, done by hand.
    """
    coroutine = send(message)
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coroutine, waiting))


async def _resume(coroutine, waiting) -> None:
    """Drive a coroutine that yielded ``waiting`` on to its end."""
    try:
        while True:
            try:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    waiting._asyncio_future_blocking = False  # taken in hand, as a task does with what it is yielded
                    await waiting
            except BaseException as exc:  # cancelled, most likely: let the coroutine clean up
                waiting = coroutine.throw(exc)
                continue
            waiting = coroutine.send(None)
    except StopIteration:
        return


@dataclass
class UserJob:
    """What committed batches changed for the user channel of one instrument: orders, and a range of fill ids."""

    seq: int = 0
    order_ids: set[int] = field(default_factory=set)
    first_fill: int = 0
    last_fill: int = 0


USER_ORDERS = f"""
SELECT o.account_id, {COLUMNS} FROM book_order o JOIN instrument i ON i.id = o.instrument_id
WHERE o.id = ANY($1::bigint[]) AND o.account_id = ANY($2::bigint[])
ORDER BY o.id
"""
USER_OPEN_ORDERS = f"""
SELECT o.account_id, {COLUMNS} FROM book_order o JOIN instrument i ON i.id = o.instrument_id
WHERE o.account_id = $1 AND i.symbol = $2 AND o.status = 'open'
ORDER BY o.id
"""
USER_FILLS = """
SELECT f.id, f.maker_order_id, f.taker_order_id, f.maker_account_id, f.taker_account_id, f.taker_side, f.price,
       f.qty, f.maker_fee, f.taker_fee, f.seq, f.created_at
FROM fill f JOIN instrument i ON i.id = f.instrument_id
WHERE f.id BETWEEN $1 AND $2 AND i.symbol = $3
  AND (f.maker_account_id = ANY($4::bigint[]) OR f.taker_account_id = ANY($4::bigint[]))
ORDER BY f.id
"""
USER_BALANCES = """
SELECT account_id, asset, available, held FROM balance
WHERE account_id = ANY($1::bigint[]) AND asset = ANY($2::text[])
"""
LIVE_KEYS = "SELECT id FROM api_key WHERE id = ANY($1::text[]) AND revoked_at IS NULL"


class Hub:
    """Every connection and subscription, the books as published, and the tasks that flush, beat and read the
    user channel's rows. ``publish`` is a ``MarketData`` listener."""

    def __init__(self, market: MarketData, limits: FeedLimits | None = None) -> None:
        self.market = market
        self.limits = limits or FeedLimits()
        self.ladders: dict[str, Ladder] = {symbol: Ladder.of(view) for symbol, view in market.books.items()}
        self.feeds: dict[tuple, Feed] = {}
        self.connections: set[Connection] = set()
        self.per_address: Counter[str] = Counter()
        self.user_feeds: dict[str, dict[int, Feed]] = {}
        self.last_fill_id = market.last_fill_id
        """The id of the newest fill published: after a ``resync``, the user channel reads the ones after it."""
        self.services: Services | None = None
        self._dirty: list[Feed] = []
        self._deliveries: deque[tuple[Connection, str | asyncio.Event, bytes | None]] = deque()
        self._flush_wanted = asyncio.Event()
        self._last_flush = 0.0
        self._user_jobs: dict[str, UserJob] = {}
        self._user_initial: list[tuple[str, int]] = []
        self._user_poll = False
        self._user_wake = asyncio.Event()
        self._balances: dict[tuple, dict[str, tuple[int, int]]] = {}
        """user feed key -> asset -> the (available, held) last sent"""
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
                       loop.create_task(self._user_worker(), name="feed-user")]

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
            job = None
            if symbol in self.user_feeds:
                job = self._user_jobs.get(symbol)
                if job is None:
                    job = self._user_jobs[symbol] = UserJob()
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
                    fill_id = next_fill()
                    trades.append((fill_id, event))
                    traded = True
                    if job is not None:
                        job.order_ids.update((event.maker_order_id, event.taker_order_id))
                        job.first_fill = job.first_fill or fill_id
                        job.last_fill = fill_id
                elif job is not None and kind is not ev.Rejected:
                    job.order_ids.add(event.order_id)
            if seq >= 0:
                self._emit(symbol, ladder, seq, ts, levels, trades)
                touched[symbol] = traded
                if job is not None:
                    job.seq = ladder.seq
        if fill_ids:
            self.last_fill_id = fill_ids[-1]
        for symbol, traded in touched.items():
            self._after_batch(symbol, self.ladders[symbol], traded)
        if self._user_jobs:
            self._user_wake.set()
        self._flush_wanted.set()

    def resync(self) -> None:
        """Start again from the market view, which was just read anew from the database (``MarketData.reload``):
        the sequencer could not tell whether a batch committed, or a publish failed partway.

        Every book's ladder is made again from the view, at the view's seq, as at start-up: each level2
        subscriber gets a fresh snapshot (the next update's ``prev_seq`` is its seq), each ticker and candles
        subscriber a fresh message, and trades and heartbeats continue from that seq, so a client whose last
        trades seq is below it fetches the trades it missed over REST. The user channel sends each subscriber's
        balances and open orders again, and the fills committed after the last one published.
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
                self._queue(feed, encode(Snapshot("level2", symbol, ladder.seq, ladder.ts, bids, asks,
                                                  checksum(bids, asks))))
            elif key[0] == "ticker":
                self._queue(feed, self._ticker(symbol, ladder))
            else:
                self._queue(feed, self._candle(symbol, ladder, key[2]))
        missed = (self.last_fill_id + 1, self.market.last_fill_id)
        self.last_fill_id = max(self.last_fill_id, self.market.last_fill_id)
        for symbol, accounts in self.user_feeds.items():
            self._user_initial.extend((symbol, account_id) for account_id in accounts)
            if missed[0] <= missed[1]:
                job = self._user_jobs.setdefault(symbol, UserJob())
                merge(job, UserJob(self.ladders[symbol].seq, set(), *missed))
        if self.user_feeds:
            self._user_wake.set()
        self._flush_wanted.set()

    def _emit(self, symbol: str, ladder: Ladder, seq: int, ts: int, levels: list[ev.LevelChanged],
              trades: list[tuple[int, ev.Trade]]) -> None:
        if seq > ladder.seq:
            ladder.seq = seq
        ladder.ts = ts
        feeds = self.feeds
        if levels:
            for event in levels:
                ladder.set(event.side, event.price, event.total)
            feed = feeds.get(("level2", symbol))
            if feed is not None:
                price = ladder.price
                bids = [(price(e.price), e.total) for e in levels if e.side == "buy"]
                asks = [(price(e.price), e.total) for e in levels if e.side != "buy"]
                self._queue(feed, encode(Update("level2", symbol, seq, ladder.level2_seq, ts, bids, asks,
                                                ladder.checksum())))
            ladder.level2_seq = seq
        if trades:
            feed = feeds.get(("trades", symbol))
            if feed is not None:
                price = ladder.price
                items = [TradeItem(fill_id, price(t.price), t.qty, t.taker_side) for fill_id, t in trades]
                self._queue(feed, encode(Trades("trades", symbol, seq, ladder.trades_seq, ts, items)))
            ladder.trades_seq = seq

    def _after_batch(self, symbol: str, ladder: Ladder, traded: bool) -> None:
        top = ladder.best()
        moved = top != ladder.top
        ladder.top = top
        feed = self.feeds.get(("ticker", symbol))
        if feed is not None and (moved or traded):
            self._queue(feed, self._ticker(symbol, ladder))
        if traded:
            for interval in INTERVAL_MINUTES:
                feed = self.feeds.get(("candles", symbol, interval))
                if feed is not None:
                    self._queue(feed, self._candle(symbol, ladder, interval))

    def publish_index(self, rows: list[IndexRow]) -> None:
        """Queue newly computed price index rows, oldest first; the ``exchange.indexer.Indexer``'s ``publish``."""
        for row in rows:
            group = row.substitution_group
            newest = self.indices.get(group)
            if newest is None or row.at > newest.at:
                self.indices[group] = row
            feed = self.feeds.get(("index", group))
            if feed is not None:
                self._queue(feed, encode(IndexUpdate("index", group, price_index(row))))
        self._flush_wanted.set()

    def _queue(self, feed: Feed, message: str) -> None:
        if not feed.pending:
            self._dirty.append(feed)
        feed.pending.append(message)

    def _ticker(self, symbol: str, ladder: Ladder) -> str:
        view = self.market.books.get(symbol)
        bid, ask = ladder.best()
        last_price = last_qty = None
        open_ = high = low = None
        volume = notional = 0
        if view is not None:
            last_price, last_qty = view.last_price, view.last_qty
            open_, high, low, volume, notional = view.day(now_us() // MINUTE_US)
        change = None if last_price is None or open_ is None else from_micro(last_price - open_)
        return encode(Ticker("ticker", symbol, ladder.seq, ladder.ts, _price(bid), _price(ask), _price(last_price),
                             last_qty, _price(open_), _price(high), _price(low), change, volume,
                             from_micro(notional)))

    def _candle(self, symbol: str, ladder: Ladder, interval: str) -> str:
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
        loop = asyncio.get_running_loop()
        interval = self.limits.flush_interval
        chunk = self.limits.delivery_chunk
        deliveries = self._deliveries
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            try:
                if self._dirty:
                    wait = self._last_flush + interval - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    self._last_flush = loop.time()
                    self.flush()
                # A few sends per turn of the loop, so that the sequencer's commits go on meanwhile. What is
                # published while they go out waits for the next flush: the busier, the fewer and larger the frames.
                while deliveries:
                    for _ in range(min(chunk, len(deliveries))):
                        connection, text, wire = deliveries.popleft()
                        connection.put(text, wire)
                    if deliveries:
                        await asyncio.sleep(0)
            except Exception:
                log.exception("flushing the feed failed")

    def flush(self) -> None:
        """Turn every queued message into frames for its subscribers, in order: one frame per connection, built
        once per distinct set of streams. The flusher hands them over."""
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        parts: dict[Feed, str] = {}
        targets: dict[Connection, list[Feed]] = {}
        for feed in dirty:
            if not feed.pending:
                continue
            parts[feed] = ",".join(feed.pending)
            feed.pending = []
            for connection in feed.subscribers:
                found = targets.get(connection)
                if found is None:
                    targets[connection] = [feed]
                else:
                    found.append(feed)
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
        self.stats["flushes"] += 1
        self.stats["frames"] += len(targets)

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
            if key[0] == "heartbeat" and feed.subscribers:
                ladder = self.ladders[key[1]]
                self._queue(feed, encode(Heartbeat(key[1], ladder.seq, ladder.level2_seq, ladder.trades_seq, ts)))
            elif key[0] == "index_heartbeat" and feed.subscribers:
                newest = self.indices.get(key[1])
                self._queue(feed, encode(IndexHeartbeat(key[1], None if newest is None else newest.at, ts)))
        self.flush()
        if self.user_feeds:
            self._user_poll = True
            self._user_wake.set()

    # Subscriptions

    def subscribe(self, connection: Connection, key: tuple, first: list[str]) -> None:
        """Add ``connection`` to the stream ``key``; ``first`` (the answer, a snapshot) precedes its messages."""
        self.flush()  # whatever is queued now predates the snapshot
        feed = self._feed(key)
        feed.subscribers.add(connection)
        connection.feeds[key] = feed
        self._feed(heartbeat_key(key)).subscribers.add(connection)
        if key[0] == "user":
            self.user_feeds.setdefault(key[1], {})[key[2]] = feed
        self.send(connection, *first)

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

    def drop(self, connection: Connection) -> None:
        """Forget ``connection`` everywhere."""
        for key in list(connection.feeds):
            self.unsubscribe(connection, key)
        if connection in self.connections:
            self.connections.discard(connection)
            self.per_address[connection.address] -= 1
            if self.per_address[connection.address] <= 0:
                del self.per_address[connection.address]

    def _feed(self, key: tuple) -> Feed:
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = Feed(key)
        return feed

    def _leave(self, feed: Feed, connection: Connection) -> None:
        feed.subscribers.discard(connection)
        if not feed.subscribers:
            del self.feeds[feed.key]
            feed.pending = []
            if feed.key[0] == "user":
                self._balances.pop(feed.key, None)
                users = self.user_feeds.get(feed.key[1], {})
                users.pop(feed.key[2], None)
                if not users:
                    self.user_feeds.pop(feed.key[1], None)

    # The endpoint

    async def serve(self, websocket: WebSocket, send: Send) -> None:
        """Run one connection until it closes; ``send`` is the ASGI send ``websocket`` was made with."""
        address = websocket.client.host if websocket.client else "unknown"
        await websocket.accept()
        if self.per_address[address] >= self.limits.max_connections_per_address:
            reason = f"too many connections from {address} (at most {self.limits.max_connections_per_address})"
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
                await websocket.send_text(frame(encode(ErrorMessage("too_many_connections", reason))))
                await asyncio.wait_for(websocket.close(POLICY_VIOLATION, reason), self.limits.close_timeout)
            return
        connection = Connection(self, websocket, send, address)
        self.connections.add(connection)
        self.per_address[address] += 1
        try:
            await self._receive(connection)
        finally:
            connection.close(1000, "")  # unless closed already
            code, reason = connection.close_reason or (1000, "")
            if code != 1000:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
                    await asyncio.wait_for(self._close(connection, code, reason), self.limits.close_timeout)
            if connection.sending is not None:
                connection.sending.cancel()

    async def _close(self, connection: Connection, code: int, reason: str) -> None:
        if connection.draining:
            handed = asyncio.Event()
            self._deliveries.append((connection, handed, None))
            self._flush_wanted.set()
            await handed.wait()
            await connection.idle.wait()
        await connection.websocket.close(code, reason)

    async def _receive(self, connection: Connection) -> None:
        websocket = connection.websocket
        done = asyncio.ensure_future(connection.done.wait())
        try:
            while connection.close_reason is None:
                receiving = asyncio.ensure_future(websocket.receive())
                await asyncio.wait((receiving, done), return_when=asyncio.FIRST_COMPLETED)
                if connection.close_reason is not None or not receiving.done():
                    receiving.cancel()
                    return
                message = receiving.result()
                if message["type"] == "websocket.disconnect":
                    connection.close(1000, "")
                    return
                self.stats["requests"] += 1
                await self.handle(connection, message)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            done.cancel()

    async def handle(self, connection: Connection, message: dict) -> None:
        """Answer one client message."""
        request_id = None
        try:
            text = message.get("text")
            if text is None:
                raise FeedError("malformed_message", "Send JSON in text frames.")
            if len(text) > self.limits.max_message_bytes:
                raise FeedError("message_too_large", f"A message may be at most {self.limits.max_message_bytes} "
                                                     "bytes.")
            if not connection.take_token():
                raise FeedError("rate_limited", f"At most {self.limits.message_rate:g} messages a second.")
            request = parse(text)
            request_id = request.id
            if isinstance(request, Subscribe):
                await self._subscribe(connection, request)
            elif isinstance(request, Unsubscribe):
                self._unsubscribe(connection, request)
            else:
                self.send(connection, encode(Challenge(connection.nonce, request.id)))
        except FeedError as error:
            self._refuse(connection, error, request_id)
        except Exception:
            log.exception("a feed request failed")
            self._refuse(connection, FeedError("internal_error", "The server failed to answer; nothing changed."),
                         request_id)

    def _refuse(self, connection: Connection, error: FeedError, request_id: int | str | None) -> None:
        connection.errors += 1
        self.stats["errors"] += 1
        self.send(connection, encode(ErrorMessage(error.code, error.detail, request_id)))
        if connection.errors >= self.limits.max_errors:
            connection.close(POLICY_VIOLATION, f"{connection.errors} bad messages", drain=True)

    async def _subscribe(self, connection: Connection, request: Subscribe) -> None:
        channel, symbol, interval = request.channel, request.symbol, request.interval
        key = stream_key(channel, symbol, interval, request.group)
        held = next((k for k in connection.feeds if k[:2] == key), None) if channel == "user" else key
        if held not in connection.feeds and len(connection.feeds) >= self.limits.max_subscriptions:
            raise FeedError("too_many_subscriptions", f"At most {self.limits.max_subscriptions} subscriptions on "
                                                      "one connection.")
        if channel == "index":
            await self._subscribe_index(connection, key, request.id)
            return
        assert symbol is not None
        ladder = await self._ladder(symbol)
        api_key = None
        if channel == "user":
            api_key, account_id = await self._authorize(request, connection.nonce)
            if connection.close_reason is not None:
                return
            if held is not None:
                self.unsubscribe(connection, held)  # one account's channel per instrument and connection
            key = ("user", symbol, account_id)
        first = [encode(Subscribed(channel, symbol, ladder.seq, interval, request.id))]
        if channel == "level2" and request.snapshot:
            bids, asks = ladder.levels()
            first.append(encode(Snapshot("level2", symbol, ladder.seq, ladder.ts, bids, asks,
                                         checksum(bids, asks))))
        elif channel == "ticker":
            first.append(self._ticker(symbol, ladder))
        elif channel == "candles":
            assert interval is not None
            first.append(self._candle(symbol, ladder, interval))
        self.subscribe(connection, key, first)
        if api_key is not None:
            connection.keys[key] = api_key
            self._user_initial.append((symbol, key[2]))
            self._user_wake.set()

    def _unsubscribe(self, connection: Connection, request: Unsubscribe) -> None:
        key = stream_key(request.channel, request.symbol, request.interval, request.group)
        if key[0] == "user":
            key = next((k for k in connection.feeds if k[:2] == key), key)
        if key not in connection.feeds:
            raise FeedError("not_subscribed", "This connection does not subscribe to that.")
        self.unsubscribe(connection, key)
        if key[0] == "index":
            self.send(connection, encode(GroupUnsubscribed("index", key[1], request.id)))
            return
        assert request.symbol is not None
        self.send(connection, encode(Unsubscribed(request.channel, request.symbol, request.interval, request.id)))

    async def _subscribe_index(self, connection: Connection, key: tuple, request_id: int | str | None) -> None:
        group = key[1]
        if group not in self.indices:
            assert self.services is not None
            try:
                async with self.services.connection() as conn:
                    listed = await conn.fetchval(GROUP_LISTED, group)
            except READ_ERRORS:
                raise FeedError("unavailable", "The exchange cannot look that group up now; try again.") from None
            if not listed:
                raise FeedError("unknown_group", f"No compute instrument has the substitution group {group!r}; "
                                                 "GET /v1/instruments shows each one's group.")
        first = [encode(GroupSubscribed("index", group, request_id))]
        newest = self.indices.get(group)
        if newest is not None:
            first.append(encode(IndexUpdate("index", group, price_index(newest))))
        self.subscribe(connection, key, first)

    async def _ladder(self, symbol: str) -> Ladder:
        ladder = self.ladders.get(symbol)
        if ladder is not None:
            return ladder
        if not SYMBOL.match(symbol):
            raise FeedError("unknown_instrument", f"No instrument {symbol!r}; list them with GET /v1/instruments.")
        assert self.services is not None
        try:
            async with self.services.connection() as conn:
                seq = await conn.fetchval(INSTRUMENT_SEQ, symbol)
        except READ_ERRORS:
            raise FeedError("unavailable", "The exchange cannot look that instrument up now; try again.") from None
        if seq is None:
            raise FeedError("unknown_instrument", f"No instrument {symbol!r}; list them with GET /v1/instruments.")
        # Listed since start-up and never traded (a batch may have added it meanwhile).
        ladder = self.ladders.get(symbol)
        if ladder is None:
            ladder = self.ladders[symbol] = Ladder(max(seq, self.market.known(symbol, seq).seq))
        return ladder

    async def _authorize(self, request: Subscribe, nonce: str) -> tuple[str, int]:
        """The key and account of a user subscription correctly signed for the connection of ``nonce``."""
        if not (request.key and request.timestamp and request.signature):
            raise FeedError("unauthenticated", "Sign the user subscription: key, timestamp and signature.")
        now = time.time()
        if not TIMESTAMP.fullmatch(request.timestamp) or abs(now - float(request.timestamp)) > WINDOW_SECONDS:
            raise FeedError("stale_timestamp", f"timestamp must be Unix seconds within {WINDOW_SECONDS} s of the "
                                               f"server's clock (now {int(now)}).")
        assert self.services is not None
        try:
            found = await self.services.keys.find(request.key)
        except READ_ERRORS:
            raise FeedError("unavailable", "Keys cannot be checked now; try again.") from None
        if found is not None:
            principal, secret = found
            expected = signature(secret, request.timestamp, "SUBSCRIBE", user_target(request.symbol), nonce.encode())
            if hmac.compare_digest(expected.encode(), request.signature.encode("utf-8", "replace")):
                if "read" not in principal.scopes:
                    raise FeedError("insufficient_scope", "The user channel needs a key with the read scope.")
                return principal.key_id, principal.account_id
        raise FeedError("invalid_signature", "The key is unknown or revoked, or the signature does not match "
                                             "HMAC-SHA256(secret, timestamp + \"SUBSCRIBE\" + \"/v1/ws/user/\" + "
                                             "symbol + nonce), the nonce being this connection's challenge: send "
                                             "{\"type\": \"challenge\"} to get it.")

    # The user channel: committed rows, read in one task so that what it sends never goes back in time

    async def _user_worker(self) -> None:
        while True:
            await self._user_wake.wait()
            self._user_wake.clear()
            jobs, self._user_jobs = self._user_jobs, {}
            initial, self._user_initial = self._user_initial, []
            poll, self._user_poll = self._user_poll, False
            assert self.services is not None
            try:
                async with self.services.connection() as conn:
                    if poll:
                        await self._check_keys(conn)
                    await self._user_round(conn, jobs, initial, poll)
            except READ_ERRORS as exc:
                log.warning("user channel: database unavailable (%s); retrying", type(exc).__name__)
                for symbol, job in jobs.items():
                    merge(self._user_jobs.setdefault(symbol, UserJob()), job)
                self._user_initial[:0] = initial
                self._user_poll = self._user_poll or poll
                await asyncio.sleep(1.0)
                self._user_wake.set()
            except Exception:
                log.exception("user channel round failed")
            self.flush()

    async def _check_keys(self, conn) -> None:
        """Drop the user subscriptions of keys revoked since they were made."""
        held = {key_id for connection in self.connections for key_id in connection.keys.values()}
        if not held:
            return
        live = {row[0] for row in await conn.fetch(LIVE_KEYS, sorted(held))}
        for connection in list(self.connections):
            for key, key_id in list(connection.keys.items()):
                if key_id not in live and key in connection.feeds:
                    self.unsubscribe(connection, key)
                    self.send(connection, encode(ErrorMessage(
                        "key_revoked", f"The key of the user subscription on {key[1]} was revoked.")))

    async def _user_round(self, conn, jobs: dict[str, UserJob], initial: list[tuple[str, int]], poll: bool) -> None:
        balances: dict[tuple[int, str], tuple[int, int]] = {}
        for symbol, account_id in initial:
            feed = self.user_feeds.get(symbol, {}).get(account_id)
            if feed is None:
                continue
            seq = self.ladders[symbol].seq
            for row in await conn.fetch(USER_BALANCES, [account_id], ["CNY", symbol]):
                balances[(account_id, row["asset"])] = (row["available"], row["held"])
            for asset in ("CNY", symbol):
                self._send_balance(feed, symbol, seq, asset, balances.get((account_id, asset), (0, 0)), force=True)
            for row in await conn.fetch(USER_OPEN_ORDERS, account_id, symbol):
                self._queue(feed, encode(OrderUpdate("user", symbol, seq, order_from_row(row))))
        for symbol, job in jobs.items():
            feeds = self.user_feeds.get(symbol)
            if not feeds:
                continue
            accounts = list(feeds)
            if job.order_ids:
                for row in await conn.fetch(USER_ORDERS, list(job.order_ids), accounts):
                    feed = feeds.get(row["account_id"])
                    if feed is not None:
                        self._queue(feed, encode(OrderUpdate("user", symbol, job.seq, order_from_row(row))))
            if job.first_fill:
                for row in await conn.fetch(USER_FILLS, job.first_fill, job.last_fill, symbol, accounts):
                    for role, account_id, order_id, side, fee in (
                            ("maker", row["maker_account_id"], row["maker_order_id"],
                             "sell" if row["taker_side"] == "buy" else "buy", row["maker_fee"]),
                            ("taker", row["taker_account_id"], row["taker_order_id"], row["taker_side"],
                             row["taker_fee"])):
                        feed = feeds.get(account_id)
                        if feed is not None:
                            fill = Fill(row["id"], order_id, symbol, side, role, from_micro(row["price"]), row["qty"],
                                        from_micro(fee), row["seq"], row["created_at"])
                            self._queue(feed, encode(FillUpdate("user", symbol, row["seq"], fill)))
        symbols = set(jobs) if not poll else set(self.user_feeds)
        wanted = [(symbol, account_id) for symbol in symbols for account_id in self.user_feeds.get(symbol, {})]
        if not wanted:
            return
        accounts = sorted({account_id for _, account_id in wanted})
        assets = sorted({"CNY", *(symbol for symbol, _ in wanted)})
        for row in await conn.fetch(USER_BALANCES, accounts, assets):
            balances[(row["account_id"], row["asset"])] = (row["available"], row["held"])
        for symbol, account_id in wanted:
            feed = self.user_feeds.get(symbol, {}).get(account_id)
            if feed is None:
                continue
            seq = self.ladders[symbol].seq
            for asset in ("CNY", symbol):
                self._send_balance(feed, symbol, seq, asset, balances.get((account_id, asset), (0, 0)))

    def package_executed(self, account_id: int, symbols: list[str], execution: Execution) -> None:
        """Report a committed package execution to the account's user subscriptions on ``symbols``."""
        for symbol in symbols:
            feed = self.user_feeds.get(symbol, {}).get(account_id)
            if feed is not None:
                ladder = self.ladders.get(symbol)
                self._queue(feed, encode(PackageUpdate("user", symbol, ladder.seq if ladder else 0, execution)))
        self._flush_wanted.set()

    def _send_balance(self, feed: Feed, symbol: str, seq: int, asset: str, amounts: tuple[int, int],
                      force: bool = False) -> None:
        sent = self._balances.setdefault(feed.key, {})
        if not force and sent.get(asset) == amounts:
            return
        sent[asset] = amounts
        balance = Balance(asset, asset_amount(asset, amounts[0]), asset_amount(asset, amounts[1]))
        self._queue(feed, encode(BalanceUpdate("user", symbol, seq, balance)))


def merge(into: UserJob, job: UserJob) -> None:
    into.seq = max(into.seq, job.seq)
    into.order_ids.update(job.order_ids)
    if job.first_fill:
        into.first_fill = min(into.first_fill or job.first_fill, job.first_fill)
        into.last_fill = max(into.last_fill, job.last_fill)


def _price(value: int | None) -> str | None:
    return None if value is None else from_micro(value)


def user_target(symbol: str) -> str:
    """What a user subscription signs in place of a request's path."""
    return f"/v1/ws/user/{symbol}"


def heartbeat_key(key: tuple) -> tuple:
    """The heartbeat stream that accounts for stream ``key``: its instrument's, or its group's."""
    return ("index_heartbeat", key[1]) if key[0] == "index" else ("heartbeat", key[1])


def stream_key(channel: str, symbol: str | None, interval: str | None, group: str | None = None) -> tuple:
    if channel not in CHANNELS:
        raise FeedError("unknown_channel", f"channel must be one of {', '.join(CHANNELS)}.")
    if channel == "index":
        if group is None or symbol is not None or interval is not None:
            raise FeedError("invalid_message", "The index channel takes a group, and no symbol or interval.")
        return ("index", group)
    if symbol is None or group is not None:
        raise FeedError("invalid_message", f"The {channel} channel takes a symbol, and no group.")
    if channel == "candles":
        if interval not in INTERVAL_MINUTES:
            raise FeedError("unknown_interval", f"interval must be one of {', '.join(INTERVAL_MINUTES)}.")
        return ("candles", symbol, interval)
    if interval is not None:
        raise FeedError("invalid_message", "interval applies to the candles channel only.")
    return (channel, symbol)


def parse(text: str) -> Subscribe | Unsubscribe | AskChallenge:
    try:
        check(text)
    except Malformed as exc:
        raise FeedError("malformed_message", str(exc)) from None
    try:
        return decode_request(text)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if "`$.type`" in message or "missing required field `type`" in message:
            raise FeedError("unknown_type", "type must be subscribe, unsubscribe or challenge.") from None
        raise FeedError("invalid_message", message) from None
    except msgspec.DecodeError as exc:
        raise FeedError("malformed_message", f"Not JSON: {exc}.") from None


class KeepServerSend:
    """ASGI middleware, outermost: keeps the server's own ``send`` of a WebSocket in its scope (``SERVER_SEND``),
    since the layers below wrap it, so that the feed can reach the protocol behind it (``Connection.write``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


class Endpoint:
    """``/v1/ws``: an ASGI app, so that the hub sends data frames straight to the server's ``send``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        hub: Hub = websocket.app.state.feed
        await hub.serve(websocket, send)


endpoint = Endpoint()
