"""Settlement: the one owner of the ledger, the open orders, the effects to commit and a routed order's pool.

Every order, however it arrives, goes through here: ``open`` records it (and its hold) once the book has
accepted it, ``settle`` applies the book's events (trades move cash, tokens and fees; closures release what an
order still holds), and ``close`` ends an order. Plain orders (``exchange.orders``), routed orders
(``exchange.routed_orders``) and packages (``exchange.packages``) call it; it calls none of them.

Dependency order
----------------
``engine`` → ``orders``, ``packages`` → ``routed_orders`` → ``settlement`` → ``ledger``, ``fees``, ``records``,
``matching``.
Each module calls only those to its right. Lower modules are handed the engine to read its public state
(instruments, accounts, packages) and import its type only for checking; they never call back up into it.

Pool
----
A routed order holds once for all its children (``open_pool``). While the pool is open, a child opened with
``pooled=True`` gives its share of the hold back to the pool when it closes instead of releasing it to the
account; ``close_pool`` then posts one release for whatever the children left.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from msgspec.structs import astuple

from exchange import fees
from exchange.ledger import AVAILABLE, CASH, FEES, HELD, Ledger
from exchange.records import Approval, Instrument, Order, OrderFill, OrderView, Package, RoutedOrder
from matching import events as ev
from matching.types import BUY, BY_REQUEST, SELF_TRADE, SELL

if TYPE_CHECKING:
    from exchange.commands import SettlementView
    from exchange.datasets import Grant, Terms
    from exchange.delivery import Provider
    from exchange.quotas import Quota, Reservation
    from exchange.subscriptions import Offer, Subscription


@dataclass
class Effects:
    """Rows to commit, besides the ledger's: everything changed since the last ``take_effects``."""

    accounts: list[tuple] = field(default_factory=list)
    new_instruments: list[Instrument] = field(default_factory=list)
    instruments: dict[int, Instrument] = field(default_factory=dict)
    """Instruments whose sequence number changed (new ones included)."""
    statuses: dict[int, Instrument] = field(default_factory=dict)
    """Instruments halted or resumed."""
    approvals: dict[tuple[int, int], Approval] = field(default_factory=dict)
    new_orders: dict[int, Order] = field(default_factory=dict)
    changed_orders: dict[int, Order] = field(default_factory=dict)
    fills: list[tuple] = field(default_factory=list)
    redemptions: list[tuple] = field(default_factory=list)
    entries: list[tuple] = field(default_factory=list)
    postings: list[tuple] = field(default_factory=list)
    balances: list[tuple] = field(default_factory=list)
    events: list[tuple[str, list]] = field(default_factory=list)
    """(symbol, book events) per order command, for market data after the commit."""
    routed_orders: list[RoutedOrder] = field(default_factory=list)
    packages: dict[int, Package] = field(default_factory=dict)
    executions: list[tuple] = field(default_factory=list)
    """(package id, period, routed order id, reason, created_at) per package period run."""
    requests: list[tuple[bytes, datetime, bytes]] = field(default_factory=list)
    """(digest, created_at, encoded result) of the signed requests applied (``exchange.replay``), committed with
    their effects."""
    forget_requests_before: datetime | None = None
    """Delete the rows of signed requests older than this: they can no longer be replayed."""
    client_requests: list[tuple] = field(default_factory=list)
    """(account id, kind, client request id, result id, created_at) per command that named itself."""
    terms: "list[Terms]" = field(default_factory=list)
    """Dataset terms published."""
    grants: "dict[int, Grant]" = field(default_factory=dict)
    """Dataset access grants made or spent from."""
    downloads: list[tuple] = field(default_factory=list)
    """(id, grant id, file id, bytes, created_at) per dataset download counted."""
    offers: "dict[int, Offer]" = field(default_factory=dict)
    subscriptions: "dict[int, Subscription]" = field(default_factory=dict)
    subscription_periods: list[tuple] = field(default_factory=list)
    """(subscription id, period, journal entry id, price, fee, tokens, reason, created_at) per period run."""
    providers: "dict[int, Provider]" = field(default_factory=dict)
    """Providers registered or changed."""
    deliveries: "dict[int, Provider]" = field(default_factory=dict)
    """Providers whose delivered tokens changed."""
    quotas: "dict[tuple[int, int, str], Quota]" = field(default_factory=dict)
    reservations: "dict[int, Reservation]" = field(default_factory=dict)
    usages: list[tuple] = field(default_factory=list)
    """The rows of ``usage``: one per attempt of an inference call on a provider (``exchange.delivery``)."""
    settlements: "list[SettlementView]" = field(default_factory=list)
    """The calls settled, as their callers were answered: what the providers' accounts hear of
    (``exchange.account_events``)."""
    served_redemptions: list[tuple] = field(default_factory=list)
    """(provider account id, provider id, redemption id, symbol, qty, created_at) per provider of an instrument
    whose lots were redeemed: the tokens it may now be asked to deliver (``exchange.account_events``)."""


