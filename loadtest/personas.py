"""Sellers and buyers: signed HTTP clients that trade around a drifting fair price.

Each persona is one keep-alive connection (``loadtest.connection.Connection``, requests signed by
``loadtest.traders.Trader``) and one asyncio task that acts at its share of the target rate, one request at a
time: it waits for each answer, so a slow server slows the personas down rather than piling requests up.

- A seller is an issuer: it mints capacity, posts offers a few ticks above the fair price (now and then one
  below it, which takes bids), and cancels its oldest offers to keep a handful open.
- A buyer is a trader with cash: it bids a few ticks below the fair price (now and then above it), sends small
  market buys and routed buys across the run's substitution group (by cost, quality or balance), cancels its
  oldest bids, and holds one daily token package from its first moment.

An action is a method named in the persona's ``ACTIONS`` table with its weight: adding a kind of order (a routed
order, a package) is one method and one row.

What a persona learns of its orders comes from its own answers only, so a cancel may name an order that has
filled meanwhile: the exchange answers 404 ``unknown_order``, an intended rejection, not an error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from datetime import UTC, datetime

import msgspec

from loadtest.connection import Connection
from loadtest.report import Recorder
from loadtest.traders import PROBLEM, Trader

TICK = 10_000  # 0.01 CNY
FAIR = 2_000 * TICK  # 20.00 CNY at the start
FAIR_RANGE = (1_500 * TICK, 2_500 * TICK)
OPEN_LOW, OPEN_HIGH = 4, 16
MINT_QTY = 50_000
INTENDED = {"unknown_order", "would_take"}
"""Refusals the flow provokes on purpose or by a race it cannot see: answers, not errors."""
ORDER_KINDS = {"offer", "bid", "market_buy", "routed_buy", "cancel"}
"""Actions that are order commands, counted as acknowledged orders (a mint is not)."""


class Placed(msgspec.Struct):
    id: int
    status: str
    filled_qty: int


PLACED = msgspec.json.Decoder(Placed)


class Market:
    """The fair price of each instrument, a random walk of one tick every ``step`` seconds within a band, and
    the substitution group the instruments share."""

    def __init__(self, symbols: list[str], rng: random.Random, step: float = 0.1, group: str = "") -> None:
        self.fair = dict.fromkeys(symbols, FAIR)
        self.group = group
        self.rng = rng
        self.step = step

    async def drift(self) -> None:
        low, high = FAIR_RANGE
        while True:
            await asyncio.sleep(self.step)
            for symbol, price in self.fair.items():
                self.fair[symbol] = min(high, max(low, price + self.rng.choice((-TICK, 0, TICK))))


def decimal(price: int) -> bytes:
    whole, fraction = divmod(price, 1_000_000)
    return b"%d.%06d" % (whole, fraction)


class Persona:
    """One account on one connection, acting at ``rate`` requests a second."""

    ACTIONS: tuple[tuple[str, float], ...] = ()

    def __init__(self, url: str, key_id: str, secret: str, symbol: str, prices: Market, recorder: Recorder,
                 rng: random.Random) -> None:
        self.host, self.port = url.removeprefix("http://").rsplit(":", 1)
        self.signer = Trader(f"{self.host}:{self.port}", key_id, secret, symbol, rng)
        self.symbol = symbol
        self.prices = prices
        self.recorder = recorder
        self.rng = rng
        self.open: deque[int] = deque()
        self.connection: Connection | None = None
        self.names = [name for name, _ in self.ACTIONS]
        self.weights = [weight for _, weight in self.ACTIONS]

    async def begin(self) -> None:
        """What the persona does once before it starts acting."""

    async def live(self, rate: float, until: float, stop: asyncio.Event) -> None:
        """Act at ``rate`` a second until the monotonic time ``until`` or ``stop``; never faster, later if the server
        is slow.

        ``stop`` is checked besides cancelling the task: Python 3.11's ``asyncio.wait_for`` swallows a cancellation
        that arrives as the request it waits on completes, and the persona would then act on forever."""
        await self.begin()
        interval = 1.0 / rate
        due = time.monotonic() + self.rng.random() * interval
        while (now := time.monotonic()) < until and not stop.is_set():
            if due > now:
                await asyncio.sleep(due - now)
            # A persona that fell behind does not burst to catch up: it resumes its pace from now.
            due = max(due + interval, time.monotonic())
            await getattr(self, self.choose())()

    def choose(self) -> str:
        if len(self.open) >= OPEN_HIGH:
            return "cancel"
        if len(self.open) < OPEN_LOW:
            return self.names[0]
        return self.rng.choices(self.names, self.weights)[0]

    async def send(self, kind: str, method: bytes, target: bytes, body: bytes = b"") -> tuple[int, bytes] | None:
        """Send one request and record its outcome; None when there was no answer (counted as an error)."""
        connection = self.connection
        if connection is None or connection.transport is None or connection.transport.is_closing():
            try:
                loop = asyncio.get_running_loop()
                _, connection = await loop.create_connection(Connection, self.host, int(self.port))
            except OSError:
                self.recorder.error(kind, "connection refused")
                await asyncio.sleep(0.2)
                return None
            self.connection = connection
        request = self.signer.request(method, target, body)
        started = time.perf_counter()
        try:
            status, answer = await asyncio.wait_for(connection.send(request), 10)
        except (ConnectionError, TimeoutError) as exc:
            self.recorder.error(kind, "connection closed" if isinstance(exc, ConnectionError) else "timeout")
            self.connection = None
            connection.transport.close()
            return None
        latency = time.perf_counter() - started
        if status < 300:
            self.recorder.ack(kind, latency, kind in ORDER_KINDS)
            return status, answer
        code = PROBLEM.decode(answer).code if answer.startswith(b"{") else ""
        if code in INTENDED:
            self.recorder.ack(kind, latency, kind in ORDER_KINDS, refused=code)
        else:
            self.recorder.error(kind, f"{status} {code}".strip())
        return status, answer

    async def place(self, kind: str, body: bytes) -> None:
        answer = await self.send(kind, b"POST", b"/v1/orders", body)
        if answer is not None and answer[0] == 201:
            placed = PLACED.decode(answer[1])
            self.recorder.placed.append((placed.id, placed.status, placed.filled_qty))
            if placed.status == "open":
                self.open.append(placed.id)

    def limit(self, side: bytes, price: int, qty: int) -> bytes:
        return b'{"symbol":"%s","side":"%s","type":"limit","price":"%s","qty":%d}' % (
            self.symbol.encode(), side, decimal(price), qty)

    async def cancel(self) -> None:
        if not self.open:
            return
        order_id = self.open.popleft()
        answer = await self.send("cancel", b"DELETE", b"/v1/orders/%d" % order_id)
        if answer is not None and answer[0] == 200:
            self.recorder.cancelled.append(order_id)


class Seller(Persona):
    """An issuer selling its capacity: offers just above the fair price, cancels, and a mint now and then."""

    ACTIONS = (("offer", 0.60), ("cancel", 0.395), ("mint", 0.005))

    async def offer(self) -> None:
        fair = self.prices.fair[self.symbol]
        ticks = -2 if self.rng.random() < 0.05 else self.rng.randint(1, 6)
        await self.place("offer", self.limit(b"sell", fair + ticks * TICK, self.rng.randint(1, 50)))

    async def mint(self) -> None:
        await self.send("mint", b"POST", b"/v1/mints", msgspec.json.encode({"symbol": self.symbol, "qty": MINT_QTY}))


class Buyer(Persona):
    """A trader with cash: bids just below the fair price, small market and routed buys, cancels; one package."""

    ACTIONS = (("bid", 0.55), ("cancel", 0.35), ("market_buy", 0.06), ("routed_buy", 0.04))
    MODES = ("cost", "quality", "balance")

    async def begin(self) -> None:
        """Hold a daily package of 5 lots from the group, starting now: its first period runs at once."""
        body = msgspec.json.encode({"group": self.prices.group, "qty": 5, "mode": self.rng.choice(self.MODES),
                                    "period": "day", "max_cost": "500", "start_at": _now()})
        await self.send("package", b"POST", b"/v1/packages", body)

    async def bid(self) -> None:
        fair = self.prices.fair[self.symbol]
        ticks = -2 if self.rng.random() < 0.05 else self.rng.randint(1, 6)
        await self.place("bid", self.limit(b"buy", fair - ticks * TICK, self.rng.randint(1, 50)))

    async def market_buy(self) -> None:
        body = b'{"symbol":"%s","side":"buy","type":"market","qty":%d}' % (self.symbol.encode(),
                                                                           self.rng.randint(1, 20))
        await self.place("market_buy", body)

    async def routed_buy(self) -> None:
        """A few lots from whichever of the group's books the mode prefers, up to a few ticks above fair."""
        limit = self.prices.fair[self.symbol] + self.rng.randint(0, 4) * TICK
        body = msgspec.json.encode({"group": self.prices.group, "side": "buy", "qty": self.rng.randint(1, 20),
                                    "mode": self.rng.choice(self.MODES), "price": decimal(limit).decode()})
        await self.send("routed_buy", b"POST", b"/v1/routed-orders", body)


def _now() -> str:
    return datetime.now(UTC).isoformat()
