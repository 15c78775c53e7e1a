"""The feed's user channel: an account's orders, fills and balances, read from the committed rows in one task, so
that what it sends never goes back in time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from api.feed.connection import Feed
from api.feed.protocol import BalanceUpdate, ErrorMessage, FillUpdate, OrderUpdate, encode
from api.schemas import Balance, Fill, asset_amount, order_from_row
from api.services import READ_ERRORS
from api.units import from_micro
from exchange.database.queries import sql

if TYPE_CHECKING:
    from api.feed.hub import Hub

log = logging.getLogger(__name__)

USER_ORDERS = sql("user_orders")
USER_OPEN_ORDERS = sql("user_open_orders")
USER_FILLS = sql("user_fills")
USER_BALANCES = sql("user_balances")
LIVE_KEYS = sql("live_api_keys")


@dataclass
class UserJob:
    """What committed batches changed for the user channel of one instrument: orders, and a range of fill ids."""

    seq: int = 0
    order_ids: set[int] = field(default_factory=set)
    first_fill: int = 0
    last_fill: int = 0


def merge(into: UserJob, job: UserJob) -> None:
    into.seq = max(into.seq, job.seq)
    into.order_ids.update(job.order_ids)
    if job.first_fill:
        into.first_fill = min(into.first_fill or job.first_fill, job.first_fill)
        into.last_fill = max(into.last_fill, job.last_fill)


class UserChannel:
    """What the hub owes its user subscriptions: the batches to read rows for, the subscriptions to welcome with
    balances and open orders, and the balances last sent; ``run`` is its task."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.jobs: dict[str, UserJob] = {}
        self.initial: list[tuple[str, int]] = []
        """(symbol, account) of new subscriptions, owed their balances and open orders"""
        self.poll = False
        """Balances and keys are due a check (each heartbeat): deposits and mints make no book events."""
        self.wake = asyncio.Event()
        self.balances: dict[tuple, dict[str, tuple[int, int]]] = {}
        """user feed key -> asset -> the (available, held) last sent"""

    def welcome(self, symbol: str, account_id: int) -> None:
        """Send a new subscription its balances and open orders."""
        self.initial.append((symbol, account_id))
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            jobs, self.jobs = self.jobs, {}
            initial, self.initial = self.initial, []
            poll, self.poll = self.poll, False
            assert self.hub.services is not None
            try:
                async with self.hub.services.connection() as conn:
                    if poll:
                        await self.check_keys(conn)
                    await self.round(conn, jobs, initial, poll)
            except READ_ERRORS as exc:
                log.warning("user channel: database unavailable (%s); retrying", type(exc).__name__)
                for symbol, job in jobs.items():
                    merge(self.jobs.setdefault(symbol, UserJob()), job)
                self.initial[:0] = initial
                self.poll = self.poll or poll
                await asyncio.sleep(1.0)
                self.wake.set()
            except Exception:
                log.exception("user channel round failed")
            self.hub.flush()

    async def check_keys(self, conn) -> None:
        """Drop the user subscriptions of keys revoked since they were made."""
        held = {key_id for connection in self.hub.connections for key_id in connection.keys.values()}
        if not held:
            return
        live = {row[0] for row in await conn.fetch(LIVE_KEYS, sorted(held))}
        for connection in list(self.hub.connections):
            for key, key_id in list(connection.keys.items()):
                if key_id not in live and key in connection.feeds:
                    self.hub.unsubscribe(connection, key)
                    self.hub.send(connection, encode(ErrorMessage(
                        "key_revoked", f"The key of the user subscription on {key[1]} was revoked.")))

    async def round(self, conn, jobs: dict[str, UserJob], initial: list[tuple[str, int]], poll: bool) -> None:
        balances: dict[tuple[int, str], tuple[int, int]] = {}
        for symbol, account_id in initial:
            feed = self.hub.user_feeds.get(symbol, {}).get(account_id)
            if feed is None:
                continue
            seq = self.hub.ladders[symbol].seq
            for row in await conn.fetch(USER_BALANCES, [account_id], ["CNY", symbol]):
                balances[(account_id, row["asset"])] = (row["available"], row["held"])
            for asset in ("CNY", symbol):
                self.send_balance(feed, symbol, seq, asset, balances.get((account_id, asset), (0, 0)), force=True)
            for row in await conn.fetch(USER_OPEN_ORDERS, account_id, symbol):
                self.hub.queue(feed, encode(OrderUpdate("user", symbol, seq, order_from_row(row))))
        for symbol, job in jobs.items():
            feeds = self.hub.user_feeds.get(symbol)
            if not feeds:
                continue
            accounts = list(feeds)
            if job.order_ids:
                for row in await conn.fetch(USER_ORDERS, list(job.order_ids), accounts):
                    feed = feeds.get(row["account_id"])
                    if feed is not None:
                        self.hub.queue(feed, encode(OrderUpdate("user", symbol, job.seq, order_from_row(row))))
            if job.first_fill:
                for row in await conn.fetch(USER_FILLS, job.first_fill, job.last_fill, symbol, accounts):
                    for role, account_id, order_id, side, fee in (
                            ("maker", row["maker_account_id"], row["maker_order_id"],
                             "sell" if row["taker_side"] == "buy" else "buy", row["maker_fee"]),
                            ("taker", row["taker_account_id"], row["taker_order_id"], row["taker_side"],
                             row["taker_fee"])):
                        feed = feeds.get(account_id)
                        if feed is not None:
                            fill = Fill(row["id"], order_id, symbol, side, role, from_micro(row["price"]), row["qty"],
                                        from_micro(fee), row["seq"], row["created_at"])
                            self.hub.queue(feed, encode(FillUpdate("user", symbol, row["seq"], fill)))
        symbols = set(jobs) if not poll else set(self.hub.user_feeds)
        wanted = [(symbol, account_id) for symbol in symbols for account_id in self.hub.user_feeds.get(symbol, {})]
        if not wanted:
            return
        accounts = sorted({account_id for _, account_id in wanted})
        assets = sorted({"CNY", *(symbol for symbol, _ in wanted)})
        for row in await conn.fetch(USER_BALANCES, accounts, assets):
            balances[(row["account_id"], row["asset"])] = (row["available"], row["held"])
        for symbol, account_id in wanted:
            feed = self.hub.user_feeds.get(symbol, {}).get(account_id)
            if feed is None:
                continue
            seq = self.hub.ladders[symbol].seq
            for asset in ("CNY", symbol):
                self.send_balance(feed, symbol, seq, asset, balances.get((account_id, asset), (0, 0)))

    def send_balance(self, feed: Feed, symbol: str, seq: int, asset: str, amounts: tuple[int, int],
                      force: bool = False) -> None:
        sent = self.balances.setdefault(feed.key, {})
        if not force and sent.get(asset) == amounts:
            return
        sent[asset] = amounts
        balance = Balance(asset, asset_amount(asset, amounts[0]), asset_amount(asset, amounts[1]))
        self.hub.queue(feed, encode(BalanceUpdate("user", symbol, seq, balance)))
