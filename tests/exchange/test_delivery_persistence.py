"""Providers, quotas, reservations and usage through the real sequencer on a real PostgreSQL: what is committed,
what ``tokex check`` finds wrong, and what a restart rebuilds."""

import asyncpg

from exchange import invariants
from exchange.commands import Attempt, PlaceOrder, Redeem, RegisterProvider, Reserve, Settle
from exchange.sequencer import Sequencer
from tests.support.engine import COMPUTE, TICK, engine_state, open_market_through, submit_ok

LOT = 1_000_000


async def test_calls_commit_and_a_restart_rebuilds_them(pool: asyncpg.Pool) -> None:
    first = await Sequencer.open(pool)
    m = await open_market_through(first)
    await submit_ok(first, PlaceOrder(m.issuer, COMPUTE, "sell", price=100 * TICK, qty=10))
    await submit_ok(first, PlaceOrder(m.bob, COMPUTE, "buy", price=100 * TICK, qty=10))
    serving = await submit_ok(first, RegisterProvider(m.issuer, COMPUTE, "http://127.0.0.1:9/v1", "m", b"\x00sealed"))
    await submit_ok(first, Redeem(m.bob, COMPUTE, 2))
    settled = await submit_ok(first, Reserve(m.bob, COMPUTE, 1_000))
    await submit_ok(first, Settle(settled.id, [Attempt(serving.id, "failed", latency_us=5),
                                               Attempt(serving.id, "ok", 300, 200, 1_000, 4_000)]))
    still_open = await submit_ok(first, Reserve(m.bob, COMPUTE, 2_000))
    before = engine_state(first.engine)
    await first.stop()

    async with pool.acquire() as conn:
        assert await invariants.problems(conn) == []
        quota = await conn.fetchrow("SELECT granted, reserved, used, lapsed FROM quota")
        assert tuple(quota) == (2 * LOT, 2_000, 500, 0)
        assert await conn.fetchval("SELECT delivered FROM provider") == 500
        assert await conn.fetchval("SELECT credential FROM provider") == b"\x00sealed"
        assert [tuple(r) for r in await conn.fetch("SELECT status, prompt_tokens, completion_tokens FROM usage "
                                                    "ORDER BY id")] == [("failed", 0, 0), ("ok", 300, 200)]

    second = await Sequencer.open(pool)
    try:
        assert engine_state(second.engine) == before
        await submit_ok(second, Settle(still_open.id, [Attempt(serving.id, "ok", 10, 10)]))
        again = await submit_ok(second, Reserve(m.bob, COMPUTE, 10))
        assert again.id == still_open.id + 1
    finally:
        await second.stop()
    async with pool.acquire() as conn:
        assert await invariants.problems(conn) == []
        await conn.execute("UPDATE provider SET delivered = delivered + 1")
        await conn.execute("UPDATE quota SET used = used - 1, granted = granted - 1")
        found = await invariants.problems(conn)
    assert any(problem.startswith("provider ") for problem in found), found
    assert any(problem.startswith("quota of account") for problem in found), found
