"""Watchers: feed subscribers to level2, trades, ticker and candles that check every message they receive.

Checking
--------
Every message a watcher receives is checked: level2 and trades follow their ``prev_seq`` chains
(``loadtest.subscriber.Chain``), ticker and candles never go back in ``seq``, a heartbeat's ``level2_seq`` and
``trades_seq`` are never ahead of what the watcher holds, and each level2 message's checksum equals the CRC-32
of a book rebuilt here from the feed by the documented rules (code of our own, not the server's). A broken chain
or a lagging heartbeat is a gap; a wrong checksum or a message off the protocol is a bad message; either makes
the watcher resubscribe, as a client would.

Why it stays cheap with hundreds of watchers: subscribers of the same channels receive the very same frame
(``api.feed.protocol``), so a frame is decoded and its checksums verified once, by the first watcher that receives
it, and summed up as what a watcher needs to follow it (``Summary``); every other watcher receiving the same bytes
applies that summary to its own chains. The rebuilt book (``Mirror``) is one per instrument: the book at a given
``seq`` is the same for everyone.

Connections
-----------
One watcher is one WebSocket (``loadtest.subscriber.Subscriber`` does the handshake and reads frames). The server allows
a bounded number of connections per address, so watchers connect from several loopback addresses
(127.0.1.x: all of 127/8 is the loopback on Linux). A watcher whose connection is lost (a server restart)
connects again by itself and resubscribes; ``resyncs`` counts those.

Timing
------
Each frame is timed twice: when this process read it, and when it arrived in the socket, as the kernel stamped
it (``SO_TIMESTAMPNS``: the arrival of the last segment a read took, so never too early). Thousands of watchers
share one process, and on a small machine its cores too: the first time also counts how long frames waited for
this process to get to them, the second only what the server and the network took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import zlib
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
from websockets.uri import parse_uri

from api.feed.protocol import (
    CandleUpdate,
    ErrorMessage,
    Heartbeat,
    Snapshot,
    Subscribed,
    Ticker,
    Trades,
    Unsubscribed,
    Update,
)
from loadtest.subscriber import Chain, Subscriber, now_us

WATCHERS_PER_ADDRESS = 40
"""Below the server's default ``max_connections_per_address`` (50)."""
CANDLE_INTERVAL = "1m"
SUMMARIES_KEPT = 4096
READ_BYTES = 65536
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux's value; Python's socket module does not name it."""
TIMESPEC = struct.Struct("qq")

decode_frame = msgspec.json.Decoder(
    list[Subscribed | Unsubscribed | ErrorMessage | Snapshot | Update | Trades | Ticker | CandleUpdate | Heartbeat]
).decode


def crc(bids: dict[str, int], asks: dict[str, int]) -> int:
    """The documented level2 checksum: best ten levels a side, ``price:qty``, bids ``|`` asks."""
    best_bids = sorted(bids.items(), key=lambda level: Decimal(level[0]), reverse=True)[:10]
    best_asks = sorted(asks.items(), key=lambda level: Decimal(level[0]))[:10]
    text = ",".join(f"{p}:{q}" for p, q in best_bids) + "|" + ",".join(f"{p}:{q}" for p, q in best_asks)
    return zlib.crc32(text.encode())


class Mirror:
    """One instrument's book rebuilt from the feed; the checksum it had at each seq it went through."""

    def __init__(self) -> None:
        self.seq = -1
        self.bids: dict[str, int] = {}
        self.asks: dict[str, int] = {}
        self.checksums: dict[int, int] = {}
        self.unverified = 0
        """Updates that came after a hole no watcher filled: checked again from the next newer snapshot."""

    def verify_snapshot(self, message: Snapshot) -> bool:
        bids, asks = dict(message.bids), dict(message.asks)
        good = crc(bids, asks) == message.checksum
        if good and message.seq > self.seq:
            # Newer than what we hold (the first watcher, or everyone resubscribed after a restart): start over.
            self.seq, self.bids, self.asks = message.seq, bids, asks
            self.checksums[message.seq] = message.checksum
        return good and self.checksums.get(message.seq, message.checksum) == message.checksum

    def verify_update(self, message: Update) -> bool:
        if message.seq <= self.seq:
            return self.checksums.get(message.seq, message.checksum) == message.checksum
        if message.prev_seq > self.seq:
            # Every watcher missed what came between: nothing to check it against until the next snapshot.
            self.unverified += 1
            return True
        for levels, changes in ((self.bids, message.bids), (self.asks, message.asks)):
            for price, qty in changes:
                if qty:
                    levels[price] = qty
                else:
                    levels.pop(price, None)
        self.seq = message.seq
        self.checksums[message.seq] = computed = crc(self.bids, self.asks)
        if len(self.checksums) > 4 * SUMMARIES_KEPT:
            for old in list(self.checksums)[: SUMMARIES_KEPT]:
                del self.checksums[old]
        return computed == message.checksum


@dataclass
class Summary:
    """What a watcher needs of one frame: its steps in order, its oldest ``ts``, its messages and bad ones."""

    steps: list[tuple] = field(default_factory=list)
    oldest_ts: int = 0
    messages: int = 0
    bad: int = 0
    errors: list[str] = field(default_factory=list)


