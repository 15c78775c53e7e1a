"""A WebSocket subscriber of the feed on a plain asyncio transport, for the feed benchmark and the load run's
watchers: websockets' sans-I/O client does the handshake, a minimal reader takes the server's frames, and each
channel's ``prev_seq`` chain is followed (``Chain``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import time
from array import array
from typing import Protocol

from websockets.uri import WebSocketURI


class Subscriptions(Protocol):
    """What a subscriber connects to and what it subscribes to once connected."""

    uri: WebSocketURI

    def subscriptions(self) -> list[dict]: ...


UPDATE = re.compile(rb'\{"type":"update","channel":"level2","symbol":"[^"]*","seq":(\d+),"prev_seq":(\d+)')
TRADES = re.compile(rb'\{"type":"trades","channel":"trades","symbol":"[^"]*","seq":(\d+),"prev_seq":(\d+)')
SNAPSHOT = re.compile(rb'\{"type":"snapshot","channel":"level2","symbol":"[^"]*","seq":(\d+)')
SUBSCRIBED = re.compile(rb'\{"type":"subscribed","channel":"trades","symbol":"[^"]*","seq":(\d+)')
MESSAGES = re.compile(rb'"channel":"(level2|trades)","symbol":"[^"]*","seq":(\d+),"prev_seq":(\d+)')
UPDATE_MARK = b'{"type":"update"'
TRADES_MARK = b'{"type":"trades"'


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def now_us() -> int:
    return time.time_ns() // 1000


class Chain:
    """One channel's messages as a subscriber saw them: the seq it started from, the last, how many, breaks.

    Every subscriber checks the chain where frames meet (the first message of a frame must follow the last of
    the one before); a sampling subscriber checks every message and counts them. A frame arrives whole or not
    at all, so a message lost in delivery breaks the chain where frames meet; the sampling subscribers, which
    receive the same frames as everyone else, would find a message missing inside one.
    """

    __slots__ = ("base", "breaks", "count", "exact", "last")

    def __init__(self) -> None:
        self.base = -1
        self.last = -1
        self.count = 0
        self.breaks = 0
        self.exact = False

    def start(self, seq: int) -> None:
        self.base = self.last = seq
        self.exact = False

    def follow(self, seq: int, prev: int) -> None:
        # After a start only the first message may point further back than the last seq seen.
        if (prev != self.last) if self.exact else (prev > self.last or seq <= self.last):
            self.breaks += 1
        self.exact = True

    def frame(self, data: bytes, pattern: re.Pattern, first: int, last: int) -> int:
        """Take the first and last messages of one frame, at those offsets; return the seq of the first."""
        found = pattern.match(data, first)
        seq = int(found[1])
        self.follow(seq, int(found[2]))
        self.last = int(pattern.match(data, last)[1])
        return seq

    def every(self, seq: int, prev: int) -> None:
        self.follow(seq, prev)
        self.last = seq
        self.count += 1


class Subscriber(asyncio.Protocol):
    """One connection subscribed to level2 and trades, checking and timing what it receives."""

    def __init__(self, bench: Subscriptions, sample: bool) -> None:
        self.bench = bench
        self.sample = sample
        self.level2 = Chain()
        self.trades = Chain()
        self.ready = asyncio.get_running_loop().create_future()
        self.closed: int | None = None
        self.frames = 0
        self.measuring = False
        self.oldest = array("q")
        """(seq, received) of the oldest message of each frame, flattened"""
        self.samples = array("q")
        """(seq, received) of every message, flattened, when ``sample``"""

    def connection_made(self, transport) -> None:
        from websockets.client import ClientProtocol

        self.transport = transport
        self.ws = ClientProtocol(self.bench.uri, max_size=None)
        self.ws.send_request(self.ws.connect())
        self.buffer = b""
        transport.write(b"".join(self.ws.data_to_send()))

    def data_received(self, data: bytes) -> None:
        self.read(data, now_us())

    def read(self, data: bytes, received: int) -> None:
        """Take what was read at ``received`` (microseconds since the epoch): the handshake's answer, or frames."""
        if self.ws is None:
            self.frames_received(self.buffer + data if self.buffer else data, received)
            return
        from websockets.http11 import Response

        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        for at, event in enumerate(events):
            if isinstance(event, Response):
                if event.status_code != 101:
                    self.closed = event.status_code
                    return
                for message in self.bench.subscriptions():
                    self.write_frame(0x1, json.dumps(message).encode())
                # From here on, frames are read by ``frames_received``. What came with the answer was read as
                # frames by websockets: a server that refuses the connection sends its error and close at once.
                self.ws = None
                for frame in events[at + 1:]:
                    self.frame_received(frame.opcode.value, bytes(frame.data), received)
                return

    def frames_received(self, data: bytes, received: int) -> None:
        """Read the server's frames (unmasked, unfragmented) from ``data``; keep a partial one for later.

        websockets' own frame reader costs several times as much per frame, which on this machine comes out of
        the server's share of the CPU; the handshake above is websockets'.
        """
        at = 0
        end = len(data)
        while end - at >= 2:
            opcode = data[at] & 0x0F
            length = data[at + 1] & 0x7F
            head = at + 2
            if length == 126:
                if end - at < 4:
                    break
                length = int.from_bytes(data[at + 2:at + 4], "big")
                head = at + 4
            elif length == 127:
                if end - at < 10:
                    break
                length = int.from_bytes(data[at + 2:at + 10], "big")
                head = at + 10
            if end - head < length:
                break
            payload = data[head:head + length]
            at = head + length
            self.frame_received(opcode, payload, received)
        self.buffer = data[at:] if at < end else b""

    def frame_received(self, opcode: int, payload: bytes, received: int) -> None:
        if opcode == 0x1:
            self.on_frame(payload, received)
        elif opcode == 0x9:
            self.write_frame(0xA, payload)
        elif opcode == 0x8:
            self.closed = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            # Answer the close, as RFC 6455 asks, and drop the connection: a server may wait seconds for its end,
            # and a refused subscriber would wait as long to connect again.
            self.write_frame(0x8, payload[:2])
            self.transport.close()

    def write_frame(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame (short payloads only: subscriptions and pongs)."""
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def on_frame(self, data: bytes, received: int) -> None:
        self.frames += 1
        if not self.ready.done():
            snapshot = SNAPSHOT.search(data)
            if snapshot is not None:
                self.level2.start(int(snapshot[1]))
            subscribed = SUBSCRIBED.search(data)
            if subscribed is not None:
                self.trades.start(int(subscribed[1]))
            if self.level2.base >= 0 and self.trades.base >= 0:
                self.ready.set_result(None)
            return
        if self.sample:
            level2, trades = self.level2, self.trades
            oldest = 0
            for channel, seq, prev in MESSAGES.findall(data):
                seq = int(seq)
                (level2 if channel == b"level2" else trades).every(seq, int(prev))
                if self.measuring:
                    self.samples.append(seq)
                    self.samples.append(received)
                oldest = min(oldest, seq) if oldest else seq
        else:
            first_update, last_update = data.find(UPDATE_MARK), data.rfind(UPDATE_MARK)
            first_trades, last_trades = data.find(TRADES_MARK), data.rfind(TRADES_MARK)
            oldest = 0
            if first_update >= 0:
                oldest = self.level2.frame(data, UPDATE, first_update, last_update)
            if first_trades >= 0:
                seq = self.trades.frame(data, TRADES, first_trades, last_trades)
                oldest = min(oldest, seq) if oldest else seq
        if self.measuring and oldest:
            self.oldest.append(oldest)
            self.oldest.append(received)

    def connection_lost(self, exc) -> None:
        if self.closed is None:
            self.closed = 1006
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed ({self.closed}) before subscribing"))
