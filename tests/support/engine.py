"""The engine's test market: its accounts, instruments and orders as commands, the engine's state to compare,
``Desk``, which applies commands to an ``Engine`` in memory and checks every invariant after each, and the same
market opened through a running ``Sequencer``.

The same market runs in memory (``tests/exchange/test_engine_commands.py``) and through the sequencer on a real
PostgreSQL (``test_recovery.py``, ``test_persistence.py``), so what the engine does and what is committed and
rebuilt are tested on the same ground.
"""

import asyncio
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import msgspec

from exchange import fees, invariants
from exchange.commands import (
    ApproveIssuer,
    Command,
    CreateAccount,
    Deposit,
    ListInstrument,
    Mint,
    PlaceOrder,
    Rejection,
    Result,
    Withdraw,
)
from exchange.engine import Effects, Engine
from exchange.ledger import BUCKETS, CASH, SYSTEM_ACCOUNTS
from exchange.records import Order
from exchange.rejections import MESSAGES, WITHDRAWAL_NOT_COVERED
from exchange.sequencer import Sequencer
from matching.book import OrderBook
from matching.level import RestingOrder
from matching.types import BUY

COMPUTE = "DEEPSEEK-V3"
DATASET = "DS-STEEL-QC"
TICK = 10_000
"""COMPUTE's tick: 0.01 CNY per lot. DATASET is priced to the micro-yuan (tick 1), to see fees round."""
BID = 1_800_000
ASK = 1_900_000
DEPOSIT = 1_000 * fees.MICRO
MAKER_PPM = 10 * 100
TAKER_PPM = 20 * 100
MAX_PPM = TAKER_PPM
NOBODY = 999

ACCOUNTS = [CreateAccount("admin", "admin"), CreateAccount("issuer", "issuer"), CreateAccount("alice", "trader"),
            CreateAccount("bob", "trader"), CreateAccount("rival", "issuer")]
"""The market's accounts, in the order of ``Market``'s fields; rival is an issuer approved for nothing."""


@dataclass
class Market:
    """The ids of the market's accounts and, once busy, of its resting orders, on ``engine``."""

    engine: Engine
    admin: int
    issuer: int
    alice: int
    bob: int
    rival: int
    # Set by ``make_busy``; 0 until then.
    ask: int = field(init=False, default=0)
    """The issuer's resting sell of 10 COMPUTE at ASK (busy only)."""
    bid: int = field(init=False, default=0)
    """Alice's resting buy of 10 COMPUTE at BID, 4 of them filled (busy only)."""
    offer: int = field(init=False, default=0)
    """Alice's resting post-only sell of 3 of those 4 COMPUTE at ASK + 5 ticks (busy only)."""

    def balance(self, account: int, asset: str = CASH) -> tuple[int, int]:
        """(available, held) in the engine's memory."""
        ledger = self.engine.ledger
        return ledger.available(account, asset), ledger.held(account, asset)


def listing(market: Market) -> list[Command]:
    """Both instruments listed, the issuer approved and minted, the issuer and two traders funded."""
    return [
        ListInstrument(COMPUTE, "compute", tick=TICK, min_qty=1, max_qty=1_000, model="deepseek-v3",
                       substitution_group="chat-general", quality=90, tokens_per_lot=1_000_000),
        ListInstrument(DATASET, "dataset", tick=1, min_qty=2, max_qty=50, issuer_id=market.issuer,
                       description="Steel plant QC images", license="research only", grants="1,000 records",
                       supply_cap=100),
        ApproveIssuer(market.issuer, COMPUTE, 10_000),
        ApproveIssuer(market.issuer, DATASET, 1_000),
        Mint(market.issuer, COMPUTE, 5_000),
        Mint(market.issuer, DATASET, 50),
        *(Deposit(account, DEPOSIT) for account in (market.issuer, market.alice, market.bob)),
    ]