def summarize(data: bytes, mirror: Mirror) -> Summary:
    """Decode one frame, verify its checksums against ``mirror``, and reduce it to steps on a watcher's chains.

    Steps: ("start", channel, seq) for a snapshot or a ``subscribed``; ("follow", channel, first seq, its prev_seq,
    last seq) for a run of level2 updates or trades messages chained inside the frame; ("monotonic", channel, seq)
    for ticker and candles; ("heartbeat", level2_seq, trades_seq).
    """
    summary = Summary()
    try:
        messages = decode_frame(data)
    except msgspec.DecodeError:
        summary.bad += 1
        return summary
    steps = summary.steps
    oldest = 0
    for message in messages:
        kind = type(message)
        if kind is Update or kind is Trades:
            channel = "level2" if kind is Update else "trades"
            if kind is Update and not mirror.verify_update(message):
                summary.bad += 1
            last = steps[-1] if steps else None
            if last is not None and last[0] == "follow" and last[1] == channel:
                if message.prev_seq != last[4]:
                    summary.bad += 1
                steps[-1] = (*last[:4], message.seq)
            else:
                steps.append(("follow", channel, message.seq, message.prev_seq, message.seq))
        elif kind is Snapshot:
            if not mirror.verify_snapshot(message):
                summary.bad += 1
            steps.append(("start", "level2", message.seq))
        elif kind is Subscribed:
            if message.channel == "trades":
                steps.append(("start", "trades", message.seq))
            continue
        elif kind is Ticker or kind is CandleUpdate:
            steps.append(("monotonic", message.channel, message.seq))
        elif kind is Heartbeat:
            steps.append(("heartbeat", message.level2_seq, message.trades_seq))
            continue
        elif kind is ErrorMessage:
            summary.errors.append(message.code)
            continue
        else:
            continue
        summary.messages += 1
        oldest = min(oldest, message.ts) if oldest else message.ts
    summary.oldest_ts = oldest
    return summary


class Feed:
    """What all watchers share: the URL, the mirrors and frame summaries, and the counts they report."""

    def __init__(self, url: str, on_frame_latency, on_arrival_latency=None) -> None:
        self.uri = parse_uri(url.replace("http://", "ws://") + "/v1/ws")
        self.mirrors: dict[str, Mirror] = {}
        self.summaries: dict[bytes, Summary] = {}
        self.on_frame_latency = on_frame_latency
        """Called with (read at, microseconds from the oldest message's ``ts`` to its reading) per frame."""
        self.on_arrival_latency = on_arrival_latency
        """When given, called with (arrived at, microseconds from the oldest message's ``ts`` to its arrival)."""
        self.messages = 0
        self.frames = 0
        self.gaps = 0
        self.bad = 0
        self.resyncs = 0
        self.errors: dict[str, int] = {}
        self.cut_off: dict[int, int] = {}
        """Connections the server closed, by close code (1013: a slow consumer, not a healthy watcher)."""

    def summary(self, data: bytes, symbol: str) -> Summary:
        summary = self.summaries.get(data)
        if summary is None:
            summary = self.summaries[data] = summarize(data, self.mirrors.setdefault(symbol, Mirror()))
            if len(self.summaries) > SUMMARIES_KEPT:
                del self.summaries[next(iter(self.summaries))]
            for code in summary.errors:
                self.errors[code] = self.errors.get(code, 0) + 1
        return summary


