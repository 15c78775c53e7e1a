"""Subscriptions: a seller's offer of tokens every period at a fixed price, and the buyers who subscribe to it.

Not to be confused with packages (``exchange.packages``), the buyer's own standing plans that place a routed order
on the books every period. A subscription buys no lots: the seller publishes a **subscription offer** ("10 million
tokens a month for 9.9 CNY": ``tokens_per_period`` tokens of one compute instrument every ``period``, ``day``,
``week`` or ``month``, for ``price`` micro-yuan), and each period of a **subscription** moves the price from the
buyer to the seller and grants the buyer a quota of the tokens (``exchange.quotas``, source
``subscription:<id>``) that lasts until the period ends, consumed through the inference gateway like any quota.

Money
-----
The buyer pays the offer's price exactly; the exchange's fee comes out of what the seller receives: the
instrument's taker rate on the price, rounded up (``fees.fee_on``), in one journal entry of kind
``subscription``: buyer -price, seller +(price - fee), ``system:fees`` +fee.

Periods
-------
Period ``n`` runs from ``period_start(start_at, period, n)`` to the start of period ``n + 1``, as for packages
(calendar months, the month's last day when shorter); a subscription starts when it is made, and period 0 is paid
and granted by ``Subscribe`` itself. ``RenewSubscription`` runs exactly ``next_period``, once it has started; its
row in ``subscription_period`` (unique by subscription and period) commits with its payment and grant, so a period
runs once whatever crashes in between, and a period missed while the server was down runs when it comes back.
Every renewal first lapses what is left of quotas whose period has ended (``Quotas.lapse``): unused tokens never
carry over. A renewal charges nothing, and records why, when:

- ``insufficient_funds``: the buyer's available cash does not cover the price (the next period tries again);
- ``missed``: the period had already ended when it ran (the server was down all through it);
- ``cancelled`` or ``offer_withdrawn``: the subscription ends here, at the end of the period its buyer paid for.

Statuses: ``active``; ``cancelling`` once cancelled, until the period under way ends; ``ended``.
"""

from datetime import datetime
from typing import TYPE_CHECKING

from exchange import fees
from exchange.checks import approved_compute_issuer, positive_int, trading_account
from exchange.commands import (
    CancelSubscription,
    Done,
    PublishSubscriptionOffer,
    Rejection,
    RenewSubscription,
    Subscribe,
    WithdrawSubscriptionOffer,
)
from exchange.ledger import AVAILABLE, CASH, FEES
from exchange.packages import PERIODS, period_start
from exchange.records import Row

if TYPE_CHECKING:
    from exchange.engine import Engine

MAX_TOKENS_PER_PERIOD = 10**15
MAX_PRICE = 10**15
"""Micro-yuan a period: one billion CNY."""
SOURCE_PREFIX = "subscription:"


class Offer(Row):
    """A row of ``subscription_offer``."""

    id: int
    account_id: int
    instrument_id: int
    tokens_per_period: int
    period: str
    price: int
    status: str
    """``active`` or ``withdrawn``."""
    created_at: datetime
    updated_at: datetime


class Subscription(Row):
    """A row of ``subscription``."""

    id: int
    account_id: int
    offer_id: int
    start_at: datetime
    status: str
    next_period: int
    """The number of the next period to run: every period before it has its row."""
    created_at: datetime
    updated_at: datetime


class Subscriptions:
    """Every offer, and every subscription that has not ended."""

    def __init__(self) -> None:
        self.offers: dict[int, Offer] = {}
        self.subscriptions: dict[int, Subscription] = {}


def source(subscription_id: int) -> str:
    """The quota source of a subscription's tokens."""
    return f"{SOURCE_PREFIX}{subscription_id}"


def publish(engine: "Engine", cmd: PublishSubscriptionOffer, at: datetime) -> Done | str:
    """Publish an offer of tokens of a compute instrument the seller is approved to issue."""
    found = approved_compute_issuer(engine.accounts, engine.instruments, engine.approvals, cmd.account_id, cmd.symbol)
    if isinstance(found, str):
        return found
    account, instrument = found
    if not (positive_int(cmd.tokens_per_period) and cmd.tokens_per_period <= MAX_TOKENS_PER_PERIOD
            and positive_int(cmd.price) and cmd.price <= MAX_PRICE and cmd.period in PERIODS):
        return "invalid_offer"
    offer = Offer(engine.ids.offer, account.id, instrument.id, cmd.tokens_per_period, cmd.period, cmd.price,
                  "active", at, at)
    engine.ids.offer += 1
    engine.subscriptions.offers[offer.id] = offer
    engine.effects.offers[offer.id] = offer
    return Done(offer.id)


def withdraw(engine: "Engine", cmd: WithdrawSubscriptionOffer, at: datetime) -> Done | str:
    """Take no new subscribers; those subscribed end at the end of the period they paid for."""
    done = _leave_active(engine.subscriptions.offers, cmd.offer_id, cmd.account_id, "withdrawn",
                         engine.effects.offers, at)
    return "unknown_offer" if done is None else done


