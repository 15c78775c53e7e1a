"""PostgreSQL persistence: commit one batch of effects, and load the whole engine back.

A batch is written in one transaction with one statement per table: COPY for rows that are new, an
``UPDATE ... FROM unnest(...)`` or an upsert for rows that changed. Nothing here decides anything; the rows
come ready from the engine.
"""

import asyncpg

from exchange.engine import Effects, Engine, Ids
from exchange.records import Account, Approval, Instrument, Order
from matching.book import OrderBook
from matching.level import RestingOrder

ORDER_COLUMNS = tuple(Order.__struct_fields__)
ENTRY_COLUMNS = ("id", "kind", "order_id", "fill_id", "created_at")
POSTING_COLUMNS = ("entry_id", "account_id", "asset", "bucket", "amount")
FILL_COLUMNS = (
    "id", "instrument_id", "seq", "price", "qty", "maker_order_id", "taker_order_id", "maker_account_id",
    "taker_account_id", "taker_side", "maker_fee", "taker_fee", "created_at",
)
REDEMPTION_COLUMNS = ("id", "instrument_id", "account_id", "qty", "created_at")

INSERT_ACCOUNT = "INSERT INTO account (id, name, role, created_at) VALUES ($1, $2, $3, $4)"

UPSERT_INSTRUMENT = f"""
INSERT INTO instrument ({", ".join(Instrument.ROW_FIELDS)})
VALUES ({", ".join(f"${i}" for i in range(1, len(Instrument.ROW_FIELDS) + 1))})
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, seq = EXCLUDED.seq
"""

UPSERT_APPROVAL = """
INSERT INTO issuer_approval (account_id, instrument_id, capacity, issued, approved_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account_id, instrument_id)
DO UPDATE SET capacity = EXCLUDED.capacity, issued = EXCLUDED.issued, approved_at = EXCLUDED.approved_at
"""

UPDATE_ORDERS = """
UPDATE book_order AS o
SET price = c.price, qty = c.qty, open_qty = c.open_qty, filled_qty = c.filled_qty,
    filled_notional = c.filled_notional, maker_notional = c.maker_notional, taker_notional = c.taker_notional,
    fee = c.fee, held = c.held, status = c.status, reason = c.reason, priority = c.priority,
    updated_at = c.updated_at
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
            $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::bigint[],
            $14::timestamptz[])
     AS c (id, price, qty, open_qty, filled_qty, filled_notional, maker_notional, taker_notional, fee, held,
           status, reason, priority, updated_at)
WHERE o.id = c.id
"""

UPSERT_BALANCES = """
INSERT INTO balance (account_id, asset, available, held, is_system)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::boolean[])
ON CONFLICT (account_id, asset) DO UPDATE SET available = EXCLUDED.available, held = EXCLUDED.held
"""


async def write(conn: asyncpg.Connection, effects: Effects) -> None:
    """Commit ``effects`` in one transaction."""
    async with conn.transaction():
        if effects.accounts:
            await conn.executemany(INSERT_ACCOUNT, effects.accounts)
        if effects.instruments:
            await conn.executemany(UPSERT_INSTRUMENT, [i.row() for i in effects.instruments.values()])
        if effects.approvals:
            await conn.executemany(UPSERT_APPROVAL, [
                (a.account_id, a.instrument_id, a.capacity, a.issued, a.approved_at)
                for a in effects.approvals.values()
            ])
        if effects.entries:
            await conn.copy_records_to_table("journal_entry", records=effects.entries, columns=ENTRY_COLUMNS)
        if effects.postings:
            await conn.copy_records_to_table("posting", records=effects.postings, columns=POSTING_COLUMNS)
        if effects.new_orders:
            await conn.copy_records_to_table(
                "book_order", records=[o.row() for o in effects.new_orders.values()], columns=ORDER_COLUMNS
            )
        if effects.changed_orders:
            orders = effects.changed_orders.values()
            await conn.execute(UPDATE_ORDERS, *(
                [getattr(o, name) for o in orders]
                for name in ("id", "price", "qty", "open_qty", "filled_qty", "filled_notional", "maker_notional",
                             "taker_notional", "fee", "held", "status", "reason", "priority", "updated_at")
            ))
        if effects.fills:
            await conn.copy_records_to_table("fill", records=effects.fills, columns=FILL_COLUMNS)
        if effects.redemptions:
            await conn.copy_records_to_table("redemption", records=effects.redemptions, columns=REDEMPTION_COLUMNS)
        if effects.balances:
            await conn.execute(UPSERT_BALANCES, *(list(column) for column in zip(*effects.balances, strict=True)))


