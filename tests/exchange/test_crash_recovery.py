"""Crash recovery: a worker process trading through the sequencer is SIGKILLed, then the exchange restarts.

Each run starts ``loadtest.exchange_worker`` as a child process on the same database, lets its clients trade
for a seeded random while and kills it with SIGKILL, so the kill lands anywhere: between batches, during a
commit, between a commit and the client's ack log line. The ack log is what the clients were told; after
the restart the database must hold all of it, and the rebuilt exchange must carry on from where it stopped.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from exchange import invariants, store
from exchange.commands import CreateAccount, Deposit, Done, OrderView, PlaceOrder
from exchange.sequencer import Sequencer
from loadtest.durability import FILLS_DISAGREE, ORPHAN_FILLS, SETTLED_TWICE
from loadtest.exchange_worker import MID, SYMBOL, TICK, contradictions, prepare, read_acks
from matching.types import BUY, IOC, SELL

pytestmark = pytest.mark.slow  # a drill

REPO = Path(__file__).resolve().parents[2]
SEED = 20261127
KILL_WINDOWS = ((0.3, 0.8), (0.8, 1.8), (1.8, 3.0))
"""Seconds after the worker is ready, one window per run: early, middle and late in a growing database."""
READY_TIMEOUT = 60.0

OTHER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


async def run_worker_until_killed(dsn: str, ack_log: Path, seed: int, kill_after: float) -> str:
    """Run the worker, SIGKILL it ``kill_after`` seconds after its setup is done; return its stderr."""
    stderr_path = ack_log.with_suffix(".stderr")
    with stderr_path.open("wb") as stderr:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.exchange_worker", "--dsn", dsn, "--ack-log", str(ack_log),
            "--clients", "8", "--orders", "1000000", "--seed", str(seed),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )
        try:
            line = await asyncio.wait_for(child.stdout.readline(), READY_TIMEOUT)
            assert line == b"ready\n", f"the worker did not get ready:\n{stderr_path.read_text()}"
            await asyncio.sleep(kill_after)
            assert child.returncode is None, f"the worker stopped before the kill:\n{stderr_path.read_text()}"
        finally:
            if child.returncode is None:
                child.send_signal(signal.SIGKILL)
            await child.wait()
    assert child.returncode == -signal.SIGKILL
    return stderr_path.read_text()


async def wait_for_dead_sessions(dsn: str, timeout: float = 30.0) -> None:
    """Wait until no other session uses the database: a killed worker's last COMMIT may still be landing.

    The server finishes a COMMIT it has received even when the client is gone, so a restart that loads
    before that would miss the batch (see ``test_a_restart_waits_for_the_old_writer_to_finish``).
    """
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval(OTHER_SESSIONS):
            assert time.monotonic() < deadline, "the killed worker's sessions did not end"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def check_recovery(dsn: str, acks: list, run: int) -> None:
    await wait_for_dead_sessions(dsn)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        async with pool.acquire() as conn:
            engine = await store.load(conn)
            assert await invariants.problems(conn, engine) == []
            assert await contradictions(conn, (ack.pair() for ack in acks)) == []
            assert await conn.fetchval("SELECT count(*) = count(DISTINCT id) FROM fill")
            assert await conn.fetch(FILLS_DISAGREE) == []
            assert await conn.fetch(SETTLED_TWICE) == []
            assert await conn.fetch(ORPHAN_FILLS) == []
            # Sequence numbers continue: nothing committed carries a number above the instrument's.
            seq_now, max_fill_seq, max_priority, orders_before = await conn.fetchrow(
                "SELECT s.seq, (SELECT coalesce(max(seq), 0) FROM fill), (SELECT max(priority) FROM book_order), "
                "(SELECT count(*) FROM book_order) FROM instrument i JOIN instrument_seq s ON s.instrument_id = i.id "
                "WHERE i.symbol = $1", SYMBOL
            )
            assert seq_now >= max_fill_seq and seq_now >= max_priority
            max_fill_id = await conn.fetchval("SELECT max(id) FROM fill")

        seq = await Sequencer.open(pool)
        try:
            # Sending an acknowledged client order id again answers with the original order, changing nothing.
            placed = [(ack.command, ack.result) for ack in acks if isinstance(ack.command, PlaceOrder)]
            placed = [(command, result) for command, result in placed if isinstance(result, OrderView)]
            assert placed, "the kill came before any order was acknowledged"
            again = await asyncio.gather(*(seq.submit(command) for command, _ in placed))
            for (_, original), result in zip(placed, again, strict=True):
                assert isinstance(result, OrderView | Done) and result.id == original.id
                if isinstance(result, OrderView):
                    assert result.client_order_id == original.client_order_id
                    assert result.filled_qty >= original.filled_qty

            # A new order is placed and matched, continuing ids and sequence numbers.
            issuer = next(a.id for a in seq.engine.accounts.values() if a.name == "loadtest-issuer")
            buyer = (await seq.submit(CreateAccount(f"recovery-buyer-{run}", "trader"))).id
            await seq.submit(Deposit(buyer, 1_000 * 1_000_000))
            far = MID + 50 * TICK  # above every bid the worker sends, so the sell rests
            sell = await seq.submit(PlaceOrder(issuer, SYMBOL, SELL, price=far, qty=1))
            assert isinstance(sell, OrderView) and sell.status == "open"
            buy = await seq.submit(PlaceOrder(buyer, SYMBOL, BUY, price=far, qty=1, tif=IOC))
            assert isinstance(buy, OrderView) and buy.status == "filled", buy
            assert buy.fills[0].fill_id == (max_fill_id or 0) + 1
        finally:
            await seq.stop()

        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM book_order") == orders_before + 2
            assert await conn.fetchval("SELECT seq FROM fill WHERE id = $1", buy.fills[0].fill_id) > seq_now
            assert await invariants.problems(conn, seq.engine) == []


async def test_acknowledged_orders_survive_sigkill_and_the_exchange_carries_on(
    migrated_database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    for run, window in enumerate(KILL_WINDOWS):
        ack_log = tmp_path / f"acks-{run}.jsonl"
        kill_after = rng.uniform(*window)
        stderr = await run_worker_until_killed(migrated_database_url, ack_log, SEED + run, kill_after)
        acks = read_acks(str(ack_log))
        assert acks, f"run {run}: nothing was acknowledged in {kill_after:.2f} s\n{stderr}"
        await check_recovery(migrated_database_url, acks, run)
        os.unlink(ack_log)


async def test_a_restart_waits_for_the_old_writer_to_finish(migrated_database_url: str) -> None:
    async with (asyncpg.create_pool(migrated_database_url, min_size=1, max_size=2) as old_pool,
                asyncpg.create_pool(migrated_database_url, min_size=1, max_size=2) as new_pool):
        old = await Sequencer.open(old_pool)
        market = await prepare(old)
        # The restart begins while the old writer still has a commit to land...
        restart = asyncio.create_task(Sequencer.open(new_pool))
        await asyncio.sleep(0.2)
        last = await old.submit(PlaceOrder(market.issuer, SYMBOL, SELL, price=MID + 60 * TICK, qty=1))
        await old.stop()
        await old_pool.close()
        # ...so it must wait for that writer to be gone, and then start from everything it committed.
        new = await asyncio.wait_for(restart, 30)
        try:
            assert isinstance(last, OrderView) and last.status == "open"
            assert last.id in new.engine.orders, "the restarted engine misses the old writer's last commit"
        finally:
            await new.stop()
