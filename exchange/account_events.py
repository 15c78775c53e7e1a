"""What one committed batch changed for each account: its orders, fills and balances, and the deliveries of its
providers, for the feed's user channel.

The engine knows them without reading anything back: a batch's ``Effects`` hold every order it touched, every
fill and every balance row it changed. ``account_events`` splits them by account, in integer units, after the
commit; the one-process server hands them to its feed, an engine publishes them to its gateways
(``exchange.broker.market_stream``).

Where a batch stands among the commits
--------------------------------------
A subscriber first gets a snapshot read from the database, then the events after it: an event whose batch the
snapshot already holds must be skipped, or the subscriber would go back in time. Each ``AccountEvents`` carries
two marks of its batch that the database holds too, so that ``Snapshot.holds`` can tell: the id of the batch's
last journal entry (``entry``, 0 when it posted none: ids grow in commit order, since one writer hands them out
and commits batch after batch), and the seq each instrument it touched reached (``seqs``). Every change an
account can see comes with one of them: a balance moves only by a journal entry, an order or a fill only by a
command on its instrument's book, which takes a seq. A batch is atomic, so one mark at or below the snapshot's
says the whole batch is in it.

Deliveries are not in any snapshot: a provider hears of each attempt of an inference call on it once, as its
settlement commits, and of each redemption of its instrument as it commits. They change nothing an account's
snapshot holds, so a batch of deliveries and redemptions alone carries no mark (``AccountEvents.placed`` is
false) and says nothing of where a snapshot stands.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from exchange.commands import OrderView
from exchange.ledger import SYSTEM_ACCOUNTS
from exchange.settlement import Effects, order_view


class AccountFill(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One side of a fill, as the account that traded sees it; ``price`` and ``fee`` in micro-yuan."""

    id: int
    order_id: int
    symbol: str
    side: str
    role: str
    price: int
    qty: int
    fee: int
    seq: int
    created_at: datetime


class AccountBalance(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An asset's balance after the batch: micro-yuan for CNY, lots for a token."""

    asset: str
    available: int
    held: int


class AccountDelivery(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One attempt of an inference call on one of the account's providers, and that provider's totals after it
    (tokens); times in microseconds."""

    usage_id: int
    reservation_id: int
    symbol: str
    provider_id: int
    prompt_tokens: int
    completion_tokens: int
    ttft_us: int
    latency_us: int
    status: str
    delivered: int
    obligation: int
    created_at: datetime


class AccountRedemption(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A redemption of lots of the instrument one of the account's providers serves: tokens buyers may now call
    for (buyers are not named)."""

    id: int
    provider_id: int
    symbol: str
    qty: int
    created_at: datetime


class AccountEvents(msgspec.Struct, frozen=True, array_like=True):
    """One account's share of one committed batch; ``entry`` and ``seqs`` place the batch (module docstring)."""

    account_id: int
    entry: int
    seqs: dict[str, int]
    orders: list[OrderView]
    fills: list[AccountFill]
    balances: list[AccountBalance]
    deliveries: list[AccountDelivery] = []
    redemptions: list[AccountRedemption] = []

    @property
    def placed(self) -> bool:
        """Whether the batch carries a mark a snapshot can hold: it changed an order, a fill or a balance."""
        return bool(self.orders or self.fills or self.balances)


class Snapshot(msgspec.Struct, frozen=True):
    """Where the commits stood when a subscriber's snapshot was read: the last journal entry and every seq."""

    entry: int
    seqs: dict[str, int]

    def holds(self, events: AccountEvents) -> bool:
        """Whether the snapshot already holds the batch of ``events``."""
        if events.entry:
            return events.entry <= self.entry
        seqs = self.seqs
        return any(seq <= seqs.get(symbol, 0) for symbol, seq in events.seqs.items())


def account_events(effects: Effects) -> list[AccountEvents]:
    """Split a committed batch's effects by account (system accounts have no subscribers); empty if it changed
    nothing an account sees."""
    if not (effects.balances or effects.new_orders or effects.changed_orders or effects.fills
            or effects.settlements or effects.served_redemptions):
        return []
    instruments = effects.instruments
    entry = effects.entries[-1][0] if effects.entries else 0
    touched: dict[int, tuple[dict[str, int], list, list, list, list, list]] = {}

    def share(account_id: int) -> tuple[dict[str, int], list, list, list, list, list]:
        found = touched.get(account_id)
        if found is None:
            found = touched[account_id] = ({}, [], [], [], [], [])
        return found

    for order in (*effects.new_orders.values(), *effects.changed_orders.values()):
        instrument = instruments[order.instrument_id]
        seqs, orders, _, _, _, _ = share(order.account_id)
        seqs[instrument.symbol] = instrument.seq
        orders.append(order_view(order, instrument.symbol))
    for (fill_id, instrument_id, seq, price, qty, maker_order, taker_order, maker_account, taker_account, taker_side,
         maker_fee, taker_fee, at) in effects.fills:
        symbol = instruments[instrument_id].symbol
        maker_side = "sell" if taker_side == "buy" else "buy"
        for account_id, order_id, side, role, fee in ((maker_account, maker_order, maker_side, "maker", maker_fee),
                                                      (taker_account, taker_order, taker_side, "taker", taker_fee)):
            seqs, _, fills, _, _, _ = share(account_id)
            seqs[symbol] = instruments[instrument_id].seq
            fills.append(AccountFill(fill_id, order_id, symbol, side, role, price, qty, fee, seq, at))
    for account_id, asset, available, held, is_system in effects.balances:
        if not is_system and account_id not in SYSTEM_ACCOUNTS:
            share(account_id)[3].append(AccountBalance(asset, available, held))
    for view in effects.settlements:
        for a in view.attempts:
            share(a.provider_account_id)[4].append(AccountDelivery(
                a.usage_id, view.reservation_id, view.symbol, a.provider_id, a.prompt_tokens, a.completion_tokens,
                a.ttft_us, a.latency_us, a.status, a.delivered, a.obligation, view.created_at))
    for account_id, provider_id, redemption_id, symbol, qty, at in effects.served_redemptions:
        share(account_id)[5].append(AccountRedemption(redemption_id, provider_id, symbol, qty, at))
    for _, orders, _, balances, _, _ in touched.values():
        orders.sort(key=lambda view: view.id)
        balances.sort(key=lambda balance: balance.asset)
    return [AccountEvents(account_id, entry, seqs, orders, fills, balances, deliveries, redemptions)
            for account_id, (seqs, orders, fills, balances, deliveries, redemptions) in sorted(touched.items())]
