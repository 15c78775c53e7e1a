"""The single writer: commands in order, applied in memory, committed in groups, answered after the commit.

Flow
----
``submit`` queues a command with a future and wakes the applier task (``enqueue`` queues it with an ``Answer`` of the
caller's, for callers that answer without a task per command, such as the command bus of ``exchange.broker.commands``).
The applier takes what is queued (up to ``max_batch``), applies each command to the engine (hold → match → settle) and
makes the batch's rows; the writer task commits them atomically, and only then answers each caller and hands the book
events to ``publish``. While one batch commits, the next is applied and waits to be written after it: that is the group
commit, one fsync per batch instead of one per order, with Python and PostgreSQL working at the same time. The writer
sends a waiting batch the moment the previous one has committed, before the callers it answered run, so the server is
never left idle while Python works.

One writer
----------
The sequencer writes through one connection of its own, which holds a PostgreSQL advisory lock, the database's
one writer lock, for as long as it writes. A second process on the same database waits for it (and gives up with
a clear error after ``lock_timeout``); after a crash, the restarted process waits until the dead writer's session
is gone, so it never loads the database while the old writer's last commit is still landing. A process that
must not wait (a server starting, an admin command) asks ``writer_running`` first and stops at once. The
connection plans the batch statement once, with key lookups only (``WRITER_SETTINGS``).

Failure
-------
If the commit fails (the database is gone, or a bug raised while applying), no command of the batch, nor of
the batch applied behind it, is answered with success: each caller gets ``Unavailable``. The engine's memory
is ahead of the database then, so it is thrown away; the sequencer refuses new commands (``Unavailable``,
immediately) until it has reloaded the engine from the database, retrying until the database is back.

A commit can also fail after PostgreSQL committed (the connection drops once COMMIT was sent): the reload then
brings the batch back, which nobody downstream has seen. So every reload is followed by ``resync``, which hands
the market data consumers the committed state before a new command is taken. A ``publish`` that raised partway
leaves them as unsure, so it is followed by ``resync`` too, before the next batch is published (the writer runs
it between two commits, when what is committed is exactly what the engine holds).
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from exchange import store
from exchange.commands import Command, Result
from exchange.database.queries import sql
from exchange.engine import Engine
from exchange.settlement import Effects

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
TRY_WRITER_LOCK = sql("try_writer_lock")
RELEASE_WRITER_LOCK = sql("release_writer_lock")
PING = sql("ping")
WRITER_SETTINGS = sql("writer_settings")
"""The writer connection's planner settings: the batch statement is planned once, with key lookups only."""


class Unavailable(Exception):
    """The exchange cannot accept commands right now; nothing of this command was applied. Retry later."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


Publisher = Callable[[list[tuple[str, list]], list[int]], None]
"""Called with a committed batch's (symbol, book events) and the ids of its fills, one per Trade event, in order."""
EffectsPublisher = Callable[[Effects], None]
"""Called with every committed batch's effects, in commit order (the feed's user channel: orders, fills, balances)."""
Resync = Callable[[asyncpg.Connection], Awaitable[None]]
"""Rebuilds the market data consumers from the database, while nothing commits."""


class Answer(Protocol):
    """Where a command's outcome goes: an ``asyncio.Future``, or anything with the three methods it is given by."""

    def done(self) -> bool: ...

    def set_result(self, result: Result) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...


Batch = list[tuple[Command, bytes | None, bool, Answer]]
"""Commands with the digests of the signed requests that carry them (``exchange.replay``), whether each is a
gateway's retry (``Engine.apply``), and where their outcomes go."""


