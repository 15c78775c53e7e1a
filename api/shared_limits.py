"""Rate limits and the feed's connection cap held across gateways: what each gateway lets through, told to the others.

A key's rate limit and an address's connection cap are the same whether its traffic lands on one gateway or on
many. No request waits for another gateway: each one keeps deciding alone, from its own buckets and counts, and
every ``INTERVAL`` it publishes on ``tokex.limits`` (``exchange.broker.subjects.LIMITS``) what it let through since
its last message, and its feed connections per address; every gateway charges the others' usage to its own buckets
(``RateLimiter.charge``, into debt if need be) and adds their connections to its cap.

Message (msgpack, ``Usage``)
    gateway       who sends it (host, pid and a random part): a gateway ignores its own
    taken         limiter name ("key", "address") -> limited key -> tokens taken since the last message
    connections   address -> feed connections open on the sender now: the whole table, sent when it changed and
                  at least every ``FULL_EVERY``; absent when unchanged

How far a burst can overshoot
    A gateway hears of another's usage ``D`` later: ``INTERVAL`` plus the broker's transit, about 0.1 s. Within
    that, each of the other ``N - 1`` gateways lets through at most what its own bucket holds, ``burst + rate·D``.
    So over any stretch of ``T`` seconds a key gets at most ``burst + rate·T + (N - 1)·(burst + rate·D)``
    requests, against ``burst + rate·T`` on one gateway; the debt pays the excess back before the key takes a
    token again, so it does not recur. With the default key limit (50/s, burst 100) on 2 gateways that is at most
    105 requests once. A steady flow at the limit, spread over gateways, overshoots by about ``rate·D`` per
    gateway. Likewise an address opening connections on ``N`` gateways at the same instant may get up to ``N``
    times the cap, until the counts arrive (``D``); after that every gateway refuses it.

Bounds
    A message holds at most ``MAX_ENTRIES`` keys per limiter and ``MAX_ENTRIES`` addresses (the busiest: what is
    left out errs towards letting requests through); a gateway remembers at most ``MAX_PEERS`` others and forgets
    one it has not heard from for ``PEER_TIMEOUT``, with its connections. A lost message is usage not charged,
    never a refusal. In one process nothing of this runs and no broker is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from typing import Annotated

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from api.ratelimit import RateLimiter
from exchange import tasks
from exchange.broker.subjects import LIMITS

log = logging.getLogger(__name__)

INTERVAL = 0.1  # seconds between a gateway's messages
FULL_EVERY = 1.0  # seconds: the connections table is sent whole at least this often
PEER_TIMEOUT = 3.0  # seconds of silence after which a gateway is taken for gone
MAX_ENTRIES = 10_000
MAX_PEERS = 64

Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Name = Annotated[str, msgspec.Meta(max_length=200)]
Table = Annotated[dict[Name, Count], msgspec.Meta(max_length=MAX_ENTRIES)]


class Usage(msgspec.Struct, frozen=True):
    """What one gateway let through since its last message, and its feed connections (the module docstring)."""

    gateway: Name
    taken: Annotated[dict[Name, Table], msgspec.Meta(max_length=16)] = {}
    connections: Table | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Usage).decode


class SharedLimits:
    """Share ``limiters`` (each by its name) and the feed's ``connections`` per address with the other gateways
    on ``nc``; keep ``elsewhere`` (address -> connections open on the others) current for the feed's cap.

        shared = SharedLimits(nc, [services.key_limiter, services.address_limiter], hub.per_address,
                              hub.per_address_elsewhere)
        await shared.start()   # ... await shared.stop()
    """

    def __init__(self, nc: Client, limiters: list[RateLimiter], connections: Counter[str],
                 elsewhere: Counter[str], *, interval: float = INTERVAL, peer_timeout: float = PEER_TIMEOUT) -> None:
        self.nc = nc
        self.limiters = {limiter.name: limiter for limiter in limiters}
        if len(self.limiters) != len(limiters):
            raise ValueError("shared limiters need distinct names: the others find each limiter by its name")
        self.connections = connections
        self.elsewhere = elsewhere
        self.interval = interval
        self.peer_timeout = peer_timeout
        self.gateway = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.peers: dict[str, tuple[float, dict[str, int]]] = {}
        """gateway -> (when last heard, its connections per address)"""
        self.received = 0
        """Messages of other gateways charged here."""
        self.refused = 0
        """Messages that could not be read (not a ``Usage``, or beyond ``MAX_PEERS``)."""
        self._sent: Counter[str] = Counter()
        self._sent_at = 0.0
        self._subscription: Subscription | None = None
        self._task: asyncio.Task | None = None
        self._publish_failed = False

    async def start(self) -> None:
        for limiter in self.limiters.values():
            limiter.usage = Counter()
        self._subscription = await self.nc.subscribe(LIMITS, cb=self._receive)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="shared-limits")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        if self._subscription is not None:
            with contextlib.suppress(NatsError):  # the connection may be closed already
                await self._subscription.unsubscribe()
            self._subscription = None
        for limiter in self.limiters.values():
            limiter.usage = None
        self.elsewhere.clear()  # only this object fills it
        self.peers.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._forget_silent(time.monotonic())
            message = self.usage()
            if message is not None:
                await self._publish(_encode(message))

    def usage(self) -> Usage | None:
        """The message due now, taking this gateway's counts since the last one; None when there is nothing new."""
        taken = {}
        for name, limiter in self.limiters.items():
            counted = limiter.usage
            if counted:
                limiter.usage = Counter()
                entries = counted.most_common(MAX_ENTRIES) if len(counted) > MAX_ENTRIES else counted.items()
                taken[name] = {str(key): count for key, count in entries}
        now = time.monotonic()
        connections = None
        if self.connections != self._sent or now - self._sent_at >= FULL_EVERY:
            table = self.connections
            entries = table.most_common(MAX_ENTRIES) if len(table) > MAX_ENTRIES else table.items()
            connections = {address: count for address, count in entries if count > 0}
            self._sent = Counter(self.connections)
            self._sent_at = now
        if not taken and connections is None:
            return None
        return Usage(self.gateway, taken, connections)

    async def _publish(self, payload: bytes) -> None:
        try:
            await self.nc.publish(LIMITS, payload)
        except NatsError as exc:
            if not self._publish_failed:
                log.warning("shared limits: cannot publish (%s: %s); the other gateways are not told until the "
                            "broker is back", type(exc).__name__, exc)
            self._publish_failed = True
        else:
            self._publish_failed = False

    async def _receive(self, msg: Msg) -> None:
        self.apply(msg.data)

    def apply(self, payload: bytes) -> None:
        """Charge another gateway's usage (a ``Usage`` message) here; ignore this gateway's own."""
        try:
            usage = _decode(payload)
        except msgspec.DecodeError:
            self.refused += 1
            return
        if usage.gateway == self.gateway:
            return
        now = time.monotonic()
        known = self.peers.get(usage.gateway)
        if known is None and len(self.peers) >= MAX_PEERS:
            self.refused += 1
            return
        self.received += 1
        for name, counts in usage.taken.items():
            limiter = self.limiters.get(name)
            if limiter is not None:
                for key, count in counts.items():
                    limiter.charge(key, count)
        before = known[1] if known is not None else {}
        if usage.connections is None:
            self.peers[usage.gateway] = (now, before)
            return
        after = usage.connections
        for address in before.keys() | after.keys():
            change = after.get(address, 0) - before.get(address, 0)
            if change:
                self._adjust(address, change)
        self.peers[usage.gateway] = (now, after)

    def _forget_silent(self, now: float) -> None:
        for gateway, (heard, connections) in list(self.peers.items()):
            if now - heard > self.peer_timeout:
                log.info("shared limits: gateway %s silent for %.0f s, its connections no longer count",
                         gateway, now - heard)
                del self.peers[gateway]
                for address, count in connections.items():
                    self._adjust(address, -count)

    def _adjust(self, address: str, change: int) -> None:
        count = self.elsewhere[address] + change
        if count > 0:
            self.elsewhere[address] = count
        else:
            self.elsewhere.pop(address, None)
