"""The feed's user channel: an account's orders, fills and balances, and its providers' deliveries, from the
engine's account events (``exchange.account_events``) after a snapshot read from the database.

Order of things
---------------
A new subscription is owed a snapshot: its balances and open orders, read in one transaction together with where
the commits stood (``Snapshot``: the last journal entry and every seq). From the moment it is owed one, the
events for it are held; once the snapshot is queued, the held events follow, minus those whose batch the
snapshot already holds. Events arrive in commit order, after their commit, so an event that arrives later and is
still held by the snapshot can only come before the first one that is not: from that one on, every event goes
out as it comes. So the subscriber never goes back in time, misses nothing after its snapshot and sees nothing
twice. Deliveries are in no snapshot: each goes out once, as it comes (or after the snapshot, when held).

When the market view was rebuilt (``Hub.resync``: a commit in doubt, or a gateway that lost account events),
every subscription is owed a snapshot again, with the fills it missed since the last one it was sent. The keys
behind the subscriptions are checked each heartbeat: a revoked key loses its subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from api.feed.connection import Feed
from api.feed.protocol import (
    BalanceUpdate,
    DeliveryUpdate,
    ErrorMessage,
    FillUpdate,
    OrderUpdate,
    RedemptionUpdate,
    encode,
)
from api.schemas import Balance, DeliveryEvent, Fill, Redemption, asset_amount, order_from_row, order_from_view
from api.services import READ_ERRORS
from api.units import from_micro
from exchange.account_events import AccountEvents, Snapshot
from exchange.database.queries import sql
from exchange.ledger import CASH

if TYPE_CHECKING:
    from api.feed.hub import Hub

log = logging.getLogger(__name__)

USER_OPEN_ORDERS = sql("user_open_orders")
USER_FILLS = sql("user_fills")
USER_BALANCES = sql("user_balances")
LIVE_KEYS = sql("live_api_keys")
LAST_ENTRY_ID = sql("last_entry_id")
LAST_FILL_ID = sql("last_fill_id")
INSTRUMENT_SEQS = sql("instrument_seqs")
MAX_HELD = 4096
"""Events held for one subscription while its snapshot is owed; beyond, they are dropped for a later snapshot."""


class UserChannel:
    """The hub's user subscriptions by account, what each is owed, and ``run``, the task that reads snapshots."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.feeds: dict[int, dict[str, Feed]] = {}
        """account -> symbol -> its user subscription"""
        self.owed: list[Feed] = []
        """Subscriptions owed a snapshot, oldest first."""
        self.held: dict[tuple, list[AccountEvents]] = {}
        """Events for a subscription whose snapshot is owed or being read."""
        self.since: dict[tuple, Snapshot] = {}
        """A subscription's snapshot, while events it already holds may still arrive."""
        self.last_fill: dict[tuple, int] = {}
        """The newest fill a subscription was sent (or its snapshot held): a new snapshot sends the ones after."""
        self.balances: dict[tuple, dict[str, tuple[int, int]]] = {}
        """A subscription's assets -> the (available, held) last sent."""
        self.keys_due = False
        self.reading: tuple | None = None
        """The subscription whose snapshot is being read."""
        self.again = False
        """It is owed another one once read."""
        self.wake = asyncio.Event()

    # Subscriptions

    def add(self, feed: Feed) -> None:
        """Take a new user subscription, owed its snapshot."""
        _, symbol, account_id = feed.key
        self.feeds.setdefault(account_id, {})[symbol] = feed
        self.owe(feed)

    def remove(self, feed: Feed) -> None:
        _, symbol, account_id = feed.key
        feeds = self.feeds.get(account_id, {})
        feeds.pop(symbol, None)
        if not feeds:
            self.feeds.pop(account_id, None)
        for owed in (self.held, self.since, self.last_fill, self.balances):
            owed.pop(feed.key, None)

    def owe(self, feed: Feed) -> None:
        """Owe ``feed`` a snapshot; hold its events until then."""
        if feed.key not in self.held:
            self.held[feed.key] = []
            self.owed.append(feed)
        elif feed.key == self.reading:
            self.again = True  # the snapshot being read may predate why it is owed: read another after it
        self.wake.set()

    def owe_all(self) -> None:
        """Owe every subscription a snapshot (the market view was rebuilt)."""
        for feeds in self.feeds.values():
            for feed in feeds.values():
                self.owe(feed)

    def get(self, symbol: str, account_id: int) -> Feed | None:
        return self.feeds.get(account_id, {}).get(symbol)

    # Events: a ``MarketData`` account listener

    def receive(self, batch: list[AccountEvents]) -> None:
        """Send committed account events to their subscriptions, or hold them until their snapshot."""
        sent = False
        for events in batch:
            feeds = self.feeds.get(events.account_id)
            if not feeds:
                continue
            for symbol, feed in feeds.items():
                key = feed.key
                held = self.held.get(key)
                if held is not None:
                    if len(held) >= MAX_HELD:
                        # A snapshot read from now on holds them all: the one being read is followed by another.
                        held.clear()
                        if key == self.reading:
                            self.again = True
                        continue
                    held.append(events)
                    continue
                sent = self.pass_on(feed, symbol, events) or sent
        if sent:
            self.hub.flush_soon()

    def pass_on(self, feed: Feed, symbol: str, events: AccountEvents) -> bool:
        """Queue ``events`` unless the subscription's snapshot holds them already (its deliveries and
        redemptions, in no snapshot, in any case); whether anything was."""
        key = feed.key
        snapshot = self.since.get(key)
        if snapshot is not None and events.placed:
            if snapshot.holds(events):
                return self.send_provider_events(feed, symbol, self.seq(symbol, events), events)
            del self.since[key]
        return self.send(feed, symbol, events)

    def seq(self, symbol: str, events: AccountEvents) -> int:
        """The seq that messages of ``events`` on ``symbol`` carry: the batch's, else the book's last."""
        seq = events.seqs.get(symbol)
        if seq is None:
            ladder = self.hub.ladders.get(symbol)
            seq = ladder.seq if ladder is not None else 0
        return seq

    def send(self, feed: Feed, symbol: str, events: AccountEvents) -> bool:
        """Queue what of ``events`` concerns ``symbol``'s subscription; whether anything was."""
        hub = self.hub
        seq = self.seq(symbol, events)
        queued = self.send_provider_events(feed, symbol, seq, events)
        for view in events.orders:
            if view.symbol == symbol:
                hub.queue(feed, encode(OrderUpdate("user", symbol, seq, order_from_view(view))))
                queued = True
        for fill in events.fills:
            if fill.symbol == symbol:
                hub.queue(feed, encode(FillUpdate("user", symbol, fill.seq, Fill(
                    fill.id, fill.order_id, symbol, fill.side, fill.role, from_micro(fill.price), fill.qty,
                    from_micro(fill.fee), fill.seq, fill.created_at))))
                self.last_fill[feed.key] = max(self.last_fill.get(feed.key, 0), fill.id)
                queued = True
        for balance in events.balances:
            if balance.asset in (CASH, symbol):
                queued = self.send_balance(feed, symbol, seq, balance.asset, (balance.available, balance.held)) \
                    or queued
        return queued

    def send_provider_events(self, feed: Feed, symbol: str, seq: int, events: AccountEvents) -> bool:
        """Queue the deliveries and redemptions of ``events`` on ``symbol``: a provider's, in no snapshot."""
        queued = False
        for r in events.redemptions:
            if r.symbol == symbol:
                self.hub.queue(feed, encode(RedemptionUpdate("user", symbol, seq, Redemption(
                    r.id, symbol, r.qty, r.created_at))))
                queued = True
        for d in events.deliveries:
            if d.symbol == symbol:
                self.hub.queue(feed, encode(DeliveryUpdate("user", symbol, seq, DeliveryEvent(
                    d.usage_id, d.reservation_id, symbol, d.prompt_tokens, d.completion_tokens, d.ttft_us / 1000,
                    d.latency_us / 1000, d.status, d.created_at, d.provider_id, d.delivered, d.obligation))))
                queued = True
        return queued

    def send_balance(self, feed: Feed, symbol: str, seq: int, asset: str, amounts: tuple[int, int],
                     force: bool = False) -> bool:
        sent = self.balances.setdefault(feed.key, {})
        if not force and sent.get(asset) == amounts:
            return False
        sent[asset] = amounts
        balance = Balance(asset, asset_amount(asset, amounts[0]), asset_amount(asset, amounts[1]))
        self.hub.queue(feed, encode(BalanceUpdate("user", symbol, seq, balance)))
        return True

    # Snapshots and keys: the channel's task

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            owed, self.owed = self.owed, []
            check, self.keys_due = self.keys_due, False
            assert self.hub.services is not None
            try:
                async with self.hub.services.connection() as conn:
                    if check:
                        await self.check_keys(conn)
                    while owed:
                        feed = owed[0]
                        self.reading, self.again = feed.key, False
                        await self.snapshot(conn, feed)
                        owed.pop(0)
                        self.reading = None
                        if self.again and self.get(feed.key[1], feed.key[2]) is feed:
                            self.owe(feed)
            except READ_ERRORS as exc:
                self.reading = None
                log.warning("user channel: database unavailable (%s); retrying", type(exc).__name__)
                self.owed[:0] = owed
                self.keys_due = self.keys_due or check
                await asyncio.sleep(1.0)
                self.wake.set()
            except Exception:
                self.reading = None
                log.exception("user channel round failed; retrying")
                self.owed[:0] = owed
                await asyncio.sleep(1.0)
                self.wake.set()
            self.hub.flush_soon()

    async def snapshot(self, conn, feed: Feed) -> None:
        """Send ``feed`` its balances and open orders (and the fills it missed, after the first), then what was
        held for it that the snapshot does not hold already."""
        key = feed.key
        _, symbol, account_id = key
        if self.get(symbol, account_id) is not feed:
            return  # unsubscribed meanwhile (and maybe subscribed again: that feed is owed its own snapshot)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = Snapshot(await conn.fetchval(LAST_ENTRY_ID),
                                {row[1]: row[2] for row in await conn.fetch(INSTRUMENT_SEQS)})
            balances = {row["asset"]: (row["available"], row["held"])
                        for row in await conn.fetch(USER_BALANCES, [account_id], [CASH, symbol])}
            orders = await conn.fetch(USER_OPEN_ORDERS, account_id, symbol)
            last_fill = await conn.fetchval(LAST_FILL_ID)
            sent_fill = self.last_fill.get(key)
            fills = [] if sent_fill is None or sent_fill >= last_fill else \
                await conn.fetch(USER_FILLS, sent_fill + 1, last_fill, symbol, [account_id])
        if self.get(symbol, account_id) is not feed:
            return  # unsubscribed while the snapshot was read
        held = self.held.pop(key, [])
        seq = snapshot.seqs.get(symbol, 0)
        for row in fills:
            for role, account, order_id, side, fee in (
                    ("maker", row["maker_account_id"], row["maker_order_id"],
                     "sell" if row["taker_side"] == "buy" else "buy", row["maker_fee"]),
                    ("taker", row["taker_account_id"], row["taker_order_id"], row["taker_side"], row["taker_fee"])):
                if account == account_id:
                    fill = Fill(row["id"], order_id, symbol, side, role, from_micro(row["price"]), row["qty"],
                                from_micro(fee), row["seq"], row["created_at"])
                    self.hub.queue(feed, encode(FillUpdate("user", symbol, row["seq"], fill)))
        self.last_fill[key] = max(last_fill, self.last_fill.get(key, 0))
        for asset in (CASH, symbol):
            self.send_balance(feed, symbol, seq, asset, balances.get(asset, (0, 0)), force=True)
        for row in orders:
            self.hub.queue(feed, encode(OrderUpdate("user", symbol, seq, order_from_row(row))))
        self.since[key] = snapshot
        for events in held:
            self.pass_on(feed, symbol, events)

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
