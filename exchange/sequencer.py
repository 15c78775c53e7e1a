"""The single writer: commands in order, applied in memory, committed in groups, answered after the commit.

Flow
----
``submit`` queues a command with a future and wakes the writer task. The writer takes what is queued (up to
``max_batch``), applies each command to the engine (hold → match → settle), commits the batch's effects
atomically, and only then answers each caller and hands the book events to ``publish``. While one batch
commits, the next is applied in memory and waits to be written after it: that is the group commit, one fsync
per batch instead of one per order, with Python and PostgreSQL working at the same time.

One writer
----------
The sequencer writes through one connection of its own, which holds a PostgreSQL advisory lock for as long as
it writes. A second process on the same database waits for it (and gives up with a clear error after
``lock_timeout``); after a crash, the restarted process waits until the dead writer's session is gone, so it
never loads the database while the old writer's last commit is still landing. The connection asks for custom
plans: the batch statements see tables that grow from nothing, and a generic plan chosen while they were tiny
would stay slow.

Failure
-------
If the commit fails (the database is gone, or a bug raised while applying), no command of the batch, nor of
the batch applied behind it, is answered with success: each caller gets ``Unavailable``. The engine's memory
is ahead of the database then, so it is thrown away; the sequencer refuses new commands (``Unavailable``,
immediately) until it has reloaded the engine from the database, retrying until the database is back.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from exchange import store
from exchange.commands import Command, Result
from exchange.engine import Effects, Engine

log = logging.getLogger(__name__)

# What a lost or failing database looks like to asyncpg: connection errors are OSErrors or asyncpg's
# own interface errors; server-side failures (shutdown, disk full, serialization) are PostgresErrors.
DATABASE_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def wall_clock() -> int:
    """Microseconds since the epoch, now."""
    return time.time_ns() // 1000


WRITER_LOCK = int.from_bytes(b"tokexwri", "big", signed=True)
"""The advisory lock key held by the one writer of a database."""


class Unavailable(Exception):
    """The exchange cannot accept commands right now; nothing of this command was applied. Retry later."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


Publisher = Callable[[list[tuple[str, list]]], None]