class WatcherSocket(Subscriber):
    """One WebSocket of a watcher: the handshake and frame reading of ``loadtest.subscriber`` on a socket of its own,
    read with the kernel's arrival stamps; frames go to the watcher."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__(watcher, sample=False)
        self.watcher = watcher
        self.sock: socket.socket | None = None
        self.arrived = 0
        """When what is being read arrived, microseconds since the epoch."""

    async def open(self, host: str, port: int, address: str) -> None:
        """Connect from ``address`` and start the handshake."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((address, 0))
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.connection_made(self)
        loop.add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        assert self.sock is not None
        try:
            data, ancillary, _, _ = self.sock.recvmsg(READ_BYTES, socket.CMSG_SPACE(TIMESPEC.size))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.abort(exc)
            return
        if not data:
            self.abort(None)
            return
        received = now_us()
        self.arrived = received
        for level, kind, stamp in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = TIMESPEC.unpack_from(stamp)
                self.arrived = seconds * 1_000_000 + nanoseconds // 1000
        self.read(data, received)

    def write(self, data: bytes) -> None:
        """Send a short message (the handshake, subscriptions, pongs): it fits in the socket's buffer."""
        if self.sock is not None:
            self.sock.sendall(data)

    def close(self) -> None:
        self.abort(None)

    def abort(self, exc: Exception | None = None) -> None:
        """Close the socket now; the watcher hears of it as a lost connection."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        self.connection_lost(exc)

    def on_frame(self, data: bytes, received: int) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        self.watcher.on_frame(data, received, self.arrived)

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self.watcher.lost(self.closed)


class Watcher:
    """A subscriber to every public channel of one instrument, reconnecting and resubscribing when needed."""

    def __init__(self, feed: Feed, symbol: str, number: int) -> None:
        self.feed = feed
        self.uri = feed.uri
        self.symbol = symbol
        self.address = f"127.0.1.{1 + number // WATCHERS_PER_ADDRESS}"
        self.chains: dict[str, Chain] = {}
        self.seqs: dict[str, int] = {}
        self.connection: WatcherSocket | None = None
        self.stopped = False
        self.reconnecting: asyncio.Task | None = None
        self.rejoining = False
        """Reconnected, and not yet subscribed again: the next snapshot and ``subscribed`` make one resync."""

    def subscriptions(self) -> list[dict]:
        messages = [{"type": "subscribe", "channel": channel, "symbol": self.symbol}
                    for channel in ("level2", "trades", "ticker")]
        return [*messages, {"type": "subscribe", "channel": "candles", "symbol": self.symbol,
                            "interval": CANDLE_INTERVAL}]

    async def connect(self) -> None:
        """Connect, subscribe, and wait for the first frame."""
        self.chains = {"level2": Chain(), "trades": Chain()}
        self.seqs = {}
        # A local name: a connection lost at once (a server being killed) clears ``self.connection`` meanwhile,
        # and its ``ready`` then fails with the ConnectionError that makes ``reconnect`` try again.
        connection = self.connection = WatcherSocket(self)
        await connection.open(self.uri.host, self.uri.port, self.address)
        await asyncio.wait_for(connection.ready, 30)
        if self.connection is not connection:  # refused: its error and close came with the handshake's answer
            raise ConnectionError(f"closed ({connection.closed}) on connecting")

    def on_frame(self, data: bytes, received: int, arrived: int) -> None:
        feed = self.feed
        summary = feed.summary(data, self.symbol)
        feed.frames += 1
        feed.messages += summary.messages
        broken = summary.bad
        feed.bad += summary.bad
        chains, seqs = self.chains, self.seqs
        for step in summary.steps:
            kind = step[0]
            if kind == "follow":
                chain = chains[step[1]]
                if chain.base < 0:
                    continue  # trades before their ``subscribed``: the chain starts there
                before = chain.breaks
                chain.follow(step[2], step[3])
                chain.last = step[4]
                if chain.breaks != before:
                    feed.gaps += 1
                    broken += 1
            elif kind == "start":
                chains[step[1]].start(step[2])
            elif kind == "monotonic":
                if step[2] < seqs.get(step[1], -1):
                    feed.gaps += 1
                    broken += 1
                seqs[step[1]] = step[2]
            elif kind == "heartbeat":
                level2, trades = chains["level2"], chains["trades"]
                if (level2.base >= 0 and step[1] > level2.last) or (trades.base >= 0 and step[2] > trades.last):
                    feed.gaps += 1
                    broken += 1
        if self.rejoining and chains["level2"].base >= 0 and chains["trades"].base >= 0:
            self.rejoining = False
            feed.resyncs += 1
        if summary.oldest_ts:
            feed.on_frame_latency(received, received - summary.oldest_ts)
            if feed.on_arrival_latency is not None:
                feed.on_arrival_latency(arrived, arrived - summary.oldest_ts)
        if broken and self.connection is not None:
            self.resubscribe()

    def resubscribe(self) -> None:
        """Start the chains over from fresh subscriptions on the same connection, as the protocol says."""
        self.feed.resyncs += 1
        self.chains = {"level2": Chain(), "trades": Chain()}
        self.seqs = {}
        assert self.connection is not None
        for message in self.subscriptions():
            self.connection.write_frame(0x1, json.dumps(message).encode())

    def lost(self, code: int | None) -> None:
        if code is not None and code != 1006:
            self.feed.cut_off[code] = self.feed.cut_off.get(code, 0) + 1
        self.connection = None
        if not self.stopped and self.reconnecting is None:
            self.reconnecting = asyncio.get_running_loop().create_task(self.reconnect())

    async def reconnect(self) -> None:
        """Connect again until it works (the server may be restarting); one resync is counted once the new
        connection's subscriptions start (a connection refused at once never gets that far)."""
        self.rejoining = True
        try:
            while not self.stopped:
                try:
                    await self.connect()
                except (OSError, ConnectionError, TimeoutError):
                    await asyncio.sleep(0.5)
                    continue
                return
        finally:
            self.reconnecting = None

    def stop(self) -> None:
        self.stopped = True
        if self.reconnecting is not None:
            self.reconnecting.cancel()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.abort()


async def start_watchers(feed: Feed, symbols: list[str], count: int, wave: int = 100) -> list[Watcher]:
    """Connect ``count`` watchers, spread over ``symbols``, ``wave`` at a time."""
    watchers = [Watcher(feed, symbols[n % len(symbols)], n) for n in range(count)]
    for start in range(0, count, wave):
        await asyncio.gather(*(watcher.connect() for watcher in watchers[start:start + wave]))
    return watchers