def busy_orders(market: Market) -> list[Command]:
    """Rest an ask and a bid, fill 4 of the bid, and offer 3 of those 4 tokens again, post-only; the answers are
    (ask, bid, taker, offer)."""
    return [
        PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=10),
        PlaceOrder(market.alice, COMPUTE, "buy", price=BID, qty=10),
        PlaceOrder(market.issuer, COMPUTE, "sell", price=BID, qty=4),
        PlaceOrder(market.alice, COMPUTE, "sell", price=ASK + 5 * TICK, qty=3, post_only=True),
    ]


def engine_state(engine: Engine) -> dict:
    """Everything in the engine's memory that a command could change: what a refusal must leave as it was, and
    what a restart must rebuild."""
    return {
        # Ids.entry only seeds the ledger, which counts entries itself from then on.
        "ids": {name: value for name, value in dataclasses.asdict(engine.ids).items() if name != "entry"},
        "next entry": engine.ledger.next_entry_id,
        "balances": {key: tuple(value) for key, value in engine.ledger.balances.items()},
        "accounts": sorted(engine.accounts),
        "instruments": {s: (i.status, i.seq, i.issued) for s, i in engine.instruments.items()},
        "books": {s: i.book.resting_orders() for s, i in engine.instruments.items()},
        "open orders": {i: msgspec.structs.astuple(o) for i, o in engine.orders.items() if o.status == "open"},
        "open by account": {a: set(ids) for a, ids in engine.open_by_account.items() if ids},
        "approvals": {key: (a.capacity, a.issued) for key, a in engine.approvals.items()},
        "client orders": dict(engine.client_orders),
        "dataset terms": {instrument: t.version for instrument, t in engine.datasets.terms.items()},
        # A grant spent to its last download is forgotten at its next look-up, or at a restart.
        "dataset grants": {g.id: msgspec.structs.astuple(g) for grants in engine.datasets.grants.values()
                           for g in grants if g.downloads is None or g.downloads_used < g.downloads},
        "subscription offers": {i: msgspec.structs.astuple(o) for i, o in engine.subscriptions.offers.items()},
        "subscriptions": {i: msgspec.structs.astuple(s) for i, s in engine.subscriptions.subscriptions.items()},
        "quotas": {key: msgspec.structs.astuple(q) for key, q in engine.quotas.rows.items()},
        "reservations": {i: msgspec.structs.astuple(r) for i, r in engine.quotas.open.items()},
        "providers": {i: msgspec.structs.astuple(p) for i, p in engine.delivery.providers.items()},
        "windows": {i: list(window) for i, window in engine.delivery.windows.items()},
    }


FILL_PRICE, FILL_MAKER_FEE, FILL_TAKER_FEE = 3, 10, 11
"""Positions in a fill row (``Effects.fills``, the columns of ``fill``)."""

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
TS = int(AT.timestamp()) * 1_000_000
"""The one instant every command of a ``Desk`` is applied at: the engine reads no clock, so none is needed."""


def refusal(command: Command, code: str) -> Rejection:
    """The rejection ``command`` gets for ``code``: a withdrawal has no order and no fee to speak of."""
    if isinstance(command, Withdraw) and code == "insufficient_funds":
        return Rejection(code, WITHDRAWAL_NOT_COVERED)
    return Rejection(code, MESSAGES[code])


