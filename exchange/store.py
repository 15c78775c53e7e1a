"""PostgreSQL persistence: commit one batch of effects, and load the whole engine back.

A batch's frequent rows (journal entries, postings, orders, fills, balances, sequence numbers, and delivery's
quotas, reservations, usage and providers' delivered tokens) are written by
one statement, an insert, update or upsert per table fed by arrays (``_Batch``); the rare ones (accounts,
listings, approvals, redemptions, routed orders, packages, client request ids, halts, providers registered,
dataset terms, grants and downloads, subscriptions, and the deletion of signed requests too old to be replayed)
join it in a transaction when a batch has any. Nothing here decides anything; the rows come ready from the engine.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from exchange import delivery
from exchange.database.queries import sql
from exchange.datasets import Grant, Terms
from exchange.engine import Engine
from exchange.quotas import Quota, Reservation
from exchange.records import Account, Approval, Instrument, Order, Package
from exchange.replay import REMEMBER_SECONDS
from exchange.settlement import Effects, Ids
from exchange.subscriptions import Offer, Subscription
from matching.book import OrderBook
from matching.level import RestingOrder

INSERT_ACCOUNT = sql("insert_account")
INSERT_INSTRUMENT = sql("insert_instrument")
UPDATE_STATUS = sql("update_instrument_status")
UPSERT_APPROVAL = sql("upsert_approval")
INSERT_REDEMPTION = sql("insert_redemption")
INSERT_ROUTED_ORDER = sql("insert_routed_order")
UPSERT_PACKAGE = sql("upsert_package")
INSERT_EXECUTION = sql("insert_package_execution")
INSERT_CLIENT_REQUEST = sql("insert_client_request")
INSERT_TERMS = sql("insert_dataset_terms")
UPSERT_GRANT = sql("upsert_dataset_grant")
INSERT_DOWNLOAD = sql("insert_dataset_download")
UPSERT_OFFER = sql("upsert_subscription_offer")
UPSERT_SUBSCRIPTION = sql("upsert_subscription")
INSERT_SUBSCRIPTION_PERIOD = sql("insert_subscription_period")
FORGET_REQUESTS = sql("forget_signed_requests")
RECENT_REQUESTS = sql("recent_signed_requests")
NEXT_IDS = sql("next_ids")
TRADER_ACCOUNTS = sql("trader_accounts")
OPEN_ORDERS = sql("open_orders")
ORDER_BY_ID = sql("order_by_id")
INSTRUMENTS = sql("instruments_with_seq")
APPROVALS = sql("issuer_approvals")
BALANCES = sql("all_balances")
ORDER_CLIENT_IDS = sql("order_client_ids")
ROUTED_CLIENT_IDS = sql("routed_order_client_ids")
CLIENT_REQUESTS = sql("client_requests")
PACKAGES = sql("packages")
DATASET_TERMS = sql("current_dataset_terms")
USABLE_GRANTS = sql("usable_dataset_grants")
OFFERS = sql("subscription_offers")
SUBSCRIPTIONS = sql("running_subscriptions")
DAILY_VOLUME = sql("daily_volume")
UPSERT_PROVIDER = sql("upsert_provider")
DELIVERY_NEXT_IDS = sql("delivery_next_ids")
PROVIDERS = sql("providers")
QUOTAS = sql("quotas")
OPEN_RESERVATIONS = sql("open_reservations")
PROVIDER_WINDOWS = sql("provider_windows")
DEFAULT_PLANNER = sql("default_planner")
"""Undoes the writer connection's planner settings (``sequencer.WRITER_SETTINGS``) for a transaction that reads
whole tables."""
VOLUME_DAYS = 31
"""The days of fills the engine's fee tiers look back on at start-up, a day more than the tiers' window."""


class _Batch:
    """The one statement that writes a batch's frequent rows (``write_batch``): a CTE per table, fed by arrays.

    One statement is one round trip and, outside a transaction, atomic on its own; sending a batch as ten
    statements inside BEGIN/COMMIT cost ten round trips, which bounded throughput more than the work did.

    Each array travels as the text of an array literal, cast by the statement. asyncpg's binary array encoder
    checks every element against three abstract base classes, which cost more than the server's parsing of
    the text; and a literal can be made while the previous batch commits (``Write``), off the path between
    one commit and the next.

    A batch happens at one instant (the sequencer stamps every command of a batch with the same time), so its
    rows' times travel once, as ``$1``, instead of as arrays for the server to parse row by row.
    """

    statement = sql("write_batch")

    TABLES = (
        ("journal_entry", 5, (4,)),
        ("posting", 5, ()),
        ("book_order", len(Order.__struct_fields__), (24, 25)),
        ("book_order", 14, (13,)),
        ("fill", 13, (12,)),
        ("balance", 5, ()),
        ("instrument_seq", 2, ()),
        ("signed_request", 3, (1,)),
        ("quota", 9, (8,)),
        ("reservation", 10, ()),
        ("usage", 11, (10,)),
        ("provider", 3, (2,)),
    )
    """In the statement's order, each CTE's table, the columns of its rows, and the positions of those that hold
    the batch's instant (the statement takes them from ``$1``); every other column is one array parameter."""

    def __init__(self) -> None:
        self.instant_columns = [list(instants) for _, _, instants in self.TABLES]
        self.array_columns = [[position for position in range(columns) if position not in instants]
                              for _, columns, instants in self.TABLES]
        self.parameters = 1 + sum(len(positions) for positions in self.array_columns)
        """How many parameters the statement takes."""

    def arguments(self, effects: Effects) -> list[object]:
        """The batch's instant, then one array literal per column that is not a time."""
        tables = (
            effects.entries,
            effects.postings,
            [o.row() for o in effects.new_orders.values()],
            [(o.id, o.price, o.qty, o.open_qty, o.filled_qty, o.filled_notional, o.maker_notional, o.taker_notional,
              o.fee, o.held, o.status, o.reason, o.priority, o.updated_at) for o in effects.changed_orders.values()],
            effects.fills,
            effects.balances,
            [(i.id, i.seq) for i in effects.instruments.values()],
            [(digest.hex(), at, result.hex()) for digest, at, result in effects.requests],
            [q.row() for q in effects.quotas.values()],
            [r.row() for r in effects.reservations.values()],
            effects.usages,
            [(p.id, p.delivered, p.updated_at) for p in effects.deliveries.values()],
        )
        instants: set[datetime] = set()
        literals: list[object] = []
        for rows, instant_columns, array_columns in zip(tables, self.instant_columns, self.array_columns,
                                                        strict=True):
            if not rows:
                literals.extend("{}" for _ in array_columns)
                continue
            columns = list(zip(*rows, strict=True))
            for position in instant_columns:
                instants.update(columns[position])
            literals.extend(array_literal(columns[position]) for position in array_columns)
        if len(instants) > 1:
            raise ValueError(f"a batch's rows carry one instant, not {len(instants)}: {sorted(instants)}")
        return [next(iter(instants), None), *literals]


