"""What a running server hands its handlers: the pool, the sequencer, the market view, keys and limits."""

import asyncio
from dataclasses import dataclass

import asyncpg

from api.keys import KeyStore
from api.marketdata import MarketData
from api.ratelimit import RateLimiter
from exchange.scheduler import Scheduler
from exchange.sequencer import Sequencer

READ_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)
"""What a lost, stopping or overloaded database looks like to a read: answered with 503, not 500."""


@dataclass
class Services:
    """Built by the app's lifespan; ``app.state.services`` while the app runs."""

    pool: asyncpg.Pool
    sequencer: Sequencer
    market: MarketData
    keys: KeyStore
    key_limiter: RateLimiter
    address_limiter: RateLimiter
    scheduler: Scheduler
    acquire_timeout: float = 5.0

    def connection(self):
        """``async with services.connection() as conn:`` a pooled connection, or a timeout (503)."""
        return self.pool.acquire(timeout=self.acquire_timeout)