class Desk:
    """An ``Engine`` driven in memory as the sequencer drives it: each command applied at ``TS``/``AT``, then what
    it would commit taken and kept (orders as their rows, fills, journal entries), and every invariant checked.

    The invariants are those ``exchange.invariants`` checks on the database, on what the engine would commit: no
    negative balance outside the system accounts; each account's held amount equals what its open orders hold;
    every entry and every asset sums to zero; every balance equals its postings; each book is the valid book of
    the engine's open orders, in priority order.
    """

    def __init__(self) -> None:
        self.engine = Engine()
        self.effects = Effects()
        """What the last command would commit."""
        self.rows: dict[int, Order] = {}
        """Every order as last committed (a ``book_order`` row), open or closed."""
        self.fills: list[tuple] = []
        self.entries: dict[int, tuple[str, int | None]] = {}
        """Journal entry id -> (kind, order id)."""
        self.postings: list[tuple] = []
        self.posted: Counter[tuple[int, str, str]] = Counter()

    def run(self, command: Command) -> Result:
        result = self.engine.apply(command, TS, AT)
        self.effects = effects = self.engine.take_effects()
        for order in (*effects.new_orders.values(), *effects.changed_orders.values()):
            self.rows[order.id] = msgspec.structs.replace(order)
        self.fills.extend(effects.fills)
        for entry_id, kind, order_id, _, _ in effects.entries:
            self.entries[entry_id] = (kind, order_id)
        for _, account, asset, bucket, amount in effects.postings:
            self.posted[(account, asset, bucket)] += amount
        self.postings.extend(effects.postings)
        assert self.problems(effects) == [], command
        return result

    def ok(self, command: Command) -> Result:
        result = self.run(command)
        assert not isinstance(result, Rejection), (command, result)
        return result

    def all_ok(self, commands: list[Command]) -> list[Result]:
        return [self.ok(command) for command in commands]

    def account(self, name: str, cash: int = 0, role: str = "trader") -> int:
        done = self.ok(CreateAccount(name, role))
        if cash:
            self.ok(Deposit(done.id, cash))
        return done.id

    def hold_posted(self, order_id: int) -> int:
        """What was moved into held for ``order_id`` (its hold entries, excluding releases)."""
        return sum(amount for entry_id, _, _, bucket, amount in self.postings
                   if self.entries[entry_id] == ("hold", order_id) and bucket == "held")

    def assert_refused(self, command: Command, code: str) -> None:
        """``command`` is answered with ``code``, changes nothing in memory and leaves nothing to commit."""
        before = engine_state(self.engine)
        assert self.run(command) == refusal(command, code), command
        assert engine_state(self.engine) == before, command
        assert self.effects == Effects(), command

    def problems(self, effects: Effects) -> list[str]:
        """Every broken invariant after the command that made ``effects``, described; empty when all hold."""
        engine = self.engine
        found: list[str] = []
        totals: Counter[str] = Counter()
        for (account, asset), (available, held) in engine.ledger.balances.items():
            totals[asset] += available + held
            if account not in SYSTEM_ACCOUNTS and (available < 0 or held < 0):
                found.append(f"account {account} has negative {asset}: available {available}, held {held}")
            posted = (self.posted[(account, asset, BUCKETS[0])], self.posted[(account, asset, BUCKETS[1])])
            if (available, held) != posted:
                found.append(f"account {account} {asset} balance ({available}, {held}) != postings {posted}")
        found.extend(f"{asset} does not sum to zero over all accounts: {total}"
                     for asset, total in totals.items() if total)
        entries: Counter[tuple[int, str]] = Counter()
        for entry_id, _, asset, _, amount in effects.postings:
            entries[(entry_id, asset)] += amount
        found.extend(f"journal entry {entry} does not balance in {asset}: {total}"
                     for (entry, asset), total in entries.items() if total)
        open_orders = sorted((o for o in engine.orders.values() if o.status == "open"), key=lambda o: o.priority)
        orders_held: Counter[tuple[int, str]] = Counter()
        for order in open_orders:
            symbol = engine.instruments_by_id[order.instrument_id].symbol
            orders_held[(order.account_id, CASH if order.side == BUY else symbol)] += order.held
        for (account, asset), (_, held) in engine.ledger.balances.items():
            if held != (by_orders := orders_held.pop((account, asset), 0)):
                found.append(f"account {account} holds {held} {asset} but its open orders hold {by_orders}")
        found.extend(f"open orders of account {account} hold {asset} it has no balance of"
                     for (account, asset), held in orders_held.items() if held)
        for instrument in engine.instruments.values():
            mine = [RestingOrder(o.id, o.account_id, o.side, o.price, o.open_qty, o.post_only, o.stp)
                    for o in open_orders if o.instrument_id == instrument.id]
            try:
                instrument.book.check()
                rebuilt = OrderBook.rebuild(instrument.tick, mine)
            except AssertionError as exc:
                found.append(f"{instrument.symbol}: not a valid book: {exc}")
                continue
            if instrument.book.resting_orders() != rebuilt.resting_orders():
                found.append(f"{instrument.symbol}: the book differs from the engine's open orders")
        return found


