"""Migration 010 on a database that already has compute redemptions: each gets its quota, and ``tokex check``
agrees."""

import shutil
from pathlib import Path

import asyncpg

from exchange import invariants
from exchange.database.migrations import SQL_DIR, discover, migrate


async def test_redemptions_made_before_quotas_existed_grant_their_quotas(fresh_database_url: str,
                                                                          tmp_path: Path) -> None:
    for migration in discover():
        if migration.version < 10:
            shutil.copy(SQL_DIR / migration.path.name, tmp_path)
    await migrate(fresh_database_url, tmp_path)
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("""
            INSERT INTO account (id, name, role, created_at) VALUES (100, 'buyer', 'trader', now());
            INSERT INTO instrument (id, symbol, kind, status, tick, min_qty, max_qty, maker_fee_bps, taker_fee_bps,
                                    model, substitution_group, quality, tokens_per_lot, created_at)
            VALUES (1, 'OLD-V3', 'compute', 'trading', 1, 1, 100, 10, 20, 'm', 'g', 90, 1000000, now());
            INSERT INTO redemption (id, instrument_id, account_id, qty, created_at)
            VALUES (1, 1, 100, 3, now()), (2, 1, 100, 2, now());
        """)
        await migrate(conn)
        quota = await conn.fetchrow("SELECT source, granted, reserved, used, lapsed FROM quota")
        assert tuple(quota) == ("redemption", 5_000_000, 0, 0, 0)
        assert await invariants.problems(conn) == []
    finally:
        await conn.close()