async def load(conn: asyncpg.Connection) -> Engine:
    """Rebuild the engine from the database: ids, accounts, instruments, books, balances, orders, volume."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        ids = Ids(
            account=max(100, await _next_id(conn, "account")),
            instrument=await _next_id(conn, "instrument"),
            order=await _next_id(conn, "book_order"),
            fill=await _next_id(conn, "fill"),
            entry=await _next_id(conn, "journal_entry"),
            redemption=await _next_id(conn, "redemption"),
        )
        engine = Engine(ids)
        for row in await conn.fetch("SELECT id, name, role, created_at FROM account WHERE role <> 'system'"):
            engine.add_account(Account(**row))
        open_orders: dict[int, list[Order]] = {}
        for row in await conn.fetch(
            f"SELECT {', '.join(ORDER_COLUMNS)} FROM book_order WHERE status = 'open' ORDER BY priority"
        ):
            order = Order(**row)
            open_orders.setdefault(order.instrument_id, []).append(order)
            engine.orders[order.id] = order
            engine.open_by_account.setdefault(order.account_id, set()).add(order.id)
        for row in await conn.fetch(f"SELECT {', '.join(Instrument.ROW_FIELDS)} FROM instrument"):
            instrument = Instrument(**row)
            book = OrderBook.rebuild(instrument.tick, (
                RestingOrder(o.id, o.account_id, o.side, o.price, o.open_qty, o.post_only, o.stp)
                for o in open_orders.get(instrument.id, ())
            ))
            engine.add_instrument(instrument, book)
        for row in await conn.fetch("SELECT * FROM issuer_approval"):
            approval = Approval(**row)
            engine.approvals[(approval.account_id, approval.instrument_id)] = approval
            engine.instruments_by_id[approval.instrument_id].issued += approval.issued
        for account, asset, available, held in await conn.fetch(
            "SELECT account_id, asset, available, held FROM balance"
        ):
            engine.ledger.balances[(account, asset)] = [available, held]
        for account, client_order_id, order_id in await conn.fetch(
            "SELECT account_id, client_order_id, id FROM book_order WHERE client_order_id IS NOT NULL"
        ):
            engine.client_orders[(account, client_order_id)] = order_id
        for account, ts, notional in await conn.fetch(TRAILING_VOLUME):
            engine.volume.add(account, ts, notional)
    return engine


TRAILING_VOLUME = """
SELECT account_id, (extract(epoch FROM day) * 1000000)::bigint, sum(notional)::bigint
FROM (
    SELECT maker_account_id AS account_id, date_trunc('day', created_at, 'UTC') AS day, price * qty AS notional
    FROM fill WHERE created_at > now() - interval '31 days'
    UNION ALL
    SELECT taker_account_id, date_trunc('day', created_at, 'UTC'), price * qty
    FROM fill WHERE created_at > now() - interval '31 days'
) AS traded
GROUP BY account_id, day
"""


async def _next_id(conn: asyncpg.Connection, table: str) -> int:
    return await conn.fetchval(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")


async def order_row(conn: asyncpg.Connection, order_id: int) -> Order | None:
    """One order as committed, open or closed."""
    row = await conn.fetchrow(f"SELECT {', '.join(ORDER_COLUMNS)} FROM book_order WHERE id = $1", order_id)
    return None if row is None else Order(**row)
