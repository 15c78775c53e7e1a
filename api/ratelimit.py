"""Token-bucket rate limits: per API key for signed requests, per client address for public ones.

Each bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a request takes one. An empty
bucket answers how long until the next token, which becomes the 429's ``Retry-After``. Requests that fail
authentication are counted against their address, so guessing signatures is throttled too; and once an
address has no token left, a request under a key that would have to be looked up is refused before the lookup
(``wait``), so made-up keys cost no query.

Every answer to a rate-limited request tells its state in the IETF header fields (draft-ietf-httpapi-ratelimit-
headers): ``RateLimit-Policy: "key";q=100;w=2`` says the bucket holds 100 requests and refills completely in 2
seconds (the quota of a window that long), and ``RateLimit: "key";r=57;t=1`` that 57 requests are left now and
the bucket is full again in 1 second. The policy is named by what it counts: ``key`` or ``address``. A refused
request also has ``Retry-After``; the refusals are counted in ``refusals``, for the server's metrics.

Buckets live in memory, in this process. Full buckets carry no information, so the table is pruned of them
when it grows past ``max_keys``; memory stays bounded under a flood of distinct addresses. Where several gateways
serve one exchange, ``api.shared_limits`` tells each one's limiter what the others let through (``charge``), so a
key's budget is the same however its requests are spread; a limiter records what it lets through for that only when
it is shared (``usage``).
"""

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimits:
    """The limits a server applies; a rate of None turns that limit off."""

    per_key_rate: float | None = 50.0
    per_key_burst: float = 100.0
    per_address_rate: float | None = 20.0
    per_address_burst: float = 40.0


class RateLimiter:
    """Buckets by key (any hashable); ``take`` answers 0.0 when allowed, else the seconds to wait."""

    def __init__(self, rate: float | None, burst: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000, name: str = "default") -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self.name = name
        self.refusals = 0
        self._buckets: dict[object, list[float]] = {}
        self.policy = "" if rate is None else f'"{name}";q={math.floor(burst)};w={math.ceil(burst / rate)}'
        """The RateLimit-Policy field value; empty when the limit is off."""
        self.usage: Counter[object] | None = None
        """When a Counter (the limiter is shared), every token taken is counted in it, by key."""

    def __len__(self) -> int:
        """Buckets held."""
        return len(self._buckets)

    def take(self, key: object) -> float:
        if self.rate is None:
            return 0.0
        bucket = self._refilled(key)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            if self.usage is not None:
                self.usage[key] += 1
            return 0.0
        self.refusals += 1
        return (1.0 - bucket[0]) / self.rate

    def wait(self, key: object) -> float:
        """The seconds until ``key`` may take a token (0.0: now), taking none."""
        bucket = self._buckets.get(key)
        if self.rate is None or bucket is None:
            return 0.0
        tokens = min(self.burst, bucket[0] + (self.clock() - bucket[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def charge(self, key: object, count: int) -> None:
        """Spend ``count`` tokens that ``key`` took elsewhere (on another gateway), into debt if need be.

        A bucket may go below zero: what another gateway let through before this one heard of it is paid back
        before ``key`` takes a token here again, so the overshoot of a burst is bounded and never repeats.
        """
        if self.rate is None:
            return
        self._refilled(key)[0] -= count

    def headers(self, key: object) -> dict[str, str]:
        """The RateLimit and RateLimit-Policy fields of ``key``'s bucket as ``take`` left it; none when off."""
        bucket = self._buckets.get(key)
        if self.rate is None or bucket is None:
            return {}
        tokens = bucket[0]
        reset = math.ceil((self.burst - tokens) / self.rate)
        return {"RateLimit-Policy": self.policy,
                "RateLimit": f'"{self.name}";r={max(0, math.floor(tokens))};t={reset}'}

    def _refilled(self, key: object) -> list[float]:
        """``key``'s bucket (a full one when it has none), refilled up to now: ``[tokens, now]``."""
        assert self.rate is not None
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = [self.burst, now]
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        return bucket

    def _prune(self, now: float) -> None:
        assert self.rate is not None
        rate, burst = self.rate, self.burst
        for key, (tokens, updated) in list(self._buckets.items()):
            # A bucket in debt (``charge``) takes longer to be full again.
            if (now - updated) * rate >= burst - tokens:
                del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            # Everyone is active: forgetting some buckets only errs towards letting requests through.
            self._buckets.clear()