class Sequencer:
    """Owns the engine; the only code that changes it."""

    def __init__(self, pool: asyncpg.Pool, engine: Engine, publish: Publisher | None = None,
                 max_batch: int = 4096, retry_interval: float = 0.5, clock: Callable[[], int] | None = None) -> None:
        self.pool = pool
        self.clock = clock or wall_clock
        """Microseconds since the epoch for each batch: the engine's only time (injectable for tests)."""
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
        self._writer: asyncpg.Connection | None = None
        """The connection that holds the writer lock and commits every batch."""
        self.batches = 0

    @classmethod
    async def open(cls, pool: asyncpg.Pool, lock_timeout: float = 30.0, **options) -> "Sequencer":
        """Become the database's writer, load the engine from it and start writing."""
        lock = await claim_writer_lock(pool, lock_timeout)
        try:
            engine = await store.load(lock)
        except BaseException:
            await pool.release(lock)
            raise
        sequencer = cls(pool, engine, **options)
        sequencer._writer = lock
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
        if self._writer is not None:
            lock, self._writer = self._writer, None
            try:
                await lock.execute("SELECT pg_advisory_unlock($1)", WRITER_LOCK)
                await self.pool.release(lock)
            except DATABASE_ERRORS:
                lock.terminate()  # the session is gone or going: the lock goes with it

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
        writing: asyncio.Task | None = None  # the previous batch's commit, still under way
        while True:
            if not self._queue:
                if writing is not None:
                    await writing
                    writing = None
                elif self._stopping:
                    return
                else:
                    self._wake.clear()
                    await self._wake.wait()
                continue
            # Keep two batches in flight, so that applying one overlaps committing the other: with no commit
            # under way, take half of what waits and leave the rest to follow at once.
            size = len(self._queue) if writing is not None else (len(self._queue) + 1) // 2
            size = min(size, self.max_batch)
            batch = self._queue[:size]
            del self._queue[:size]
            applied = self._apply(batch)
            if writing is not None:
                committed = await writing
                writing = None
                if not committed:
                    # The engine was rebuilt from the database without the failed batch, and without this one.
                    self._refuse(batch, self.down or "the database is unavailable")
                    continue
            if applied is None:
                await self._fail(batch, "the exchange hit an internal error and is recovering")
                continue
            writing = asyncio.get_running_loop().create_task(self._commit(batch, *applied))
            await asyncio.sleep(0)  # let the commit send its statement before the next batch is applied

    def _apply(self, batch: list[tuple[Command, asyncio.Future]]) -> tuple[list[Result], Effects] | None:
        """Run a batch through the engine; None if a bug raised (memory is then half-changed)."""
        now = self.clock()
        at = EPOCH + timedelta(microseconds=now)
        try:
            results = [self.engine.apply(command, now, at) for command, _ in batch]
            return results, self.engine.take_effects()
        except Exception:
            log.exception("applying a batch failed; rebuilding from the database")
            return None

    async def _commit(self, batch: list[tuple[Command, asyncio.Future]], results: list[Result],
                      effects: Effects) -> bool:
        """Write one applied batch; answer its callers and publish it if it committed."""
        try:
            if self._writer is None:
                raise asyncpg.InterfaceError("the sequencer has no writer connection")
            await store.write(self._writer, effects)
        except DATABASE_ERRORS as exc:
            await self._fail(batch, f"the database is unavailable ({type(exc).__name__})")
            return False
        except Exception:
            # Whatever else stops a write, the batch did not commit; the database is the truth to go back to.
            log.exception("writing a batch failed; rebuilding from the database")
            await self._fail(batch, "the exchange hit an internal error and is recovering")
            return False
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
        return True

    @staticmethod
    def _refuse(batch: list[tuple[Command, asyncio.Future]], reason: str) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(Unavailable(reason))

    async def _fail(self, batch: list[tuple[Command, asyncio.Future]], reason: str) -> None:
        self.down = reason
        pending = batch + self._queue
        self._queue = []
        self._refuse(pending, reason)
        while not self._stopping:
            try:
                writer = await self._keep_writer()
                self.engine = await store.load(writer)
            except (*DATABASE_ERRORS, WriterLockTimeout):
                await asyncio.sleep(self.retry_interval)
                continue
            except Exception:
                # Rebuilding must outlast anything the way back throws: the writer is the only way back.
                log.exception("rebuilding the engine failed; retrying")
                await asyncio.sleep(self.retry_interval)
                continue
            log.info("engine rebuilt from the database; accepting commands again")
            self.down = None
            return

    async def _keep_writer(self) -> asyncpg.Connection:
        """The writer connection, still holding the lock, or a new one that has claimed it anew."""
        if self._writer is not None:
            try:
                await self._writer.fetchval("SELECT 1")
                return self._writer
            except DATABASE_ERRORS:
                lost, self._writer = self._writer, None
                lost.terminate()
                await self.pool.release(lost)
        self._writer = await claim_writer_lock(self.pool, timeout=self.retry_interval * 20)
        return self._writer


class WriterLockTimeout(RuntimeError):
    """Another process holds this database's writer lock."""


async def claim_writer_lock(pool: asyncpg.Pool, timeout: float) -> asyncpg.Connection:
    """Take a pool connection for writing and the writer lock on it; wait up to ``timeout`` seconds for the lock."""
    conn = await pool.acquire()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", WRITER_LOCK):
            if loop.time() > deadline:
                raise WriterLockTimeout(
                    f"another tokex process has been writing to this database for over {timeout:.0f} s; "
                    "stop it, or point this one at another database"
                )
            await asyncio.sleep(0.05)
    except BaseException:
        await pool.release(conn)
        raise
    return conn
