"""The exchange's invariants, checked against what is committed (and against a live engine when given).

- No account other than a system account has a negative available or held amount.
- Each account's held amount of an asset equals what its open orders hold.
- Every journal entry sums to zero per asset, and so does every asset over all accounts.
- Every balance equals the sum of its postings.
- Each routed order's totals are those of its swept children, every one of them committed.
- Each dataset access grant is what its redemption bought under the terms it accepted, has counted its
  downloads, and every download lies within its grant; once a dataset has terms, every redemption has a grant.
- Quotas: none below zero; each quota's reserved tokens are its open reservations, its used tokens what its
  settled reservations charged, and a ``redemption`` quota holds exactly the account's redeemed lots x tokens per
  lot. Obligations: each provider's delivered tokens, and each reservation's charge, equal their usage rows, so
  obligation = minted x tokens per lot - delivered.
- Each subscription ran every period before its next one, paid the seller and the exchange what each paid period
  took from the buyer, and its quota holds exactly the tokens of its paid periods.
- Each instrument's open orders form a valid book (not crossed, consistent), and a live engine's books hold
  exactly those orders in the same priority order.

``problems`` returns a list of human-readable findings; empty means all hold. ``tokex check`` and the
tests call it.
"""

import asyncpg

from exchange.database.queries import sql
from exchange.engine import Engine
from matching.book import OrderBook
from matching.level import RestingOrder

NEGATIVE = sql("negative_balances")
HELD_MISMATCH = sql("held_mismatches")
UNBALANCED_ENTRIES = sql("unbalanced_entries")
UNBALANCED_ASSETS = sql("unbalanced_assets")
UNRECONCILED = sql("unreconciled_balances")
ROUTED_TOTALS = sql("routed_order_mismatches")
OPEN_ORDERS = sql("open_orders_by_instrument")
TICKS = sql("instrument_ticks")
GRANT_MISMATCHES = sql("dataset_grant_mismatches")
UNGRANTED = sql("dataset_redemptions_without_grant")
STRAY_DOWNLOADS = sql("dataset_downloads_outside_grants")
SUBSCRIPTIONS = sql("subscription_mismatches")
QUOTAS = sql("quota_mismatches")
OBLIGATIONS = sql("obligation_mismatches")


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
        for (grant,) in await conn.fetch(GRANT_MISMATCHES):
            found.append(f"dataset grant {grant} differs from its redemption and terms, or miscounts its downloads")
        for (redemption,) in await conn.fetch(UNGRANTED):
            found.append(f"dataset redemption {redemption} made no access grant")
        for (download,) in await conn.fetch(STRAY_DOWNLOADS):
            found.append(f"dataset download {download} lies outside its grant's dataset, file or time")
        for subscription, period in await conn.fetch(SUBSCRIPTIONS):
            found.append(f"subscription {subscription}: " + (
                "its periods run or its quota's tokens differ from next_period and the periods paid" if period is None
                else f"period {period}'s payment did not move price, fee and proceeds as recorded"))
        for account, instrument, source, granted, reserved, used, lapsed, held, charged, redeemed in await conn.fetch(
                QUOTAS):
            found.append(f"quota of account {account} on instrument {instrument} from {source}: granted {granted}, "
                         f"reserved {reserved}, used {used}, lapsed {lapsed}; open reservations hold {held}, settled "
                         f"ones charged {charged}, redeemed tokens {redeemed}")
        for what, row_id, recorded, counted in await conn.fetch(OBLIGATIONS):
            found.append(f"{what} {row_id} records {recorded} tokens delivered but its usage rows {counted}")
        ticks = dict(await conn.fetch(TICKS))
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
