"""What a running server hands its handlers: the pool, the sequencer, the market view, keys and limits."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from api.keys import KeyStore
from api.marketdata import MarketData
from api.ratelimit import RateLimiter
from exchange.broker.commands import Heartbeat, RemoteSequencer
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
    sequencer: Sequencer | RemoteSequencer
    market: MarketData
    keys: KeyStore
    key_limiter: RateLimiter
    address_limiter: RateLimiter
    scheduler: Scheduler | None
    """None on a gateway: the package scheduler runs on the leading engine."""
    leader: Callable[[], Heartbeat | None]
    """The engine leading now (host, pid, since), as its last heartbeat says; one process leads itself."""
    reads: asyncpg.Pool | None = None
    """Where reads that may lag the primary a little go (a replica's pool on a gateway given one); None: ``pool``."""
    acquire_timeout: float = 5.0

    def connection(self):
        """``async with services.connection() as conn:`` a pooled connection of the primary, or a timeout (503)."""
        return self.pool.acquire(timeout=self.acquire_timeout)

    def read_connection(self):
        """``async with services.read_connection() as conn:`` a connection for reads that may lag the primary by
        what a replica lags (well under a second when it keeps up): listings, history, candles, an account's
        orders, fills and balances read on their own. A read that must see a write just made (a key, an answer
        read back) uses ``connection``."""
        return (self.reads or self.pool).acquire(timeout=self.acquire_timeout)

    def wake_scheduler(self) -> None:
        """Have the package scheduler look for due periods now; a gateway's engine looks within a second anyway."""
        if self.scheduler is not None:
            self.scheduler.wake()
