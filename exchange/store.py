"""PostgreSQL persistence: commit one batch of effects, and load the whole engine back.

A batch's frequent rows (journal entries, postings, orders, fills, balances, sequence numbers) are written by
one statement, an insert, update or upsert per table fed by arrays (``_Batch``); the rare ones (accounts,
listings, approvals, redemptions, routed orders, packages, client request ids, halts, and the deletion of
signed requests too old to be replayed) join it in a transaction when a batch has
any. Nothing here decides anything; the rows come ready from the engine.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

import asyncpg
import msgspec

from exchange.engine import Effects, Engine, Ids
from exchange.packages import Package
from exchange.records import Account, Approval, Instrument, Order
from exchange.replay import REMEMBER_SECONDS
from exchange.routing import RoutedOrder
from matching.book import OrderBook
from matching.level import RestingOrder

ORDER_COLUMNS = tuple(Order.__struct_fields__)

INSERT_ACCOUNT = "INSERT INTO account (id, name, role, created_at) VALUES ($1, $2, $3, $4)"

INSERT_INSTRUMENT = f"""
INSERT INTO instrument ({", ".join(Instrument.ROW_FIELDS)})
VALUES ({", ".join(f"${i}" for i in range(1, len(Instrument.ROW_FIELDS) + 1))})
"""

UPDATE_STATUS = "UPDATE instrument SET status = $2 WHERE id = $1"

UPSERT_APPROVAL = """
INSERT INTO issuer_approval (account_id, instrument_id, capacity, issued, approved_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account_id, instrument_id)
DO UPDATE SET capacity = EXCLUDED.capacity, issued = EXCLUDED.issued, approved_at = EXCLUDED.approved_at
"""

INSERT_REDEMPTION = """
INSERT INTO redemption (id, instrument_id, account_id, qty, created_at) VALUES ($1, $2, $3, $4, $5)
"""

INSERT_ROUTED_ORDER = f"""
INSERT INTO routed_order ({", ".join(RoutedOrder.__struct_fields__)})
VALUES ({", ".join(f"${i}" for i in range(1, len(RoutedOrder.__struct_fields__) + 1))})
"""

UPSERT_PACKAGE = f"""
INSERT INTO package ({", ".join(Package.__struct_fields__)})
VALUES ({", ".join(f"${i}" for i in range(1, len(Package.__struct_fields__) + 1))})
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, next_period = EXCLUDED.next_period,
                               updated_at = EXCLUDED.updated_at
"""

INSERT_CLIENT_REQUEST = """
INSERT INTO client_request (account_id, kind, client_request_id, result_id, created_at) VALUES ($1, $2, $3, $4, $5)
"""

FORGET_REQUESTS = "DELETE FROM signed_request WHERE created_at < $1"

RECENT_REQUESTS = "SELECT digest FROM signed_request WHERE created_at > now() - make_interval(secs => $1)"

INSERT_EXECUTION = """
INSERT INTO package_execution (package_id, period, routed_order_id, reason, created_at) VALUES ($1, $2, $3, $4, $5)
"""


class _Batch:
    """The one statement that writes a batch's frequent rows: a CTE per table, each fed by ``unnest`` arrays.

    One statement is one round trip and, outside a transaction, atomic on its own; sending a batch as ten
    statements inside BEGIN/COMMIT cost ten round trips, which bounded throughput more than the work did.

    Each array travels as the text of an array literal, cast by the statement. asyncpg's binary array encoder
    checks every element against three abstract base classes, which cost more than the server's parsing of
    the text; and a literal can be made while the previous batch commits (``Write``), off the path between
    one commit and the next.

    A batch happens at one instant (the sequencer stamps every command of a batch with the same time), so its
    rows' times travel once, as ``$1``, instead of as arrays for the server to parse row by row.
    """

    TABLES = (
        ("journal_entry", "INSERT", (("id", "bigint"), ("kind", "text"), ("order_id", "bigint"),
                                     ("fill_id", "bigint"), ("created_at", "timestamptz"))),
        ("posting", "INSERT", (("entry_id", "bigint"), ("account_id", "bigint"), ("asset", "text"),
                               ("bucket", "text"), ("amount", "bigint"))),
        ("book_order", "INSERT", tuple(zip(ORDER_COLUMNS, (
            "bigint", "integer", "bigint", "text", "text", "text", "text", "boolean", "text", "bigint", "bigint",
            "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "integer", "integer", "bigint",
            "text", "text", "bigint", "timestamptz", "timestamptz"), strict=True))),
        ("book_order", "UPDATE", (("id", "bigint"), ("price", "bigint"), ("qty", "bigint"), ("open_qty", "bigint"),
                                  ("filled_qty", "bigint"), ("filled_notional", "bigint"),
                                  ("maker_notional", "bigint"), ("taker_notional", "bigint"), ("fee", "bigint"),
                                  ("held", "bigint"), ("status", "text"), ("reason", "text"),
                                  ("priority", "bigint"), ("updated_at", "timestamptz"))),
        ("fill", "INSERT", (("id", "bigint"), ("instrument_id", "integer"), ("seq", "bigint"), ("price", "bigint"),
                            ("qty", "bigint"), ("maker_order_id", "bigint"), ("taker_order_id", "bigint"),
                            ("maker_account_id", "bigint"), ("taker_account_id", "bigint"), ("taker_side", "text"),
                            ("maker_fee", "bigint"), ("taker_fee", "bigint"), ("created_at", "timestamptz"))),
        ("balance", "UPSERT", (("account_id", "bigint"), ("asset", "text"), ("available", "bigint"),
                               ("held", "bigint"), ("is_system", "boolean"))),
        ("instrument_seq", "UPSERT", (("instrument_id", "integer"), ("seq", "bigint"))),
        ("signed_request", "INSERT", (("digest", "hex"), ("created_at", "timestamptz"))),
    )
    UPSERT_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "balance": ("account_id", "asset"),
        "instrument_seq": ("instrument_id",),
    }
    """The conflict target of each upserted table; its other columns take the new row's values."""

    def __init__(self) -> None:
        parts = []
        n = 1  # $1 is the batch's instant
        self.instant_columns: list[list[int]] = []
        """Per table, the positions of its timestamp columns: each holds the batch's instant in every row."""
        self.array_columns: list[list[int]] = []
        """Per table, the positions of the columns sent as arrays."""
        for index, (table, action, columns) in enumerate(self.TABLES):
            names = ", ".join(name for name, _ in columns)
            # Set-returning functions in the select list run in step, row by row; ``FROM unnest(a, b, ...)``
            # first copies every array into a tuple store of its own, which cost a third more per book_order row.
            values = []
            self.instant_columns.append([])
            self.array_columns.append([])
            for position, (name, kind) in enumerate(columns):
                if kind == "timestamptz":
                    values.append(f"$1::timestamptz AS {name}")
                    self.instant_columns[-1].append(position)
                elif kind == "hex":
                    # bytea travels as hex text: its array literal then needs no backslash escapes.
                    n += 1
                    values.append(f"decode(unnest(${n}::text::text[]), 'hex') AS {name}")
                    self.array_columns[-1].append(position)
                else:
                    n += 1
                    values.append(f"unnest(${n}::text::{kind}[]) AS {name}")
                    self.array_columns[-1].append(position)
            rows = "SELECT " + ", ".join(values)
            if action == "UPDATE":
                sets = ", ".join(f"{name} = c.{name}" for name, _ in columns[1:])
                body = f"UPDATE {table} AS t SET {sets} FROM ({rows}) AS c WHERE t.id = c.id"
            else:
                body = f"INSERT INTO {table} ({names}) {rows}"
                if action == "UPSERT":
                    key = self.UPSERT_KEYS[table]
                    sets = ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in columns if name not in key)
                    body += f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
            parts.append(f"w{index} AS ({body})")
        self.sql = "WITH " + ",\n".join(parts) + "\nSELECT 1"

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
            [(digest.hex(), at) for digest, at in effects.requests],
        )
        instants: set[datetime] = set()
        literals: list[object] = []
        for rows, instant_columns, array_columns in zip(tables, self.instant_columns, self.array_columns,
                                                        strict=True):
            columns = list(zip(*rows, strict=True)) if rows else [() for _ in instant_columns + array_columns]
            for position in instant_columns:
                instants.update(columns[position])
            literals.extend(array_literal(columns[position]) for position in array_columns)
        if len(instants) > 1:
            raise ValueError(f"a batch's rows carry one instant, not {len(instants)}: {sorted(instants)}")
        return [next(iter(instants), None), *literals]


