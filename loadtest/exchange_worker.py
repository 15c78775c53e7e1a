"""A load of clients trading through one sequencer, recording every answer they get; killed in crash tests.

    python -m loadtest.exchange_worker --dsn DSN --ack-log FILE [--clients 8] [--orders 100000] [--seed 1]

The worker opens a pool and a ``Sequencer`` on a migrated database, sets up a market if it is not there
yet (an instrument, an issuer holding minted tokens, a few funded traders holding some of them), prints
``ready`` on stdout, then runs ``--clients`` concurrent clients, each sending ``--orders`` commands: limit
GTC and IOC orders, market orders, market buys by budget, cancels and amends of its own open orders.

Ack log
-------
After each answer a client appends one JSON line, ``Ack``: the command and the result, each tagged with its
kind, written with one ``write`` and made durable with ``fsync`` before the client sends its next command. The
log is therefore what clients were told, no more: a crash test kills the worker at any moment and then checks
that the database holds everything the log says was acknowledged. A kill may cut the last line short; readers
skip a line that does not decode. ``contradictions`` compares a log with a database.

Setup is idempotent: every step looks at what the database already has (accounts by name, the instrument
by symbol, balances) or uses a ``client_order_id``, so a worker killed half-way through it can be started
again on the same database. Client order ids carry the seed, so runs with different seeds never collide.
"""

import argparse
import asyncio
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
import msgspec

from exchange.commands import (
    AmendOrder,
    ApproveIssuer,
    CancelOrder,
    Command,
    CreateAccount,
    Deposit,
    ListInstrument,
    Mint,
    OrderView,
    PlaceOrder,
    Rejection,
    Result,
)
from exchange.database.migrations import migrate
from exchange.ledger import CASH
from exchange.sequencer import Sequencer
from matching.types import BUY, GTC, IOC, SELL

SYMBOL = "LOADTEST-V1"
TICK = 10_000  # 0.01 CNY per lot
MID = 2_000 * TICK  # 20.00 CNY per lot
ISSUER = "loadtest-issuer"
TRADER = "loadtest-trader-{}"
TRADERS = 4
SUPPLY = 100_000_000  # lots minted for the issuer
HANDOUT = 200_000  # lots each trader buys from the issuer during setup
CASH_EACH = 10_000_000 * 1_000_000  # 10 million CNY per account, in micro-yuan

OrderCommand = PlaceOrder | CancelOrder | AmendOrder


class Ack(msgspec.Struct, frozen=True):
    """One line of the ack log: what a client sent and what it was told once the command had committed."""

    client: int
    command: OrderCommand
    result: Result
    """Tagged with its kind (``exchange.commands.Result``), so it decodes back to the same struct."""

    def pair(self) -> tuple[OrderCommand, Result]:
        return self.command, self.result


@dataclass
class Market:
    """The accounts and instrument a load runs on."""

    symbol: str
    issuer: int
    traders: list[int]

    @property
    def accounts(self) -> list[int]:
        return [self.issuer, *self.traders]


class SetupFailed(RuntimeError):
    """A setup command was refused; the message names it."""


async def prepare(seq: Sequencer, traders: int = TRADERS, handout: int = HANDOUT) -> Market:
    """Make sure the market of this module exists on ``seq``'s database; return it."""

    async def ok(command: Command) -> Result:
        result = await seq.submit(command)
        if isinstance(result, Rejection):
            raise SetupFailed(f"{command!r} was refused: {result.code}")
        return result

    async def account(name: str, role: str) -> int:
        for existing in seq.engine.accounts.values():
            if existing.name == name:
                return existing.id
        return (await ok(CreateAccount(name, role))).id

    issuer = await account(ISSUER, "issuer")
    trader_ids = [await account(TRADER.format(i), "trader") for i in range(traders)]
    if SYMBOL not in seq.engine.instruments:
        await ok(ListInstrument(SYMBOL, "compute", TICK, max_qty=SUPPLY, model="loadtest",
                                substitution_group="chat-general", quality=80, tokens_per_lot=1_000_000))
    if (issuer, seq.engine.instruments[SYMBOL].id) not in seq.engine.approvals:
        await ok(ApproveIssuer(issuer, SYMBOL, SUPPLY))
    if seq.engine.instruments[SYMBOL].issued == 0:
        await ok(Mint(issuer, SYMBOL, SUPPLY))
    for account_id in (issuer, *trader_ids):
        ledger = seq.engine.ledger
        if ledger.available(account_id, CASH) + ledger.held(account_id, CASH) == 0:
            await ok(Deposit(account_id, CASH_EACH))
    # Traders get tokens the way traders do, by buying them; the client order ids make this idempotent.
    await ok(PlaceOrder(issuer, SYMBOL, SELL, price=MID, qty=handout * traders,
                        client_order_id="setup-handout"))
    for i, account_id in enumerate(trader_ids):
        await ok(PlaceOrder(account_id, SYMBOL, BUY, price=MID, qty=handout, tif=IOC,
                            client_order_id=f"setup-buy-{i}"))
    return Market(SYMBOL, issuer, trader_ids)


