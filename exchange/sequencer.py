"""The single writer: commands in order, applied in memory, committed in groups, answered after the commit.

Flow
----
``submit`` queues a command with a future and wakes the writer task. The writer takes everything queued
(up to ``max_batch``), applies each command to the engine (hold → match → settle), commits the batch's
effects in one transaction, and only then answers each caller and hands the book events to ``publish``.
While one batch commits, the next accumulates in the queue: that is the group commit, one fsync per batch
instead of one per order.

Failure
-------
If the commit fails (the database is gone, or a bug raised while applying), no command of the batch is
answered with success: each caller gets ``Unavailable``. The engine's memory is ahead of the database then,
so it is thrown away; the sequencer refuses new commands (``Unavailable``, immediately) until it has
reloaded the engine from the database, retrying until the database is back.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from exchange import store
from exchange.commands import Command, Result
from exchange.engine import Engine

log = logging.getLogger(__name__)

# What a lost or failing database looks like to asyncpg: connection errors are OSErrors or asyncpg's
# own interface errors; server-side failures (shutdown, disk full, serialization) are PostgresErrors.
DATABASE_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Unavailable(Exception):
    """The exchange cannot accept commands right now; nothing of this command was applied. Retry later."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


Publisher = Callable[[list[tuple[str, list]]], None]


class Sequencer:
    """Owns the engine; the only code that changes it."""

    def __init__(self, pool: asyncpg.Pool, engine: Engine, publish: Publisher | None = None,
                 max_batch: int = 4096, retry_interval: float = 0.5) -> None:
        self.pool = pool
        self.engine = engine
        self.publish = publish
        self.max_batch = max_batch
        self.retry_interval = retry_interval
        self.down: str | None = None
        """Why commands are refused, while the engine is being rebuilt."""
        self._queue: list[tuple[Command, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.batches = 0

    @classmethod
    async def open(cls, pool: asyncpg.Pool, **options) -> "Sequencer":
        """Load the engine from the database and start writing."""
        async with pool.acquire() as conn:
            engine = await store.load(conn)
        sequencer = cls(pool, engine, **options)
        sequencer.start()
        return sequencer

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sequencer")

    async def stop(self) -> None:
        """Finish the queued commands, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def submit(self, command: Command) -> Result:
        """Apply ``command``; return its result once committed. Raise ``Unavailable`` if it cannot be."""
        if self.down is not None:
            raise Unavailable(self.down)
        if self._stopping:
            raise Unavailable("the exchange is shutting down")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Command, asyncio.Future]]) -> None:
        now = time.time_ns() // 1000
        at = datetime.fromtimestamp(now / 1_000_000, UTC)
        try:
            results = [self.engine.apply(command, now, at) for command, _ in batch]
            effects = self.engine.take_effects()
            async with self.pool.acquire() as conn:
                await store.write(conn, effects)
        except DATABASE_ERRORS as exc:
            await self._fail(batch, f"the database is unavailable ({type(exc).__name__})")
            return
        except Exception:
            # A bug while applying leaves memory half-changed: the database is the truth to go back to.
            log.exception("applying a batch failed; rebuilding from the database")
            await self._fail(batch, "the exchange hit an internal error and is recovering")
            return
        self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self.publish is not None and effects.events:
            try:
                self.publish(effects.events)
            except Exception:
                # Market data is downstream of the commit: its failure must not stop the writer.
                log.exception("publishing a committed batch failed")

    async def _fail(self, batch: list[tuple[Command, asyncio.Future]], reason: str) -> None:
        self.down = reason
        pending = batch + self._queue
        self._queue = []
        for _, future in pending:
            if not future.done():
                future.set_exception(Unavailable(reason))
        while not self._stopping:
            try:
                async with self.pool.acquire() as conn:
                    self.engine = await store.load(conn)
            except DATABASE_ERRORS:
                await asyncio.sleep(self.retry_interval)
                continue
            log.info("engine rebuilt from the database; accepting commands again")
            self.down = None
            return
