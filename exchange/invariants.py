"""The exchange's invariants, checked against what is committed (and against a live engine when given).

- No account other than a system account has a negative available or held amount.
- Each account's held amount of an asset equals what its open orders hold.
- Every journal entry sums to zero per asset, and so does every asset over all accounts.
- Every balance equals the sum of its postings.
- Each routed order's totals are those of its swept children, every one of them committed.
- Each instrument's open orders form a valid book (not crossed, consistent), and a live engine's books hold
  exactly those orders in the same priority order.

``problems`` returns a list of human-readable findings; empty means all hold. ``tokex check`` and the
tests call it.
"""

import asyncpg

from exchange.engine import Engine
from matching.book import OrderBook
from matching.level import RestingOrder

NEGATIVE = """
SELECT account_id, asset, available, held FROM balance
WHERE NOT is_system AND (available < 0 OR held < 0)
"""

HELD_MISMATCH = """
WITH order_holds AS (
    SELECT o.account_id, CASE WHEN o.side = 'buy' THEN 'CNY' ELSE i.symbol END AS asset, sum(o.held) AS held
    FROM book_order o JOIN instrument i ON i.id = o.instrument_id
    WHERE o.status = 'open'
    GROUP BY 1, 2
)
SELECT coalesce(b.account_id, h.account_id) AS account_id, coalesce(b.asset, h.asset) AS asset,
       coalesce(b.held, 0) AS balance_held, coalesce(h.held, 0) AS orders_held
FROM balance b FULL JOIN order_holds h ON h.account_id = b.account_id AND h.asset = b.asset
WHERE coalesce(b.held, 0) <> coalesce(h.held, 0)
"""

UNBALANCED_ENTRIES = """
SELECT entry_id, asset, sum(amount) FROM posting GROUP BY entry_id, asset HAVING sum(amount) <> 0 LIMIT 20
"""

UNBALANCED_ASSETS = """
SELECT asset, sum(available + held) FROM balance GROUP BY asset HAVING sum(available + held) <> 0
"""

UNRECONCILED = """
WITH posted AS (
    SELECT account_id, asset,
           sum(amount) FILTER (WHERE bucket = 'available') AS available,
           sum(amount) FILTER (WHERE bucket = 'held') AS held
    FROM posting GROUP BY account_id, asset
)
SELECT coalesce(b.account_id, p.account_id), coalesce(b.asset, p.asset),
       b.available, b.held, coalesce(p.available, 0), coalesce(p.held, 0)
FROM balance b FULL JOIN posted p ON p.account_id = b.account_id AND p.asset = b.asset
WHERE coalesce(b.available, 0) <> coalesce(p.available, 0) OR coalesce(b.held, 0) <> coalesce(p.held, 0)
LIMIT 20
"""

# The swept children closed within the routed order's command, so their totals never move afterwards; the
# resting child is an ordinary order from then on.
ROUTED_TOTALS = """
SELECT r.id, r.filled_qty, coalesce(sum(o.filled_qty), 0) AS children_qty
FROM routed_order r
LEFT JOIN book_order o ON o.id = ANY(r.order_ids) AND o.id IS DISTINCT FROM r.resting_order_id
GROUP BY r.id
HAVING r.filled_qty <> coalesce(sum(o.filled_qty), 0) OR r.filled_notional <> coalesce(sum(o.filled_notional), 0)
    OR r.fee <> coalesce(sum(o.fee), 0)
    OR count(o.id) + (r.resting_order_id IS NOT NULL)::int <> cardinality(r.order_ids)
LIMIT 20
"""

OPEN_ORDERS = """
SELECT o.instrument_id, o.id, o.account_id, o.side, o.price, o.open_qty, o.post_only, o.stp
FROM book_order o WHERE o.status = 'open' ORDER BY o.instrument_id, o.priority
"""


async def problems(conn: asyncpg.Connection, engine: Engine | None = None) -> list[str]:
    """Every broken invariant, described; an empty list when all hold."""
    found: list[str] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for account, asset, available, held in await conn.fetch(NEGATIVE):
            found.append(f"account {account} has negative {asset}: available {available}, held {held}")
        for account, asset, balance_held, orders_held in await conn.fetch(HELD_MISMATCH):
            found.append(f"account {account} holds {balance_held} {asset} but its open orders hold {orders_held}")
        for entry, asset, total in await conn.fetch(UNBALANCED_ENTRIES):
            found.append(f"journal entry {entry} does not balance in {asset}: {total}")
        for asset, total in await conn.fetch(UNBALANCED_ASSETS):
            found.append(f"{asset} does not sum to zero over all accounts: {total}")
        for account, asset, available, held, posted_available, posted_held in await conn.fetch(UNRECONCILED):
            found.append(f"account {account} {asset} balance ({available}, {held}) != postings "
                         f"({posted_available}, {posted_held})")
        for routed, filled, children in await conn.fetch(ROUTED_TOTALS):
            found.append(f"routed order {routed} filled {filled} lots but its children {children}, or a child is "
                         "missing")
        ticks = dict(await conn.fetch("SELECT id, tick FROM instrument"))
        resting: dict[int, list[RestingOrder]] = {instrument: [] for instrument in ticks}
        for instrument, *fields in await conn.fetch(OPEN_ORDERS):
            resting[instrument].append(RestingOrder(*fields))
    for instrument, orders in resting.items():
        try:
            book = OrderBook.rebuild(ticks[instrument], orders)
        except (AssertionError, KeyError) as exc:
            found.append(f"instrument {instrument}: open orders do not form a valid book: {exc}")
            continue
        if engine is not None:
            live = engine.instruments_by_id.get(instrument)
            if live is None or live.book is None:
                found.append(f"instrument {instrument} is missing from the engine")
            elif live.book.resting_orders() != book.resting_orders():
                found.append(f"instrument {instrument}: the engine's book differs from the committed open orders")
    return found