class Client:
    """One client: its account, its own open orders, and a random mix of commands."""

    def __init__(self, number: int, account_id: int, seed: int, rng: random.Random) -> None:
        self.number = number
        self.account_id = account_id
        self.seed = seed
        self.rng = rng
        self.open: list[int] = []
        self.sent = 0

    def next_command(self) -> OrderCommand:
        rng = self.rng
        roll = rng.random()
        if self.open and roll < 0.25:
            return CancelOrder(self.account_id, self.open.pop(rng.randrange(len(self.open))))
        if self.open and roll < 0.35:
            order_id = rng.choice(self.open)
            if rng.random() < 0.5:
                return AmendOrder(self.account_id, order_id, qty=rng.randint(1, 20))
            return AmendOrder(self.account_id, order_id, price=MID + rng.randint(-8, 8) * TICK)
        self.sent += 1
        coid = f"s{self.seed}-c{self.number}-{self.sent}"
        side = BUY if rng.random() < 0.5 else SELL
        sign = -1 if side == BUY else 1
        roll = rng.random()
        if roll < 0.60:  # rests mostly; a few cross
            price = MID + sign * rng.randint(-2, 10) * TICK
            return PlaceOrder(self.account_id, SYMBOL, side, price=price, qty=rng.randint(1, 20), tif=GTC,
                              client_order_id=coid)
        if roll < 0.75:
            price = MID - sign * rng.randint(0, 4) * TICK
            return PlaceOrder(self.account_id, SYMBOL, side, price=price, qty=rng.randint(1, 20), tif=IOC,
                              client_order_id=coid)
        if roll < 0.90:
            return PlaceOrder(self.account_id, SYMBOL, side, type="market", qty=rng.randint(1, 10),
                              client_order_id=coid)
        return PlaceOrder(self.account_id, SYMBOL, BUY, type="market", budget=rng.randint(10, 300) * 1_000_000,
                          client_order_id=coid)

    def learn(self, command: OrderCommand, result: Result) -> None:
        """Keep track of which of this client's orders are still open."""
        if isinstance(result, OrderView):
            if result.status == "open" and not isinstance(command, AmendOrder):
                self.open.append(result.id)
            elif result.status != "open" and result.id in self.open:
                self.open.remove(result.id)


class AckLog:
    """An append-only file of ``Ack`` lines, each durable before the call returns."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.encoder = msgspec.json.Encoder()

    def append(self, client: int, command: OrderCommand, result: Result) -> None:
        os.write(self.fd, self.encoder.encode(Ack(client, command, result)) + b"\n")
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def read_acks(path: str) -> list[Ack]:
    """Every complete line of an ack log, in order; a torn last line is left out."""
    decoder = msgspec.json.Decoder(Ack)
    acks = []
    with open(path, "rb") as file:
        for line in file:
            try:
                acks.append(decoder.decode(line))
            except msgspec.DecodeError:
                continue
    return acks


async def contradictions(conn: asyncpg.Connection, acks: Iterable[tuple[OrderCommand, Result]]) -> list[str]:
    """Every way the committed database disagrees with what clients were told; empty when it agrees.

    An acknowledged order must exist with its account and client order id, with at least the filled quantity
    the client saw, and exactly what the client saw once it was closed (a closed order never changes
    again); every fill the client was told of must exist with its price, quantity and this order on the
    right side. A refused order must have left no order under its client order id.
    """
    orders = {row["id"]: row for row in await conn.fetch(
        "SELECT id, account_id, client_order_id, status, filled_qty FROM book_order"
    )}
    by_client_id = {(row["account_id"], row["client_order_id"]) for row in orders.values()}
    fills = {row["id"]: row for row in await conn.fetch(
        "SELECT id, price, qty, maker_order_id, taker_order_id FROM fill"
    )}
    found = []
    for command, result in acks:
        if isinstance(result, Rejection):
            if isinstance(command, PlaceOrder) and (command.account_id, command.client_order_id) in by_client_id:
                found.append(f"{command.client_order_id} was refused ({result.code}) but is in the database")
            continue
        if not isinstance(result, OrderView):
            continue
        row = orders.get(result.id)
        if row is None:
            found.append(f"order {result.id} was acknowledged ({result.status}) but is not in the database")
            continue
        if (row["account_id"], row["client_order_id"]) != (result.account_id, result.client_order_id):
            found.append(f"order {result.id} belongs to {row['account_id']}/{row['client_order_id']} in the "
                         f"database, not {result.account_id}/{result.client_order_id}")
        if row["filled_qty"] < result.filled_qty:
            found.append(f"order {result.id} was acknowledged with {result.filled_qty} filled, "
                         f"the database has {row['filled_qty']}")
        if result.status != "open" and (row["status"], row["filled_qty"]) != (result.status, result.filled_qty):
            found.append(f"order {result.id} was acknowledged {result.status} with {result.filled_qty} filled, "
                         f"the database has it {row['status']} with {row['filled_qty']}")
        for fill in result.fills:
            committed = fills.get(fill.fill_id)
            side = "maker_order_id" if fill.role == "maker" else "taker_order_id"
            if committed is None:
                found.append(f"fill {fill.fill_id} of order {result.id} was acknowledged but is not in the database")
            elif (committed["price"], committed["qty"], committed[side]) != (fill.price, fill.qty, result.id):
                found.append(f"fill {fill.fill_id} of order {result.id} differs from what was acknowledged")
    return found


async def run_client(seq: Sequencer, client: Client, orders: int, log: AckLog) -> None:
    for _ in range(orders):
        command = client.next_command()
        result = await seq.submit(command)
        log.append(client.number, command, result)
        client.learn(command, result)


async def main(dsn: str, ack_log: str, clients: int, orders: int, seed: int) -> None:
    await migrate(dsn)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        seq = await Sequencer.open(pool)
        market = await prepare(seq)
        print("ready", flush=True)
        log = AckLog(ack_log)
        rng = random.Random(seed)
        accounts = market.accounts
        tasks = [
            run_client(seq, Client(n, accounts[n % len(accounts)], seed, random.Random(rng.random())), orders, log)
            for n in range(clients)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            await seq.stop()
            log.close()
        print("done", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="a migrated database")
    parser.add_argument("--ack-log", required=True, help="the file to append acknowledged results to")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--orders", type=int, default=100_000, help="commands per client")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    asyncio.run(main(args.dsn, args.ack_log, args.clients, args.orders, args.seed))
