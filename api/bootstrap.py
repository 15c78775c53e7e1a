"""The first admin: an account and a key to sign with, for the CLI and the demo.

Run it while no server is running on the same database: without a ``sequencer`` it opens its own, which must
be the only writer. With the running server's sequencer it can run inside the server.
"""

from pathlib import Path

import asyncpg

from api.keys import KeyStore, load_master_key
from exchange.commands import CreateAccount, Done, Rejection
from exchange.database.queries import sql
from exchange.sequencer import Sequencer

ACCOUNT_BY_NAME = sql("account_by_name")

ADMIN_SCOPES = ["read", "admin"]


async def create_admin(pool: asyncpg.Pool, name: str = "admin", *, sequencer: Sequencer | None = None,
                       master_key: bytes | None = None, home: Path | str | None = None) -> tuple[int, str, str]:
    """Create the admin account ``name`` unless it exists, and a new key for it; return (account id, key id,
    secret). Idempotent by name: a second call makes no second account, only another key (a secret cannot be
    shown twice). Raise ValueError if ``name`` belongs to an account that is not an admin."""
    account_id = await _admin_id(pool, name)
    if account_id is None:
        own = sequencer is None
        writer = sequencer or await Sequencer.open(pool)
        try:
            result = await writer.submit(CreateAccount(name, "admin"))
        finally:
            if own:
                await writer.stop()
        if isinstance(result, Done) and result.id is not None:
            account_id = result.id
        elif isinstance(result, Rejection) and result.code == "name_taken":
            account_id = await _admin_id(pool, name)  # created meanwhile by someone else
        if account_id is None:
            raise RuntimeError(f"could not create the admin account {name!r}: {result}")
    keys = KeyStore(pool, master_key or load_master_key(home))
    key, secret = await keys.create(account_id, ADMIN_SCOPES, label="bootstrap")
    return account_id, key.id, secret


async def _admin_id(pool: asyncpg.Pool, name: str) -> int | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(ACCOUNT_BY_NAME, name)
    if row is None:
        return None
    if row["role"] != "admin":
        raise ValueError(f"the account {name!r} exists and is a {row['role']}, not an admin")
    return row["id"]
