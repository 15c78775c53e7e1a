"""The sequencer when its database fails: while the server is stopped, and when one batch cannot commit.

What must hold (DESIGN.md, "Durability and order of effects"): a command is acknowledged only once committed;
while the database fails, callers get ``Unavailable`` promptly, never a success and never a hang; when the
database is back the sequencer rebuilds its engine from it and accepts again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from exchange import invariants, store
from exchange.commands import CreateAccount, Deposit, OrderView, PlaceOrder, Result
from exchange.database.embedded import EmbeddedPostgres
from exchange.database.migrations import migrate
from exchange.engine import Engine
from exchange.sequencer import Sequencer, Unavailable
from loadtest.exchange_worker import MID, SYMBOL, TICK, Client, OrderCommand, contradictions, prepare
from matching.types import BUY, GTC, SELL

SUBMIT_TIMEOUT = 10.0
"""Longer than any answer may take: a submit still waiting then counts as a hang."""
CLIENTS = 8


async def eventually(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        await asyncio.sleep(0.01)


class Load:
    """Clients submitting without pause; every answer and every failure is counted."""

    def __init__(self, seq: Sequencer, accounts: list[int], seed: int) -> None:
        self.seq = seq
        self.acked: list[tuple[OrderCommand, Result]] = []
        self.outcomes: Counter[str] = Counter()
        self.slowest_refusal = 0.0
        rng = random.Random(seed)
        self.clients = [Client(n, accounts[n % len(accounts)], seed, random.Random(rng.random()))
                        for n in range(CLIENTS)]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(client)) for client in self.clients]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    async def _run(self, client: Client) -> None:
        while not self._stop.is_set():
            command = client.next_command()
            start = time.monotonic()
            try:
                result = await asyncio.wait_for(self.seq.submit(command), SUBMIT_TIMEOUT)
            except Unavailable:
                self.outcomes["unavailable"] += 1
                self.slowest_refusal = max(self.slowest_refusal, time.monotonic() - start)
                await asyncio.sleep(0.005)
                continue
            except TimeoutError:
                self.outcomes["hung"] += 1
                continue
            self.outcomes["acked"] += 1
            self.acked.append((command, result))
            client.learn(command, result)


@pytest.mark.slow  # a drill: stops and starts a PostgreSQL server of its own
async def test_submits_fail_fast_while_the_server_is_down_and_resume_when_it_is_back(reachable_home: Path) -> None:
    server = EmbeddedPostgres(reachable_home)
    dsn = await server.start_async()
    await migrate(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    seq = await Sequencer.open(pool, retry_interval=0.05)
    load = None
    try:
        market = await prepare(seq)
        load = Load(seq, market.accounts, seed=7)
        load.start()
        await eventually(lambda: load.outcomes["acked"] >= 300, "300 commands are acknowledged")

        await server.stop_async()
        before = load.outcomes["unavailable"]
        # Only a failed commit sets `down`: clients were mid-batch when the server went away.
        await eventually(lambda: seq.down is not None, "the sequencer notices")
        await eventually(lambda: load.outcomes["unavailable"] >= before + 100, "clients are refused")
        acked_during_outage = load.outcomes["acked"]
        await asyncio.sleep(0.5)
        # The server is fully stopped: nothing can commit, so nothing may be acknowledged.
        assert load.outcomes["acked"] == acked_during_outage
        assert seq.down is not None

        await server.start_async()
        await eventually(lambda: seq.down is None, "the sequencer has rebuilt its engine")
        await eventually(lambda: load.outcomes["acked"] >= acked_during_outage + 300, "orders are accepted again")
        await load.stop()
        await seq.stop()

        assert load.outcomes["hung"] == 0, load.outcomes
        assert load.slowest_refusal < 2.0, f"a refusal took {load.slowest_refusal:.2f} s"
        async with pool.acquire() as conn:
            assert await contradictions(conn, load.acked) == []
            assert await invariants.problems(conn, seq.engine) == []
            assert_same_engine(seq.engine, await store.load(conn))
    finally:
        if load is not None:
            await load.stop()
        await abandon(seq, pool)
        await server.stop_async()


async def abandon(seq: Sequencer, pool: asyncpg.Pool) -> None:
    """Stop ``seq`` and drop the pool without waiting on anything, for a test that failed half-way."""
    if seq._task is not None and not seq._task.done():
        seq._task.cancel()
    pool.terminate()


async def test_a_batch_failing_mid_commit_leaves_nothing_behind(migrated_database_url: str) -> None:
    async with asyncpg.create_pool(migrated_database_url, min_size=1, max_size=2) as pool:
        seq = await Sequencer.open(pool, retry_interval=0.05)
        try:
            market = await prepare(seq)
            seller, buyer, other = market.traders[:3]
            resting = await seq.submit(PlaceOrder(seller, SYMBOL, SELL, price=MID + 40 * TICK, qty=5))
            assert isinstance(resting, OrderView) and resting.status == "open"
            async with pool.acquire() as conn:
                before = await snapshot(conn)
                # A row the engine does not know of takes the id its next order will get, so the batch's COPY
                # into book_order fails after its journal entries and postings were already sent.
                clash = seq.engine.ids.order
                await conn.execute(CLASHING_ORDER, clash, seq.engine.instruments[SYMBOL].id)
            engine_before_failure = seq.engine

            batch = [
                PlaceOrder(buyer, SYMBOL, BUY, price=MID + 40 * TICK, qty=2, tif=GTC, client_order_id="cross"),
                PlaceOrder(other, SYMBOL, BUY, price=MID - 40 * TICK, qty=3, client_order_id="rest"),
                Deposit(other, 5_000_000),
            ]
            answers = await asyncio.wait_for(
                asyncio.gather(*(seq.submit(command) for command in batch), return_exceptions=True), SUBMIT_TIMEOUT
            )
            assert all(isinstance(answer, Unavailable) for answer in answers), answers
            assert "UniqueViolationError" in str(answers[0])
            await eventually(lambda: seq.down is None, "the sequencer has rebuilt its engine", timeout=10)
            assert seq.engine is not engine_before_failure

            async with pool.acquire() as conn:
                after = await snapshot(conn)
                after["book_order"] = [row for row in after["book_order"] if row["id"] != clash]
                assert after == before, "part of the failed batch was committed"
                assert_same_engine(seq.engine, await store.load(conn))
                assert await invariants.problems(conn, seq.engine) == []

            # Nothing of the batch took effect, so the same client order ids now place new orders.
            retried = [await seq.submit(command) for command in batch]
            cross = retried[0]
            assert isinstance(cross, OrderView) and cross.id == clash + 1 and cross.filled_qty == 2
            assert cross.fills[0].price == MID + 40 * TICK
            async with pool.acquire() as conn:
                assert await invariants.problems(conn, seq.engine) == []
        finally:
            await seq.stop()


async def test_stop_returns_while_the_database_is_gone(migrated_database_url: str, postgres_admin_url: str) -> None:
    pool = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=2)
    seq = await Sequencer.open(pool, retry_interval=0.05)
    try:
        await seq.submit(CreateAccount("before", "trader"))
        conn = await asyncpg.connect(postgres_admin_url)
        try:
            await conn.execute(f'DROP DATABASE "{urlsplit(migrated_database_url).path[1:]}" WITH (FORCE)')
        finally:
            await conn.close()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(seq.submit(CreateAccount("during", "trader")), SUBMIT_TIMEOUT)
        assert seq.down is not None
        # Shutting down must not wait for the database to come back.
        await asyncio.wait_for(seq.stop(), 5)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(seq.submit(CreateAccount("after", "trader")), SUBMIT_TIMEOUT)
    finally:
        await abandon(seq, pool)


CLASHING_ORDER = """
INSERT INTO book_order (id, instrument_id, account_id, client_order_id, side, type, tif, post_only, stp, price,
                        qty, budget, open_qty, filled_qty, filled_notional, maker_notional, taker_notional, fee,
                        maker_fee_ppm, taker_fee_ppm, held, status, reason, priority, created_at, updated_at)