BATCH = _Batch()

WRITER_SETTINGS = (
    "SET plan_cache_mode = force_generic_plan; "
    "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off"
)
"""The writer connection's planner settings, which make the batch statement's one plan right at any size.

Planning the batch statement anew for every batch took a quarter of the server's time per command, so it is
planned once. Its only right plan reaches each row by its key; but a plan made once cannot see how long the
arrays are, and sees tables that start empty, for which it would choose hash joins over whole-table scans and
keep them as the tables grow. With index paths alone left, the plan stays right. (``load`` reads whole tables,
so it puts the defaults back for its own transaction.)
"""
DEFAULT_PLANNER = (
    "SET LOCAL plan_cache_mode TO DEFAULT; "
    "SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT"
)


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
            or effects.client_requests or effects.forget_requests_before is not None):
        await conn.execute(BATCH.sql, *batch.arguments)
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
        if effects.redemptions:
            await conn.executemany(INSERT_REDEMPTION, effects.redemptions)
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
        await conn.execute(BATCH.sql, *batch.arguments)


async def load(conn: asyncpg.Connection) -> Engine:
    """Rebuild the engine from the database: ids, accounts, instruments, books, balances, orders, volume."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(DEFAULT_PLANNER)
        ids = Ids(
            account=max(100, await _next_id(conn, "account")),
            instrument=await _next_id(conn, "instrument"),
            # Routed orders take their ids from the order numbering too.
            order=max(await _next_id(conn, "book_order"), await _next_id(conn, "routed_order")),
            fill=await _next_id(conn, "fill"),
            entry=await _next_id(conn, "journal_entry"),
            redemption=await _next_id(conn, "redemption"),
            package=await _next_id(conn, "package"),
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
        for row in await conn.fetch(
            f"SELECT {', '.join('i.' + name for name in Instrument.ROW_FIELDS)}, coalesce(s.seq, 0) AS seq"
            " FROM instrument i LEFT JOIN instrument_seq s ON s.instrument_id = i.id"
        ):
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
        for account, client_order_id, routed_id in await conn.fetch(
            "SELECT account_id, client_order_id, id FROM routed_order WHERE client_order_id IS NOT NULL"
        ):
            engine.routed_client_orders[(account, client_order_id)] = routed_id
        for account, kind, client_request_id, result_id in await conn.fetch(
            "SELECT account_id, kind, client_request_id, result_id FROM client_request"
        ):
            engine.client_requests[(account, kind, client_request_id)] = result_id
        engine.requests.extend(digest for (digest,) in await conn.fetch(RECENT_REQUESTS, float(REMEMBER_SECONDS)))
        for row in await conn.fetch(f"SELECT {', '.join(Package.__struct_fields__)} FROM package"):
            engine.packages[row["id"]] = Package(**row)
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
