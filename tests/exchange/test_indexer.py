"""The price index's minute job on the real database: trades made through the sequencer, a clock stepped by hand."""

import asyncio
from datetime import datetime, timedelta

import asyncpg

from exchange.commands import ApproveIssuer, CreateAccount, Deposit, ListInstrument, Mint, PlaceOrder, Rejection
from exchange.indexer import MINUTE, SETTLE, WINDOW, Indexer, IndexRow, floor_minute, latest
from exchange.sequencer import Sequencer

CNY = 1_000_000
# symbol -> (group, tokens per lot)
LISTED = {
    "DSV3": ("chat-general", 1_000_000),
    "HALFM": ("chat-general", 500_000),
    "TWOM": ("chat-general", 2_000_000),
    "CODER": ("code", 1_000_000),
    "VISION": ("vision", 1_000_000),
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def ok(exchange: Sequencer, command):
    result = await exchange.submit(command)
    assert not isinstance(result, Rejection), (command, result)
    return result


async def trade(exchange: Sequencer, seller: int, buyer: int, symbol: str, price: int, qty: int) -> None:
    await ok(exchange, PlaceOrder(seller, symbol, "sell", price=price, qty=qty))
    await ok(exchange, PlaceOrder(buyer, symbol, "buy", price=price, qty=qty))


async def listed_market(exchange: Sequencer) -> tuple[int, int]:
    """Five compute instruments in three groups; an issuer holding each and a buyer with cash."""
    seller = (await ok(exchange, CreateAccount("seller", "issuer"))).id
    buyer = (await ok(exchange, CreateAccount("buyer", "trader"))).id
    await ok(exchange, Deposit(buyer, 10_000 * CNY))
    for symbol, (group, tokens_per_lot) in LISTED.items():
        await ok(exchange, ListInstrument(symbol, "compute", tick=10_000, model=symbol.lower(),
                                          substitution_group=group, quality=80, tokens_per_lot=tokens_per_lot))
        await ok(exchange, ApproveIssuer(seller, symbol, 1_000))
        await ok(exchange, Mint(seller, symbol, 1_000))
    return seller, buyer


async def last_fill_at(pool: asyncpg.Pool) -> datetime:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT max(created_at) FROM fill")


async def rows(pool: asyncpg.Pool) -> list[IndexRow]:
    async with pool.acquire() as conn:
        records = await conn.fetch("SELECT * FROM price_index ORDER BY at, substitution_group")
    return [IndexRow(r["substitution_group"], r["at"], r["value"], r["stale"], r["trades"], int(r["volume_tokens"]),
                     int(r["notional"]), r["computed_at"]) for r in records]


async def test_the_job_writes_the_hand_computed_index_per_group_each_minute(exchange: Sequencer) -> None:
    seller, buyer = await listed_market(exchange)
    # The trades of tests/exchange/test_price_index.py: 2.0875 CNY per 1M tokens once trimmed.
    await trade(exchange, seller, buyer, "DSV3", 2 * CNY, 10)
    await trade(exchange, seller, buyer, "HALFM", 900_000, 20)
    await trade(exchange, seller, buyer, "TWOM", 5 * CNY, 5)
    await trade(exchange, seller, buyer, "DSV3", 2_100_000, 20)
    await trade(exchange, seller, buyer, "CODER", 3 * CNY, 4)
    traded = await last_fill_at(exchange.pool)
    published: list[list[IndexRow]] = []
    clock = Clock(floor_minute(traded) + MINUTE + SETTLE)
    indexer = Indexer(exchange.pool, clock=clock, publish=published.append)

    first = await indexer.run_once()
    at = floor_minute(traded) + MINUTE
    # A first run on an empty table catches up the last hour: the trades are only in the newest minute's window.
    assert len(first) == 60 * 3 and published == [first]
    newest = {row.substitution_group: row for row in first if row.at == at}
    assert newest == {
        "chat-general": IndexRow("chat-general", at, 2_087_500, False, 4, 50_000_000, 105 * CNY, clock.now),
        "code": IndexRow("code", at, 3 * CNY, False, 1, 4_000_000, 12 * CNY, clock.now),
        "vision": IndexRow("vision", at, None, True, 0, 0, 0, clock.now),
    }
    assert all(row.stale for row in first if row.at < at)
    assert await rows(exchange.pool) == sorted(first, key=lambda row: (row.at, row.substitution_group))

    # The same minute again adds nothing; each further minute adds one row per group.
    assert await indexer.run_once() == []
    clock.now += 5 * MINUTE
    five = await indexer.run_once()
    assert [row.at for row in five] == [at + n * MINUTE for n in range(1, 6) for _ in range(3)]
    assert {row.value for row in five if row.substitution_group == "chat-general"} == {2_087_500}

    # 24 hours after the last trade every group is stale: flagged, with no value carried over.
    clock.now = at + WINDOW + SETTLE
    caught_up = await indexer.run_once()
    assert len(caught_up) == 60 * 3, "a long gap is caught up for the last hour only"
    values = {(row.at - at, row.substitution_group): row.value for row in caught_up}
    assert values[(WINDOW - MINUTE, "code")] == 3 * CNY, "the trade is in the window of the last minute of 24 h"
    assert {(row.stale, row.value, row.trades) for row in caught_up if row.at == at + WINDOW} == {(True, None, 0)}
    async with exchange.pool.acquire() as conn:
        assert {group: row.stale for group, row in (await latest(conn)).items()} == \
            {"chat-general": True, "code": True, "vision": True}


async def test_a_restarted_job_continues_without_duplicates(exchange: Sequencer) -> None:
    seller, buyer = await listed_market(exchange)
    await trade(exchange, seller, buyer, "DSV3", 2 * CNY, 3)
    clock = Clock(floor_minute(await last_fill_at(exchange.pool)) + MINUTE + SETTLE)
    await Indexer(exchange.pool, clock=clock).run_once()
    before = await rows(exchange.pool)

    # Two servers on one database, or a restart, compute the same minutes: one row each.
    clock.now += 3 * MINUTE
    again = await asyncio.gather(Indexer(exchange.pool, clock=clock).run_once(),
                                 Indexer(exchange.pool, clock=clock).run_once())
    assert sum(map(len, again)) == 9, "each row is added by one of them"
    after = await rows(exchange.pool)
    assert len(after) == len(before) + 9
    assert len({(row.substitution_group, row.at) for row in after}) == len(after)


async def test_the_job_runs_each_minute_on_its_clock(exchange: Sequencer) -> None:
    await listed_market(exchange)
    clock = Clock(datetime.fromisoformat("2026-11-28T09:30:40+00:00"))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += timedelta(seconds=seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError

    indexer = Indexer(exchange.pool, clock=clock, sleep=sleep)
    task = asyncio.ensure_future(indexer.run())
    await asyncio.gather(task, return_exceptions=True)
    assert slept == [22.0, 60.0, 60.0]  # to 2 s past each minute
    found = await rows(exchange.pool)
    assert max(row.at for row in found) == datetime.fromisoformat("2026-11-28T09:32:00+00:00")
    assert len(found) == (60 + 2) * 3