BATCH = _Batch()


def array_literal(values: Sequence[object]) -> str:
    """A PostgreSQL array literal of ints, bools, strings, datetimes and Nones, e.g. ``{1,null,"a b"}``.

    A JSON array is already that literal between its brackets, unless it holds a backslash: PostgreSQL reads
    a quoted element's backslash as "take the next character as it is", so JSON's ``\n`` or ``\u00e9`` would
    change meaning. Only text from outside (a client order id, say) can hold one; it takes the slow way.
    """
    encoded = msgspec.json.encode(values)
    if b"\\" not in encoded:
        return "{" + encoded[1:-1].decode() + "}"
    return "{" + ",".join(_element(value) for value in values) + "}"


def _element(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return msgspec.json.encode(value).decode()


class Write:
    """One applied batch, ready to commit: its effects, and the batch statement's arguments made in advance."""

    __slots__ = ("arguments", "effects")

    def __init__(self, effects: Effects) -> None:
        self.effects = effects
        self.arguments = BATCH.arguments(effects)


async def write(conn: asyncpg.Connection, batch: Write) -> None:
    """Commit a batch atomically: one statement, inside a transaction only when rare rows come along."""
    effects = batch.effects
    if not (effects.accounts or effects.new_instruments or effects.approvals or effects.redemptions
            or effects.routed_orders or effects.packages or effects.executions or effects.statuses
            or effects.client_requests or effects.forget_requests_before is not None or effects.providers
            or effects.terms or effects.grants or effects.downloads or effects.offers or effects.subscriptions
            or effects.subscription_periods):
        await conn.execute(BATCH.statement, *batch.arguments)
        return
    async with conn.transaction():
        if effects.accounts:
            await conn.executemany(INSERT_ACCOUNT, effects.accounts)
        if effects.new_instruments:
            await conn.executemany(INSERT_INSTRUMENT, [i.row() for i in effects.new_instruments])
        if effects.statuses:
            await conn.executemany(UPDATE_STATUS, [(i.id, i.status) for i in effects.statuses.values()])
        if effects.approvals:
            await conn.executemany(UPSERT_APPROVAL, [
                (a.account_id, a.instrument_id, a.capacity, a.issued, a.approved_at)
                for a in effects.approvals.values()
            ])
        if effects.terms:
            await conn.executemany(INSERT_TERMS, [t.row() for t in effects.terms])
        if effects.redemptions:
            await conn.executemany(INSERT_REDEMPTION, effects.redemptions)
        if effects.grants:
            # After the redemptions: a grant's id is its redemption's.
            await conn.executemany(UPSERT_GRANT, [g.row() for g in effects.grants.values()])
        if effects.downloads:
            await conn.executemany(INSERT_DOWNLOAD, effects.downloads)
        if effects.offers:
            await conn.executemany(UPSERT_OFFER, [o.row() for o in effects.offers.values()])
        if effects.subscriptions:
            await conn.executemany(UPSERT_SUBSCRIPTION, [s.row() for s in effects.subscriptions.values()])
        if effects.subscription_periods:
            # Unique by (subscription, period): a period committed twice fails its batch rather than run twice.
            await conn.executemany(INSERT_SUBSCRIPTION_PERIOD, effects.subscription_periods)
        if effects.routed_orders:
            await conn.executemany(INSERT_ROUTED_ORDER, [r.row() for r in effects.routed_orders])
        if effects.packages:
            await conn.executemany(UPSERT_PACKAGE, [p.row() for p in effects.packages.values()])
        if effects.executions:
            # Unique by (package, period): a period committed twice fails its batch rather than run twice.
            await conn.executemany(INSERT_EXECUTION, effects.executions)
        if effects.client_requests:
            # Unique by (account, kind, id): a client id recorded twice fails its batch rather than run twice.
            await conn.executemany(INSERT_CLIENT_REQUEST, effects.client_requests)
        if effects.forget_requests_before is not None:
            await conn.execute(FORGET_REQUESTS, effects.forget_requests_before)
        if effects.providers:
            await conn.executemany(UPSERT_PROVIDER, [p.row() for p in effects.providers.values()])
        await conn.execute(BATCH.statement, *batch.arguments)


async def load(conn: asyncpg.Connection) -> Engine:
    """Rebuild the engine from the database: ids, accounts, instruments, books, balances, orders, volume."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(DEFAULT_PLANNER)
        next_ids = await conn.fetchrow(NEXT_IDS)
        ids = Ids(
            account=max(100, next_ids["account"]),
            instrument=next_ids["instrument"],
            # Routed orders take their ids from the order numbering too.
            order=max(next_ids["book_order"], next_ids["routed_order"]),
            fill=next_ids["fill"],
            entry=next_ids["journal_entry"],
            redemption=next_ids["redemption"],
            package=next_ids["package"],
            download=next_ids["dataset_download"],
            offer=next_ids["subscription_offer"],
            subscription=next_ids["subscription"],
        )
        engine = Engine(ids)
        for row in await conn.fetch(TRADER_ACCOUNTS):
            engine.add_account(Account(**row))
        open_orders: dict[int, list[Order]] = {}
        for row in await conn.fetch(OPEN_ORDERS):
            order = Order(**row)
            open_orders.setdefault(order.instrument_id, []).append(order)
            engine.settlement.restore(order)
        for row in await conn.fetch(INSTRUMENTS):
            instrument = Instrument(**row)
            book = OrderBook.rebuild(instrument.tick, (
                RestingOrder(o.id, o.account_id, o.side, o.price, o.open_qty, o.post_only, o.stp)
                for o in open_orders.get(instrument.id, ())
            ))
            engine.add_instrument(instrument, book)
        for row in await conn.fetch(APPROVALS):
            approval = Approval(**row)
            engine.approvals[(approval.account_id, approval.instrument_id)] = approval
            engine.instruments_by_id[approval.instrument_id].issued += approval.issued
        for account, asset, available, held in await conn.fetch(BALANCES):
            engine.ledger.balances[(account, asset)] = [available, held]
        for account, client_order_id, order_id in await conn.fetch(ORDER_CLIENT_IDS):
            engine.client_orders[(account, client_order_id)] = order_id
        for account, client_order_id, routed_id in await conn.fetch(ROUTED_CLIENT_IDS):
            engine.routed_client_orders[(account, client_order_id)] = routed_id
        for account, kind, client_request_id, result_id in await conn.fetch(CLIENT_REQUESTS):
            engine.client_requests[(account, kind, client_request_id)] = result_id
        engine.requests.extend(
            (digest, result) for digest, result in await conn.fetch(RECENT_REQUESTS, float(REMEMBER_SECONDS)))
        for row in await conn.fetch(PACKAGES):
            engine.packages[row["id"]] = Package(**row)
        for row in await conn.fetch(DATASET_TERMS):
            engine.datasets.terms[row["instrument_id"]] = Terms(**row)
        for row in await conn.fetch(USABLE_GRANTS, datetime.now(UTC)):
            engine.datasets.add_grant(Grant(**row))
        for row in await conn.fetch(OFFERS):
            engine.subscriptions.offers[row["id"]] = Offer(**row)
        for row in await conn.fetch(SUBSCRIPTIONS):
            engine.subscriptions.subscriptions[row["id"]] = Subscription(**row)
        await load_delivery(conn, engine)
        since = datetime.now(UTC) - timedelta(days=VOLUME_DAYS)
        for account, day, notional in await conn.fetch(DAILY_VOLUME, None, since):
            engine.volume.add(account, day, notional)
    return engine


async def load_delivery(conn: asyncpg.Connection, engine: Engine) -> None:
    """Providers with their windows of attempts, quotas and open reservations (``exchange.delivery``)."""
    next_ids = await conn.fetchrow(DELIVERY_NEXT_IDS)
    engine.ids.provider, engine.ids.reservation, engine.ids.usage = (
        next_ids["provider"], next_ids["reservation"], next_ids["usage"])
    for row in await conn.fetch(PROVIDERS):
        engine.delivery.add(delivery.Provider(**row))
    for provider_id, *sample in await conn.fetch(PROVIDER_WINDOWS, delivery.WINDOW_CALLS):
        engine.delivery.windows[provider_id].append(delivery.Sample(*sample))
    for row in await conn.fetch(QUOTAS):
        engine.quotas.restore(Quota(**row))
    for row in await conn.fetch(OPEN_RESERVATIONS):
        reservation = Reservation(**row)
        engine.quotas.open[reservation.id] = reservation


async def order_row(conn: asyncpg.Connection, order_id: int) -> Order | None:
    """One order as committed, open or closed."""
    row = await conn.fetchrow(ORDER_BY_ID, order_id)
    return None if row is None else Order(**row)
