"""The minute job of the token price index: read the committed fills, write one ``price_index`` row per group.

Schedule
--------
Each run computes every whole UTC minute ``at`` not yet in the table, from the one after the newest row up to
the latest minute that ended ``SETTLE`` ago (a command is stamped before it commits, so a fill stamped just
before ``at`` may still be committing at ``at``). A run after an outage catches up at most ``CATCH_UP`` minutes;
older minutes stay missing rather than cost a long pass over a day of fills per minute. ``run`` repeats that
``SETTLE`` after each minute boundary of its clock; ``run_once`` is one run. The clock is injected, so tests
step through many minutes at once.

Idempotence
-----------
Rows are keyed by (group, minute) and inserted with ``ON CONFLICT DO NOTHING``: a restart, or two servers on one
database, compute the same minute to the same row and keep one. ``publish`` gets only the rows this run added.

The groups are the substitution groups of the compute instruments listed at the time of the run; the value
itself comes from ``exchange.price_index``.
"""

import asyncio
import bisect
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from exchange.database.queries import sql
from exchange.price_index import IndexTrade, compute

log = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
WINDOW = timedelta(hours=24)
SETTLE = timedelta(seconds=2)
CATCH_UP = 60
"""Minutes one run computes at most."""

Clock = Callable[[], datetime]


class IndexRow(msgspec.Struct, frozen=True):
    """One row of ``price_index``."""

    substitution_group: str
    at: datetime
    value: int | None
    stale: bool
    trades: int
    volume_tokens: int
    notional: int
    computed_at: datetime


COLUMNS = tuple(IndexRow.__struct_fields__)
"""The columns of ``price_index``, in the order of ``IndexRow``."""
GROUPS = sql("index_groups")
NEWEST = sql("newest_index_minute")
FILLS = sql("index_fills")
INSERT = sql("insert_index_rows")
LATEST = sql("latest_index_rows")


def wall_clock() -> datetime:
    return datetime.now(UTC)


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def row_of(record: Mapping[str, Any]) -> IndexRow:
    """The row of a ``price_index`` record (numeric columns come back as Decimal)."""
    values = dict(record)
    values["volume_tokens"] = int(values["volume_tokens"])
    values["notional"] = int(values["notional"])
    return IndexRow(**values)


async def latest(conn: asyncpg.Connection) -> dict[str, IndexRow]:
    """The newest row of each group."""
    return {row.substitution_group: row for row in map(row_of, await conn.fetch(LATEST))}


def rows_for(minutes: list[datetime], groups: list[str], fills: list[tuple[str, datetime, int, int, int]],
             computed_at: datetime) -> list[IndexRow]:
    """The rows of ``minutes`` x ``groups`` from ``fills`` (group, created_at, price, qty, tokens per lot), which
    are in created_at order and cover the windows of all ``minutes``."""
    times = [fill[1] for fill in fills]
    rows = []
    for at in minutes:
        window = fills[bisect.bisect_left(times, at - WINDOW):bisect.bisect_left(times, at)]
        by_group: dict[str, list[IndexTrade]] = {group: [] for group in groups}
        for group, _, price, qty, tokens_per_lot in window:
            if group in by_group:
                by_group[group].append(IndexTrade(price, qty, tokens_per_lot))
        for group, trades in by_group.items():
            index = compute(trades)
            rows.append(IndexRow(group, at, index.value, index.stale, index.trades, index.volume_tokens,
                                 index.notional, computed_at))
    return rows


class Indexer:
    """Computes the index each minute into ``price_index`` and hands new rows to ``publish``."""

    def __init__(self, pool: asyncpg.Pool, *, clock: Clock = wall_clock,
                 publish: Callable[[list[IndexRow]], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.pool = pool
        self.clock = clock
        self.publish = publish
        self.sleep = sleep

    async def run_once(self) -> list[IndexRow]:
        """Compute the minutes due now; return the rows added."""
        now = self.clock()
        current = floor_minute(now - SETTLE)
        first = current - (CATCH_UP - 1) * MINUTE
        async with self.pool.acquire() as conn:
            newest = await conn.fetchval(NEWEST)
            if newest is not None:
                first = max(first, newest + MINUTE)
            if first > current:
                return []
            minutes = [first + n * MINUTE for n in range((current - first) // MINUTE + 1)]
            groups = [row[0] for row in await conn.fetch(GROUPS)]
            if not groups:
                return []
            fills = [tuple(row) for row in await conn.fetch(FILLS, first - WINDOW, current)]
            # In a thread: a catch-up over a busy day takes a while, and the event loop also runs the sequencer.
            rows = await asyncio.to_thread(rows_for, minutes, groups, fills, now)
            columns = [list(column) for column in zip(*map(msgspec.structs.astuple, rows), strict=True)]
            added = sorted((row_of(record) for record in await conn.fetch(INSERT, *columns)),
                           key=lambda row: (row.at, row.substitution_group))
        if added and self.publish is not None:
            try:
                self.publish(added)
            except Exception:
                log.exception("publishing the price index failed")
        return added

    async def run(self) -> None:
        """Run once now and then after each minute boundary, until cancelled; a failed run is logged and retried
        at the next boundary."""
        while True:
            try:
                await self.run_once()
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("price index: the database is unavailable (%s: %s); retrying next minute",
                            type(exc).__name__, exc)
            except Exception:
                # A bug in one run must not end the minute job for the life of the server.
                log.exception("computing the price index failed; retrying next minute")
            now = self.clock()
            due = floor_minute(now - SETTLE) + MINUTE + SETTLE
            await self.sleep((due - now).total_seconds())