VALUES ($1, $2, 999999, NULL, 'buy', 'limit', 'GTC', false, 'cancel_newest', 10000, 1,
        NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'cancelled', 'by_request', 0, now(), now())
"""

TABLES = {
    "account": "id", "instrument": "id", "issuer_approval": "account_id, instrument_id",
    "balance": "account_id, asset", "journal_entry": "id", "posting": "entry_id, account_id, asset, bucket",
    "book_order": "id", "fill": "id", "redemption": "id",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[asyncpg.Record]]:
    return {table: await conn.fetch(f"SELECT * FROM {table} ORDER BY {key}") for table, key in TABLES.items()}


def assert_same_engine(live: Engine, loaded: Engine) -> None:
    """The live engine holds exactly what a fresh load of the database gives."""
    # Ids.entry only seeds the ledger, whose own counter then moves on.
    assert dataclasses.replace(live.ids, entry=0) == dataclasses.replace(loaded.ids, entry=0)
    assert live.ledger.balances == loaded.ledger.balances
    assert live.ledger.next_entry_id == loaded.ledger.next_entry_id
    assert live.orders == loaded.orders
    assert {k: v for k, v in live.open_by_account.items() if v} == loaded.open_by_account
    assert live.client_orders == loaded.client_orders
    assert {a: (x.issued, x.capacity) for a, x in live.approvals.items()} == {
        a: (x.issued, x.capacity) for a, x in loaded.approvals.items()
    }
    for symbol, instrument in loaded.instruments.items():
        mine = live.instruments[symbol]
        assert (mine.seq, mine.status, mine.issued) == (instrument.seq, instrument.status, instrument.issued)
        assert mine.book.resting_orders() == instrument.book.resting_orders()