def subscribe(engine: "Engine", cmd: Subscribe, at: datetime) -> Done | str:
    """Subscribe a trading account to an active offer, paying and granting its first period now."""
    account = trading_account(engine.accounts, cmd.account_id)
    if isinstance(account, Rejection):
        return account.code
    offer = engine.subscriptions.offers.get(cmd.offer_id)
    if offer is None:
        return "unknown_offer"
    if offer.status != "active":
        return "offer_withdrawn"
    if offer.account_id == account.id:
        return "not_permitted"
    if engine.ledger.available(account.id, CASH) < offer.price:
        return "insufficient_funds"
    subscription = Subscription(engine.ids.subscription, account.id, offer.id, at, "active", 0, at, at)
    engine.ids.subscription += 1
    engine.subscriptions.subscriptions[subscription.id] = subscription
    _pay(engine, subscription, offer, at)
    return Done(subscription.id)


def cancel(engine: "Engine", cmd: CancelSubscription, at: datetime) -> Done | str:
    """Stop renewing: the subscription ends when the period under way does (cancelling again changes nothing)."""
    done = _leave_active(engine.subscriptions.subscriptions, cmd.subscription_id, cmd.account_id, "cancelling",
                         engine.effects.subscriptions, at)
    return "unknown_subscription" if done is None else done


def _leave_active(records: dict, record_id: int, account_id: int, status: str, changed: dict, at: datetime
                  ) -> Done | None:
    """Move the account's offer or subscription ``record_id`` to ``status`` if it is active (else change nothing),
    to commit with ``changed``; None when the account has no such record."""
    record = records.get(record_id)
    if record is None or record.account_id != account_id:
        return None
    if record.status == "active":
        record.status = status
        record.updated_at = at
        changed[record.id] = record
    return Done(record.id)


def renew(engine: "Engine", cmd: RenewSubscription, at: datetime) -> Done | str:
    """Run the subscription's next period, once it has started; the answer names the period."""
    subscription = engine.subscriptions.subscriptions.get(cmd.subscription_id)
    if subscription is None:
        return "unknown_subscription"
    offer = engine.subscriptions.offers[subscription.offer_id]
    if cmd.period != subscription.next_period or period_start(subscription.start_at, offer.period,
                                                              cmd.period) > at:
        return "period_not_due"
    engine.quotas.lapse(at)
    if subscription.status == "cancelling" or offer.status != "active":
        _skip(engine, subscription, "cancelled" if subscription.status == "cancelling" else "offer_withdrawn", at)
        subscription.status = "ended"
        del engine.subscriptions.subscriptions[subscription.id]
    elif period_start(subscription.start_at, offer.period, cmd.period + 1) <= at:
        _skip(engine, subscription, "missed", at)
    elif engine.ledger.available(subscription.account_id, CASH) < offer.price:
        _skip(engine, subscription, "insufficient_funds", at)
    else:
        _pay(engine, subscription, offer, at)
    return Done(cmd.period)


def due(engine: "Engine", at: datetime) -> list[tuple[int, int]]:
    """(period, subscription id) of every subscription whose next period has started by ``at``."""
    offers = engine.subscriptions.offers
    return sorted((s.next_period, s.id) for s in engine.subscriptions.subscriptions.values()
                  if period_start(s.start_at, offers[s.offer_id].period, s.next_period) <= at)


def _pay(engine: "Engine", subscription: Subscription, offer: Offer, at: datetime) -> None:
    """Move the price from buyer to seller, less the exchange's fee, and grant the period's tokens until it ends."""
    instrument = engine.instruments_by_id[offer.instrument_id]
    fee = fees.fee_on(offer.price, fees.rate_ppm(instrument.taker_fee_bps, 100))
    entry_id = engine.ledger.post("subscription", at, [(subscription.account_id, CASH, AVAILABLE, -offer.price),
                                                       (offer.account_id, CASH, AVAILABLE, offer.price - fee),
                                                       (FEES, CASH, AVAILABLE, fee)])
    period = subscription.next_period
    ends_at = period_start(subscription.start_at, offer.period, period + 1)
    engine.quotas.grant(subscription.account_id, instrument.id, source(subscription.id), offer.tokens_per_period, at,
                        expires_at=ends_at)
    engine.effects.subscription_periods.append((subscription.id, period, entry_id, offer.price, fee,
                                                offer.tokens_per_period, None, at))
    _advance(engine, subscription, at)


def _skip(engine: "Engine", subscription: Subscription, reason: str, at: datetime) -> None:
    engine.effects.subscription_periods.append((subscription.id, subscription.next_period, None, 0, 0, 0, reason, at))
    _advance(engine, subscription, at)


def _advance(engine: "Engine", subscription: Subscription, at: datetime) -> None:
    subscription.next_period += 1
    subscription.updated_at = at
    engine.effects.subscriptions[subscription.id] = subscription