@dataclass
class Ids:
    """The next id of each kind; the single writer hands them out, recovery resumes them."""

    account: int = 100
    instrument: int = 1
    order: int = 1
    fill: int = 1
    entry: int = 1
    redemption: int = 1
    package: int = 1
    download: int = 1
    offer: int = 1
    subscription: int = 1
    provider: int = 1
    reservation: int = 1
    usage: int = 1


@dataclass
class Pool:
    """The routed order's one hold while its children execute: what they give back when they close."""

    children: set[int] = field(default_factory=set)
    returned: dict[str, int] = field(default_factory=dict)

    def take_back(self, asset: str, amount: int) -> None:
        self.returned[asset] = self.returned.get(asset, 0) + amount


def order_view(order: Order, symbol: str, fills: list[OrderFill] | None = None) -> OrderView:
    """``order`` as it stands, with the fills of the command that answers."""
    # Positional, as in ``Settlement.open``: this runs once per order.
    return OrderView(*astuple(order), symbol, fills or [])


class Settlement:
    """Orders from their hold to their close, the ledger entries that move with them, and the rows to commit."""

    def __init__(self, ids: Ids) -> None:
        self.ids = ids
        self.ledger = Ledger(ids.entry)
        self.volume = fees.VolumeTracker()
        self.orders: dict[int, Order] = {}
        """Open orders, plus those touched since the last ``take_effects``."""
        self.open_by_account: dict[int, set[int]] = {}
        self.effects = Effects()
        self.pool: Pool | None = None
        """The hold of the routed order being executed, which its pooled children give back to."""

    def take_effects(self) -> Effects:
        """Everything to commit since the last call; closed orders are forgotten from memory."""
        effects = self.effects
        effects.entries, effects.postings, effects.balances = self.ledger.take_rows()
        self.ids.entry = self.ledger.next_entry_id
        for order in (*effects.new_orders.values(), *effects.changed_orders.values()):
            if order.status != "open":
                self.orders.pop(order.id, None)
        self.effects = Effects()
        return effects

    def restore(self, order: Order) -> None:
        """Take back an open order as committed (recovery)."""
        self.orders[order.id] = order
        self.open_by_account.setdefault(order.account_id, set()).add(order.id)

    def take_order_id(self) -> int:
        """A fresh id from the order numbering, for an order that no book sees (a routed order)."""
        order_id = self.ids.order
        self.ids.order += 1
        return order_id

    # Orders

    def open(self, instrument: Instrument, seq: int, events: list[ev.Event], ts: int, at: datetime, *,
             account_id: int, client_order_id: str | None, side: str, type: str, tif: str, post_only: bool,
             stp: str, price: int | None, qty: int | None, budget: int | None, maker_fee_ppm: int,
             taker_fee_ppm: int, held: int, hold_asset: str | None, pooled: bool = False) -> OrderView:
        """Record the order the book just accepted under id ``ids.order`` (its ``events``), post its hold of
        ``held`` ``hold_asset`` (None: a routed order's hold already covers it), settle the events and answer
        the order as it then stands. ``pooled`` gives the hold back to the open pool when the order closes."""
        book = instrument.book
        assert book is not None
        effects = self.effects
        instrument.seq = seq
        effects.instruments[instrument.id] = instrument
        order_id = self.ids.order
        self.ids.order = order_id + 1
        # Positional, in the order of Order's fields: msgspec builds this 26-field Struct from keywords about ten
        # times slower, and this runs once per order. The keyword-only parameters above name every field.
        order = Order(order_id, instrument.id, account_id, client_order_id, side, type, tif, post_only, stp,
                      price, qty, budget, qty or 0, 0, 0, 0, 0, 0, maker_fee_ppm, taker_fee_ppm, held, "open", None,
                      seq, at, at)
        self.orders[order_id] = order
        effects.new_orders[order_id] = order
        self.open_by_account.setdefault(account_id, set()).add(order_id)
        if pooled:
            assert self.pool is not None
            self.pool.children.add(order_id)
        if hold_asset is not None:
            self.ledger.hold(account_id, hold_asset, held, at, order_id)
        fills = self.settle(instrument, events, ts, at)
        if order_id not in book and order.status == "open":
            self.close(order, instrument, "filled" if order.open_qty == 0 else "expired", None, at)
        effects.events.append((instrument.symbol, events))
        return order_view(order, instrument.symbol, fills.get(order_id))

    def settle(self, instrument: Instrument, events: list[ev.Event], ts: int, at: datetime
               ) -> dict[int, list[OrderFill]]:
        """Apply the book's trades and closures to orders and the ledger; return each order's new fills."""
        fills: dict[int, list[OrderFill]] = {}
        orders = self.orders
        for event in events:
            kind = type(event)
            if kind is ev.Trade:
                maker, taker = orders[event.maker_order_id], orders[event.taker_order_id]
                fill_id, maker_fee, taker_fee = self._trade(instrument, event, maker, taker, ts, at)
                fills.setdefault(maker.id, []).append(OrderFill(fill_id, event.price, event.qty, maker_fee, "maker"))
                fills.setdefault(taker.id, []).append(OrderFill(fill_id, event.price, event.qty, taker_fee, "taker"))
                if event.maker_remaining == 0:
                    self.close(maker, instrument, "filled", None, at)
            elif kind is ev.Cancelled:
                order = orders[event.order_id]
                if event.reason in (BY_REQUEST, SELF_TRADE):
                    self.close(order, instrument, "cancelled", event.reason, at)
                elif order.budget is not None and order.filled_qty:
                    self.close(order, instrument, "filled", None, at)  # spent all the budget could buy
                else:
                    self.close(order, instrument, "expired", event.reason, at)
            elif kind is ev.Decremented:
                order = orders[event.order_id]
                order.open_qty = event.remaining
                if order.side == SELL:
                    self.ledger.release(order.account_id, instrument.symbol, event.qty, at, order.id)
                    order.held -= event.qty
                self.touch(order, at)
        return fills

    def _trade(self, instrument: Instrument, trade: ev.Trade, maker: Order, taker: Order, ts: int, at: datetime
               ) -> tuple[int, int, int]:
        notional = trade.price * trade.qty
        maker_fee = fees.fee_increment(maker.maker_notional, maker.maker_notional + notional, maker.maker_fee_ppm)
        taker_fee = fees.fee_increment(taker.taker_notional, taker.taker_notional + notional, taker.taker_fee_ppm)
        maker.maker_notional += notional
        taker.taker_notional += notional
        for order, fee in ((maker, maker_fee), (taker, taker_fee)):
            order.filled_qty += trade.qty
            order.filled_notional += notional
            order.fee += fee
            if order.qty is not None:
                order.open_qty -= trade.qty
            self.touch(order, at)
            self.volume.add(order.account_id, ts, notional)
        buyer, seller = (taker, maker) if taker.side == BUY else (maker, taker)
        buyer_fee, seller_fee = (taker_fee, maker_fee) if taker.side == BUY else (maker_fee, taker_fee)
        buyer.held -= notional + buyer_fee
        seller.held -= trade.qty
        fill_id = self.ids.fill
        self.ids.fill += 1
        symbol = instrument.symbol
        self.ledger.post("trade", at, [
            (buyer.account_id, CASH, HELD, -(notional + buyer_fee)),
            (buyer.account_id, symbol, AVAILABLE, trade.qty),
            (seller.account_id, symbol, HELD, -trade.qty),
            (seller.account_id, CASH, AVAILABLE, notional - seller_fee),
            (FEES, CASH, AVAILABLE, buyer_fee + seller_fee),
        ], fill_id=fill_id)
        self.effects.fills.append((fill_id, instrument.id, trade.seq, trade.price, trade.qty, maker.id, taker.id,
                                   maker.account_id, taker.account_id, taker.side, maker_fee, taker_fee, at))
        return fill_id, maker_fee, taker_fee

    def close(self, order: Order, instrument: Instrument, status: str, reason: str | None, at: datetime) -> None:
        """Mark ``order`` closed and release what it still holds."""
        order.status = status
        order.reason = reason
        order.open_qty = 0
        asset = instrument.symbol if order.side == SELL else CASH
        if self.pool is not None and order.id in self.pool.children:
            self.pool.take_back(asset, order.held)  # the routed order releases its one hold once, at its end
        else:
            self.ledger.release(order.account_id, asset, order.held, at, order.id)
        order.held = 0
        self.touch(order, at)
        open_orders = self.open_by_account.get(order.account_id)
        if open_orders is not None:
            open_orders.discard(order.id)

    def touch(self, order: Order, at: datetime) -> None:
        """Record that ``order`` changed, to commit it."""
        order.updated_at = at
        if order.id not in self.effects.new_orders:
            self.effects.changed_orders[order.id] = order

    # Routed orders

    def open_pool(self, account_id: int, order_id: int, hold: dict[str, int], at: datetime) -> Pool:
        """Post a routed order's one hold entry, of every asset in ``hold``, and collect its children's returns."""
        if hold:
            self.ledger.post("hold", at, [leg for asset, amount in hold.items()
                                          for leg in ((account_id, asset, AVAILABLE, -amount),
                                                      (account_id, asset, HELD, amount))], order_id)
        pool = self.pool = Pool()
        return pool

    def close_pool(self, account_id: int, order_id: int, at: datetime) -> None:
        """Post one release entry for what the routed order's children gave back; the pool ends."""
        assert self.pool is not None
        left = {asset: amount for asset, amount in self.pool.returned.items() if amount}
        self.pool = None
        if left:
            self.ledger.post("release", at, [leg for asset, amount in left.items()
                                             for leg in ((account_id, asset, HELD, -amount),
                                                         (account_id, asset, AVAILABLE, amount))], order_id)
