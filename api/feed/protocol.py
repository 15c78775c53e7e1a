"""The protocol of the market-data feed at ``/v1/ws``: public channels per instrument, and each account's own,
over WebSocket.

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
subscribers with the same subscriptions receive the very same frame (those of one delivery group, below). Each
message has a ``type``; data messages also have ``channel`` and ``symbol``, and every message about an
instrument carries its ``seq``: the instrument's sequence number, one per command on that instrument (several
events of one command share it), the same numbering as REST (``GET /v1/instruments/{symbol}/book`` answers with
the ``seq`` it reflects) and heartbeats. Order is kept within a channel of an instrument. Prices and CNY amounts
are decimal strings in yuan, quantities integer lots, ``ts`` microseconds since the epoch (the time of the
command).

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
"channel": "user", "symbol": S, "seq": N, "order"|"fill"|"balance": {...}}``. They come from the engine after
each commit that changed them (a deposit or a mint included); on subscribing the current balances and open
orders come first, then every change after them, none twice. A routed order's children are orders
like any other. Each period a token package of the account runs is reported, on the user channel of every
instrument of the package's group, as ``{"type": "package_execution", ..., "execution": {...}}``: the object of
``GET /v1/packages/{id}/executions``. A provider's account gets each attempt of an inference call on it as
``{"type": "delivery", ..., "delivery": {...}}`` (a row of ``GET /v1/providers/{id}/deliveries`` with the
provider's delivered tokens and obligation after it), and each redemption of the instrument as
``{"type": "redemption", ..., "redemption": {...}}`` (a row of ``GET /v1/providers/{id}/redemptions``).
The subscribe message is signed as a REST request is (``api.signing``), with a key holding the ``read`` scope,
for this connection only: first ask for the connection's challenge, a random nonce the server made for it,
then sign it as the request's body:

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
encodes each message once and queues it on its stream. Connections are taken in ``delivery_chunk`` at a time
into delivery groups, and a flush goes through the groups in turn, a turn of the event loop each, so that
commits go on meanwhile: for one group it joins each stream's messages that the group has not yet taken into one
part and makes one frame per connection from the parts of its streams, built once per distinct set of streams
(subscribers of the same channels in one group get the very same string), and hands them over before the next
group's are built. A message published while a flush goes on thus still reaches the groups whose turn has not
come, and the others at the next flush: a connection's frame waits for its group's turn, never for the sends of
a whole flush after it. On a quiet server a flush follows a publication at the next turn of the loop; under
load, flushes are spaced by what the last one cost (``flush_spacing`` times its time, ``flush_interval`` at
most), so the busier, the fewer and larger the frames. A frame is also made once as WebSocket bytes and written
as it is to each subscriber's socket while the connection is open and its buffer has room
(``api.uvicorn_coupling.write_frame``, under uvicorn's sans-I/O protocol). Otherwise, and for frames to one
connection, a connection sends one frame at a time, straight to the server's ASGI ``send`` (no task per send;
one only when the peer's buffer is full); frames that come while a send waits are queued and merged into the
next one. When that queue overflows (``max_queue`` frames or ``max_queue_bytes``) the connection is dropped from
every stream and closed with 1013 and a reason: nothing else ever waits for a subscriber. A closing that the
peer does not read within ``close_timeout`` seconds is abandoned to the server.

This module holds the protocol alone: what the client sends and what it receives, and how requests are read.
It imports nothing of the server, so clients (``loadtest``) decode frames with the same structs.
"""

import re
import zlib
from datetime import datetime

import msgspec

from api.schemas import Balance, Candle, DeliveryEvent, Execution, Fill, Order, PriceIndex, Redemption
from api.strictjson import Malformed, check

CHANNELS = ("ticker", "level2", "trades", "candles", "user", "index")
INTERVAL_MINUTES = {"1m": 1, "5m": 5, "1h": 60, "1d": 1440}
CHECKSUM_DEPTH = 10
# \Z, not $: $ also matches before a final newline.
SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}\Z")
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
SLOW_CONSUMER = 1013
MAX_MESSAGE_BYTES = 4096
"""A client message, and the server's frame limit (``api.server.uvicorn_config``)."""


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


class DeliveryUpdate(Message, tag="delivery"):
    channel: str
    symbol: str
    seq: int
    delivery: DeliveryEvent


class RedemptionUpdate(Message, tag="redemption"):
    channel: str
    symbol: str
    seq: int
    redemption: Redemption


_encode = msgspec.json.Encoder().encode


def encode(message: Message) -> str:
    return _encode(message).decode()


def frame(*messages: str) -> str:
    return "[" + ",".join(messages) + "]"


def checksum_text(bids: list[tuple[str, int]], asks: list[tuple[str, int]]) -> str:
    """The string a level2 checksum is taken of: best ten levels a side, ``price:qty``, bids ``|`` asks."""
    return (",".join(f"{price}:{qty}" for price, qty in bids[:CHECKSUM_DEPTH]) + "|"
            + ",".join(f"{price}:{qty}" for price, qty in asks[:CHECKSUM_DEPTH]))


def checksum(bids: list[tuple[str, int]], asks: list[tuple[str, int]]) -> int:
    """CRC-32 of ``checksum_text``; levels are (decimal price string, lots), best first."""
    return zlib.crc32(checksum_text(bids, asks).encode("ascii"))


class FeedError(Exception):
    """A request refused with an error message; ``code`` is stable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


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


def user_target(symbol: str) -> str:
    """What a user subscription signs in place of a request's path."""
    return f"/v1/ws/user/{symbol}"


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