def open_market(desk: Desk) -> Market:
    """The market's accounts and listings on ``desk``."""
    market = Market(desk.engine, *(done.id for done in desk.all_ok(ACCOUNTS)))
    desk.all_ok(listing(market))
    return market


def make_busy(desk: Desk, market: Market) -> Market:
    return _busy(market, desk.all_ok(busy_orders(market)))


def _busy(market: Market, answers: list[Result]) -> Market:
    ask, bid, taken, offer = answers
    assert taken.status == "filled"
    market.ask, market.bid, market.offer = ask.id, bid.id, offer.id
    return market


async def submit_all(sequencer: Sequencer, commands: list[Command]) -> list[Result]:
    """Submit ``commands`` together, in order (one batch, one commit); every one must succeed."""
    results = await asyncio.gather(*(sequencer.submit(command) for command in commands))
    for command, result in zip(commands, results, strict=True):
        assert not isinstance(result, Rejection), (command, result)
    return results


async def submit_ok(sequencer: Sequencer, command: Command) -> Result:
    return (await submit_all(sequencer, [command]))[0]


async def open_market_through(sequencer: Sequencer) -> Market:
    """The market's accounts and listings, committed through ``sequencer``."""
    market = Market(sequencer.engine, *(done.id for done in await submit_all(sequencer, ACCOUNTS)))
    await submit_all(sequencer, listing(market))
    return market


async def make_busy_through(sequencer: Sequencer, market: Market) -> Market:
    return _busy(market, await submit_all(sequencer, busy_orders(market)))


@dataclass
class SequencedMarket(Market):
    """A market whose commands go through a running sequencer (``exchange``), committed before they answer."""

    exchange: Sequencer | None = None

    async def run(self, command: Command) -> Result:
        return await self.exchange.submit(command)

    async def ok(self, command: Command) -> Result:
        return await submit_ok(self.exchange, command)

    def switch(self, sequencer: Sequencer) -> None:
        """Go on through ``sequencer`` (a restart's)."""
        self.exchange, self.engine = sequencer, sequencer.engine


async def assert_invariants(sequencer: Sequencer) -> None:
    """``invariants.problems`` finds nothing in what ``sequencer`` committed."""
    async with sequencer.pool.acquire() as conn:
        assert await invariants.problems(conn, sequencer.engine) == []


async def database_state(pool: asyncpg.Pool) -> dict:
    """What a refused command must leave as it was in the database."""
    async with pool.acquire() as conn:
        state = {
            "balances": sorted(map(tuple, await conn.fetch("SELECT account_id, asset, available, held FROM balance"))),
            "orders": list(map(tuple, await conn.fetch("SELECT * FROM book_order ORDER BY id"))),
            "instruments": list(map(tuple, await conn.fetch("SELECT * FROM instrument ORDER BY id"))),
            "instrument seqs": list(map(tuple, await conn.fetch("SELECT * FROM instrument_seq ORDER BY 1"))),
            "approvals": sorted(map(tuple, await conn.fetch("SELECT * FROM issuer_approval"))),
        }
        for table in ("account", "journal_entry", "posting", "fill", "redemption"):
            state[f"{table} rows"] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return state


async def snapshot(sequencer: Sequencer) -> tuple[dict, dict]:
    """The database's state and the engine's."""
    return await database_state(sequencer.pool), engine_state(sequencer.engine)

