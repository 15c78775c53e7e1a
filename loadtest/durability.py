"""What must be in the database after a run or a fault: everything acknowledged, and every fill applied once.

``problems(dsn, recorder)`` compares what the personas were told with the committed rows: each order answered
as placed exists and has filled at least what its answer said (a later fill may add to it, nothing may take
away), an order answered as filled is filled, an order answered as cancelled is cancelled. Then the fills: those
of an order add up to its filled quantity, each is settled by exactly one trade entry of the journal, and each
names orders that exist.
"""

from __future__ import annotations

import asyncpg

from loadtest.report import Recorder

# Each fill moves quantity once: the fills of an order add up to its filled quantity...
FILLS_DISAGREE = """
WITH legs AS (
    SELECT maker_order_id AS order_id, qty FROM fill
    UNION ALL
    SELECT taker_order_id, qty FROM fill
)
SELECT o.id, o.filled_qty, coalesce(sum(l.qty), 0) AS fills_qty
FROM book_order o LEFT JOIN legs l ON l.order_id = o.id
GROUP BY o.id
HAVING o.filled_qty <> coalesce(sum(l.qty), 0)
"""

# ...and is settled once: one trade entry in the journal per fill, none for a fill that does not exist.
SETTLED_TWICE = """
SELECT coalesce(f.id, e.fill_id) AS fill_id, count(e.id) AS entries
FROM fill f FULL JOIN journal_entry e ON e.fill_id = f.id AND e.kind = 'trade'
WHERE e.id IS NULL OR e.kind = 'trade'
GROUP BY 1
HAVING count(e.id) <> 1 OR bool_or(f.id IS NULL)
"""

ORPHAN_FILLS = """
SELECT f.id FROM fill f
WHERE NOT EXISTS (SELECT 1 FROM book_order o WHERE o.id = f.maker_order_id)
   OR NOT EXISTS (SELECT 1 FROM book_order o WHERE o.id = f.taker_order_id)
"""

ORDERS = "SELECT id, status, filled_qty FROM book_order WHERE id = ANY($1::bigint[])"


async def problems(dsn: str, recorder: Recorder) -> list[str]:
    """Every contradiction between the answers the personas got and the database; empty when none."""
    found: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        ids = list({order_id for order_id, _, _ in recorder.placed} | set(recorder.cancelled))
        rows = {row["id"]: row for row in await conn.fetch(ORDERS, ids)}
        for order_id, status, filled in recorder.placed:
            row = rows.get(order_id)
            if row is None:
                found.append(f"order {order_id} was acknowledged as {status} but is not in the database")
            elif row["filled_qty"] < filled or (status == "filled" and row["status"] != "filled"):
                found.append(f"order {order_id} was acknowledged as {status} with {filled} filled; the database "
                             f"has it {row['status']} with {row['filled_qty']}")
        for order_id in recorder.cancelled:
            row = rows.get(order_id)
            if row is None or row["status"] != "cancelled":
                found.append(f"order {order_id} was acknowledged as cancelled; the database has "
                             f"{row['status'] if row else 'no such order'}")
        for name, query in (("fills disagree with the order's filled quantity", FILLS_DISAGREE),
                            ("fill settled other than once", SETTLED_TWICE), ("fill of a missing order", ORPHAN_FILLS)):
            found += [f"{name}: {dict(row)}" for row in await conn.fetch(query)]
    finally:
        await conn.close()
    return found