class Sequencer:
    """Owns the engine; the only code that changes it."""

    def __init__(self, pool: asyncpg.Pool, engine: Engine, publish: Publisher | None = None,
                 max_batch: int = 4096, retry_interval: float = 0.5, clock: Callable[[], int] | None = None,
                 resync: Resync | None = None, publish_effects: EffectsPublisher | None = None) -> None:
        self.pool = pool
        self.clock = clock or wall_clock
        """Microseconds since the epoch for each batch: the engine's only time (injectable for tests)."""
        self.engine = engine
        self.publish = publish
        self.resync = resync
        self.publish_effects = publish_effects
        self._market_unsure = False
        """The market data consumers may not match the database (a reload, or a ``publish`` that raised), so they
        need ``resync`` before the next batch is published."""
        self.max_batch = max_batch
        self.retry_interval = retry_interval
        self.down: str | None = None
        """Why commands are refused, while the engine is being rebuilt."""
        self._queue: Batch = []
        self._wake = asyncio.Event()
        """Set when the applier may have work: a command arrived, or the writer took the applied batch."""
        self._applied: tuple[Batch, tuple[list[Result], store.Write] | None] | None = None
        """The batch applied in memory and waiting for the writer (None in place of its results: applying it
        failed); at most one waits."""
        self._applied_ready = asyncio.Event()
        self._committing = False
        self._closing = False
        """The applier has stopped: the writer ends once the last applied batch is written."""
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._writer: asyncpg.Connection | None = None
        """The connection that holds the writer lock and commits every batch."""
        self.batches = 0
        self.refused = 0
        """Commands answered ``Unavailable``."""
        self.on_commit: Callable[[Batch, list[Result], float], None] | None = None
        """Called with each committed batch, its results and the seconds its write took (for metrics)."""

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

    @property
    def queue_depth(self) -> int:
        """Commands waiting to be applied."""
        return len(self._queue)

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
                await lock.execute(RELEASE_WRITER_LOCK, WRITER_LOCK)
                await self.pool.release(lock)
            except DATABASE_ERRORS:
                lock.terminate()  # the session is gone or going: the lock goes with it

    async def submit(self, command: Command, request: bytes | None = None) -> Result:
        """Apply ``command``; return its result once committed. Raise ``Unavailable`` if it cannot be.

        ``request``, the digest of the signed request carrying the command, is committed with its effects; the
        same digest again is refused (``Engine.apply``)."""
        return await self.enqueue(command, request)

    def enqueue(self, command: Command, request: bytes | None = None, retry: bool = False,
                answer: Answer | None = None) -> Answer:
        """Queue ``command``; ``answer`` (a new future if None) gets its result once committed, or ``Unavailable``.

        ``submit`` for callers that answer without a task per command (``exchange.broker.commands`` passes an
        ``answer`` of its own, which spares each command a future and a callback). ``retry`` marks a gateway
        sending a command again: if its request was applied before, the answer is the original result
        (``Engine.apply``). Raise ``Unavailable`` at once when commands are refused."""
        if self.down is not None:
            self.refused += 1
            raise Unavailable(self.down)
        if self._stopping:
            self.refused += 1
            raise Unavailable("the exchange is shutting down")
        if answer is None:
            answer = asyncio.get_running_loop().create_future()
        self._queue.append((command, request, retry, answer))
        self._wake.set()
        return answer

    async def _run(self) -> None:
        """Apply queued commands batch by batch and hand each applied batch to the writer, in order."""
        writer = asyncio.get_running_loop().create_task(self._write(), name="sequencer-writer")
        while True:
            if not self._queue or self._applied is not None:
                if self._stopping and not self._queue and self._applied is None:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            # Keep two batches in flight, so that applying one overlaps committing the other: with no commit
            # under way, take half of what waits and leave the rest to follow at once.
            size = len(self._queue) if self._committing else (len(self._queue) + 1) // 2
            size = min(size, self.max_batch)
            batch = self._queue[:size]
            del self._queue[:size]
            self._applied = (batch, self._apply(batch))
            self._applied_ready.set()
        self._closing = True
        self._applied_ready.set()
        await writer

    async def _write(self) -> None:
        """Commit applied batches one after the other.

        The next batch's statement goes out as soon as the previous one has committed, before the callers it
        answered get to run: their next commands make the batch after, applied while this one commits.
        """
        while True:
            if self._market_unsure:
                await self._resync_market()
            if self._applied is None:
                if self._closing:
                    return
                self._applied_ready.clear()
                await self._applied_ready.wait()
                continue
            batch, applied = self._applied
            self._applied = None
            self._wake.set()  # the applier may apply the next batch while this one commits
            if applied is None:
                await self._fail(batch, "the exchange hit an internal error and is recovering")
                continue
            self._committing = True
            await self._commit(batch, *applied)
            self._committing = False

    def _apply(self, batch: Batch) -> tuple[list[Result], store.Write] | None:
        """Run a batch through the engine and make its rows; None if a bug raised (memory is then half-changed)."""
        now = self.clock()
        at = EPOCH + timedelta(microseconds=now)
        try:
            apply = self.engine.apply
            results = [apply(command, now, at, request, retry) for command, request, retry, _ in batch]
            return results, store.Write(self.engine.take_effects())
        except Exception:
            log.exception("applying a batch failed; rebuilding from the database")
            return None

    async def _commit(self, batch: Batch, results: list[Result],
                      write: store.Write) -> None:
        """Write one applied batch; answer its callers and publish it if it committed."""
        try:
            if self._writer is None:
                raise asyncpg.InterfaceError("the sequencer has no writer connection")
            started = time.perf_counter()
            await store.write(self._writer, write)
            seconds = time.perf_counter() - started
        except DATABASE_ERRORS as exc:
            await self._fail(batch, f"the database is unavailable ({type(exc).__name__})")
            return
        except Exception:
            # Whatever else stops a write, the batch did not commit; the database is the truth to go back to.
            log.exception("writing a batch failed; rebuilding from the database")
            await self._fail(batch, "the exchange hit an internal error and is recovering")
            return
        self.batches += 1
        if self.publish is not None and write.effects.events and not self._market_unsure:
            # Scheduled, not called: the writer sends the next batch's statement first. It still runs before
            # the answered callers resume, whose answers are scheduled after it. Once a publish has failed, the
            # resync that follows this commit covers this batch too.
            asyncio.get_running_loop().call_soon(self._publish, write.effects)
        if self.publish_effects is not None:
            asyncio.get_running_loop().call_soon(self._publish_effects, write.effects)
        for (_, _, _, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self.on_commit is not None:
            self.on_commit(batch, results, seconds)

    def _publish(self, effects: Effects) -> None:
        assert self.publish is not None
        try:
            self.publish(effects.events, [fill[0] for fill in effects.fills])
        except Exception:
            # Market data is downstream of the commit: its failure must not stop the writer.
            log.exception("publishing a committed batch failed; market data will be rebuilt from the database")
            if self.resync is not None:
                self._market_unsure = True
                self._applied_ready.set()  # an idle writer resyncs now rather than at the next batch

    def _publish_effects(self, effects: Effects) -> None:
        assert self.publish_effects is not None
        try:
            self.publish_effects(effects)
        except Exception:
            # Downstream of the commit, as market data: the resync that follows sends subscribers fresh snapshots.
            log.exception("publishing a committed batch's account events failed; rebuilding from the database")
            if self.resync is not None:
                self._market_unsure = True
                self._applied_ready.set()

    async def _resync_market(self) -> None:
        """Rebuild the market data consumers between two commits; on failure, try again before the next one.

        A failure here never stops the exchange: market data is downstream of the commits."""
        try:
            await self._resync()
        except Exception:
            log.exception("rebuilding market data failed; retrying before the next commit")

    async def _resync(self) -> None:
        assert self.resync is not None
        async with self.pool.acquire(timeout=self.retry_interval * 20) as conn:
            await self.resync(conn)
        self._market_unsure = False

    def _refuse(self, batch: Batch, reason: str) -> None:
        self.refused += len(batch)
        for _, _, _, future in batch:
            if not future.done():
                future.set_exception(Unavailable(reason))

    async def _fail(self, batch: Batch, reason: str) -> None:
        self.down = reason
        pending = batch + self._queue
        self._queue = []
        if self._applied is not None:
            # Applied on top of the failed batch, so it is lost with it.
            pending += self._applied[0]
            self._applied = None
            self._wake.set()
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
            if self.resync is not None:
                # The failed batch may have committed all the same: market data starts again from the database.
                self._market_unsure = True
                await self._resync_market()
            log.info("engine rebuilt from the database; accepting commands again")
            self.down = None
            return

    async def _keep_writer(self) -> asyncpg.Connection:
        """The writer connection, still holding the lock, or a new one that has claimed it anew."""
        if self._writer is not None:
            try:
                await self._writer.fetchval(PING)
                return self._writer
            except DATABASE_ERRORS:
                lost, self._writer = self._writer, None
                lost.terminate()
                await self.pool.release(lost)
        self._writer = await claim_writer_lock(self.pool, timeout=self.retry_interval * 20)
        return self._writer


async def writer_running(dsn: str) -> bool:
    """Whether a sequencer writes to the database at ``dsn`` now: at once, where ``Sequencer.open`` would wait."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval(TRY_WRITER_LOCK, WRITER_LOCK):
            return True
        await conn.execute(RELEASE_WRITER_LOCK, WRITER_LOCK)
        return False
    finally:
        await conn.close()


class WriterLockTimeout(RuntimeError):
    """Another process holds this database's writer lock."""


async def claim_writer_lock(pool: asyncpg.Pool, timeout: float) -> asyncpg.Connection:
    """Take a pool connection for writing and the writer lock on it; wait up to ``timeout`` seconds for the lock."""
    conn = await pool.acquire()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await conn.execute(WRITER_SETTINGS)
        while not await conn.fetchval(TRY_WRITER_LOCK, WRITER_LOCK):
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
