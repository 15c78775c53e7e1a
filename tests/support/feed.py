"""What the feed tests share: a real server with chosen feed limits, a websockets client that checks what it is
sent, an independent rebuild of the level2 book, and a market with traders.

The rebuild follows the client rules of ``api.feed.protocol`` and checks every update's checksum with its own code, so a
test that compares it with the REST book tests the feed end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from api.app import create_app
from api.client import ApiError, Client
from api.feed.limits import FeedLimits
from api.signing import signature
from tests.support.api_server import NO_LIMITS, Live, bootstrap, fresh_database, serve


@contextmanager
def feed_server(postgres_admin_url: str, limits: FeedLimits | None = None) -> Iterator[Live]:
    """A live server on a new database with an admin key, its feed bound by ``limits``."""
    with fresh_database(postgres_admin_url) as dsn:
        master_key = secrets.token_bytes(32)
        app = create_app(dsn, master_key=master_key, rate_limits=NO_LIMITS, feed_limits=limits)
        with serve(app, master_key) as live:
            live.dsn = dsn
            bootstrap(live)
            yield live


def ws_url(live: Live) -> str:
    return live.url.replace("http://", "ws://") + "/v1/ws"


async def on_server(live: Live, coroutine) -> Any:
    """Await ``coroutine`` on the server's loop without blocking this one."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, live.loop))


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6].upper()}"


class FeedClient:
    """A websockets connection to ``/v1/ws`` that splits frames into messages, in order."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.buffer: list[dict] = []
        self.frames = 0

    @classmethod
    async def open(cls, live: Live, **options: Any) -> FeedClient:
        options.setdefault("compression", None)
        options.setdefault("max_size", None)
        return cls(await connect(ws_url(live), **options))

    async def send(self, **message: Any) -> None:
        await self.connection.send(json.dumps(message))

    async def subscribe(self, channel: str, symbol: str, **options: Any) -> None:
        await self.send(type="subscribe", channel=channel, symbol=symbol, **options)

    async def challenge(self) -> str:
        """This connection's nonce, which a user subscription signs."""
        await self.send(type="challenge")
        message, _ = await self.until(lambda m: m["type"] == "challenge")
        return message["nonce"]

    async def next(self, timeout: float = 10.0) -> dict:
        """The next message."""
        while not self.buffer:
            text = await asyncio.wait_for(self.connection.recv(), timeout)
            assert isinstance(text, str), "the feed sends text frames"
            messages = json.loads(text)
            assert isinstance(messages, list) and messages, f"a frame is a non-empty array: {text[:200]}"
            self.frames += 1
            self.buffer.extend(messages)
        return self.buffer.pop(0)

    async def until(self, predicate, timeout: float = 10.0) -> tuple[dict, list[dict]]:
        """Read until a message satisfies ``predicate``; return it and everything read before it."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            message = await self.next(max(0.01, deadline - time.monotonic()))
            if predicate(message):
                return message, seen
            seen.append(message)

    async def close(self) -> None:
        await self.connection.close()


def crc(bids: list[tuple[str, int]], asks: list[tuple[str, int]]) -> int:
    """The documented checksum, computed here without the server's code."""
    side = lambda levels: ",".join(f"{price}:{qty}" for price, qty in levels[:10])  # noqa: E731
    return zlib.crc32(f"{side(bids)}|{side(asks)}".encode())


@dataclass
class BookMirror:
    """A level2 book rebuilt from the feed by the documented rules, checking sequence and checksums."""

    symbol: str
    seq: int = -1
    bids: dict[str, int] = field(default_factory=dict)
    asks: dict[str, int] = field(default_factory=dict)
    updates: int = 0
    snapshots: int = 0

    def levels(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        bids = sorted(self.bids.items(), key=lambda item: Decimal(item[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda item: Decimal(item[0]))
        return bids, asks

    def snapshot(self, message: dict) -> None:
        assert message["type"] == "snapshot" and message["symbol"] == self.symbol
        self.bids = {price: qty for price, qty in message["bids"]}
        self.asks = {price: qty for price, qty in message["asks"]}
        self.seq = message["seq"]
        self.snapshots += 1
        assert crc(*self.levels()) == message["checksum"], "snapshot checksum"

    def rest(self, book: dict) -> None:
        """Start from a REST book."""
        self.bids = {level["price"]: level["qty"] for level in book["bids"]}
        self.asks = {level["price"]: level["qty"] for level in book["asks"]}
        self.seq = book["seq"]

    def update(self, message: dict) -> bool:
        """Apply one update; False if it was already in the book. A gap or a wrong checksum fails the test."""
        assert message["type"] == "update" and self.seq >= 0
        if message["seq"] <= self.seq:
            return False
        assert message["prev_seq"] <= self.seq, f"gap: prev_seq {message['prev_seq']} after seq {self.seq}"
        for side, levels in (("bids", self.bids), ("asks", self.asks)):
            for price, qty in message[side]:
                assert qty >= 0
                if qty:
                    levels[price] = qty
                else:
                    levels.pop(price, None)
        self.seq = message["seq"]
        self.updates += 1
        assert crc(*self.levels()) == message["checksum"], f"checksum after seq {self.seq}"
        return True

    def as_rest(self) -> dict:
        bids, asks = self.levels()
        return {"bids": [{"price": p, "qty": q} for p, q in bids], "asks": [{"price": p, "qty": q} for p, q in asks]}


def signed_user(symbol: str, key_id: str, secret: str, nonce: str, timestamp: int | None = None) -> dict:
    """The signing fields of a user subscription on the connection whose challenge is ``nonce``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {"key": key_id, "timestamp": stamp,
            "signature": signature(secret, stamp, "SUBSCRIBE", f"/v1/ws/user/{symbol}", nonce.encode())}


@dataclass
class Market:
    """An instrument with an issuer holding tokens and traders holding cash and tokens."""

    symbol: str
    issuer: Client
    traders: list[Client]
    accounts: list[dict]
    keys: list[dict]
    live_orders: list[tuple[Client, int]] = field(default_factory=list)


async def open_market(live: Live, traders: int = 3, symbol: str | None = None, kind: str = "compute") -> Market:
    """List an instrument; give each trader 100,000 CNY and 2,000 lots."""
    admin = Client(live.url, live.admin_key, live.admin_secret)
    symbol = symbol or unique("F")
    account = await admin.create_account(unique("issuer").lower(), "issuer")
    if kind == "compute":
        await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="test-model",
                                      substitution_group="chat-general", quality=80, tokens_per_lot=1_000_000)
    else:
        await admin.create_instrument(kind="dataset", symbol=symbol, tick="0.01", issuer_id=account["id"],
                                      description="Quality-checked steel plant sensor records", license="CC-BY-4.0",
                                      grants="1,000 records", supply_cap=1_000_000)
    await admin.approve_issuer(account["id"], symbol, 1_000_000)
    key = await admin.create_key(account["id"], ["read", "trade", "issue"])
    issuer = admin.with_key(key["id"], key["secret"])
    await issuer.mint(symbol, 100_000)
    clients, accounts, keys = [], [], []
    for _ in range(traders):
        trader = await admin.create_account(unique("trader").lower(), "trader")
        await admin.deposit(trader["id"], "100000")
        trader_key = await admin.create_key(trader["id"], ["read", "trade"])
        client = admin.with_key(trader_key["id"], trader_key["secret"])
        clients.append(client)
        accounts.append(trader)
        keys.append(trader_key)
    # Hand out tokens through the book: the issuer sells, each trader buys.
    for client in clients:
        await issuer.place_order(symbol, "sell", price="1", qty=2000)
        await client.place_order(symbol, "buy", price="1", qty=2000)
    await admin.aclose()
    return Market(symbol, issuer, clients, accounts, keys)


async def random_flow(market: Market, orders: int, rng: random.Random, concurrency: int = 4) -> None:
    """Random limit orders around 2.00 (some crossing), cancels and amends, from the market's traders."""

    async def one() -> None:
        action = rng.random()
        if action < 0.2 and market.live_orders:
            client, order_id = market.live_orders.pop(rng.randrange(len(market.live_orders)))
            with contextlib.suppress(ApiError):  # filled meanwhile
                await client.cancel_order(order_id)
            return
        if action < 0.3 and market.live_orders:
            client, order_id = rng.choice(market.live_orders)
            with contextlib.suppress(ApiError):  # filled or cancelled meanwhile, or no change
                await client.amend_order(order_id, qty=rng.randint(1, 5))
            return
        client = rng.choice(market.traders)
        side = rng.choice(("buy", "sell"))
        price = Decimal("2.00") + Decimal(rng.randint(-15, 15)) / 100
        order = await client.place_order(market.symbol, side, price=str(price), qty=rng.randint(1, 20))
        if order["status"] == "open":
            market.live_orders.append((client, order["id"]))

    for start in range(0, orders, concurrency):
        await asyncio.gather(*(one() for _ in range(min(concurrency, orders - start))))


class Follower:
    """Reads a connection in the background into a level2 mirror and the chain of trades messages."""

    def __init__(self, client: FeedClient, symbol: str) -> None:
        self.client = client
        self.mirror = BookMirror(symbol)
        self.trades_seq = -1
        self.trade_ids: list[int] = []
        self.heartbeats: list[dict] = []
        self.task = asyncio.ensure_future(self.run())

    async def run(self) -> None:
        while True:
            message = await self.client.next(timeout=30)
            kind = message["type"]
            if kind == "snapshot":
                self.mirror.snapshot(message)
            elif kind == "update":
                self.mirror.update(message)
            elif kind == "subscribed" and message["channel"] == "trades":
                self.trades_seq = message["seq"]
            elif kind == "trades":
                assert message["prev_seq"] <= self.trades_seq < message["seq"], "trades gap"
                self.trades_seq = message["seq"]
                self.trade_ids.extend(trade["id"] for trade in message["trades"])
            elif kind == "heartbeat":
                assert message["level2_seq"] <= self.mirror.seq, "a level2 update was missed"
                assert message["trades_seq"] <= self.trades_seq, "a trades message was missed"
                self.heartbeats.append(message)

    async def caught_up(self, seq: int, timeout: float = 15.0) -> dict:
        """The first heartbeat at or past ``seq``: everything before it has been applied."""
        async def wait() -> dict:
            while True:
                if self.task.done():
                    self.task.result()
                if self.heartbeats and self.heartbeats[-1]["seq"] >= seq:
                    return self.heartbeats[-1]
                await asyncio.sleep(0.05)
        return await asyncio.wait_for(wait(), timeout)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


async def follow(live, symbol: str) -> Follower:
    client = await FeedClient.open(live)
    await client.subscribe("level2", symbol)
    await client.subscribe("trades", symbol)
    return Follower(client, symbol)


async def assert_same_book(follower: Follower, rest: Client, symbol: str) -> None:
    book = await rest.book(symbol, depth=1000)
    await follower.caught_up(book["seq"])
    assert follower.mirror.as_rest() == {"bids": book["bids"], "asks": book["asks"]}
