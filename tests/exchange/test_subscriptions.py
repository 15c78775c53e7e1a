"""Subscriptions in the engine, in memory: offers, payment with the fee, quotas granted per period and lapsing at
its end, cancelling at the period's end, and refusals that change nothing."""

from datetime import timedelta

from exchange import fees, subscriptions
from exchange.commands import (
    CancelSubscription,
    Command,
    Done,
    PublishSubscriptionOffer,
    RenewSubscription,
    Result,
    Subscribe,
    Withdraw,
    WithdrawSubscriptionOffer,
)
from exchange.ledger import CASH, FEES
from exchange.sequencer import EPOCH
from tests.support.engine import AT, COMPUTE, DATASET, DEPOSIT, Desk, Market

PRICE = 9_900_000
"""9.9 CNY a month."""
TOKENS = 10_000_000
FEE = fees.fee_on(PRICE, fees.rate_ppm(20, 100))
"""COMPUTE's taker rate, 20 bps: 19,800 micro-yuan."""


def at(desk: Desk, command: Command, later: timedelta) -> Result:
    """Apply ``command`` ``later`` after the desk's instant, and take what it would commit."""
    when = AT + later
    result = desk.engine.apply(command, (when - EPOCH) // timedelta(microseconds=1), when)
    desk.effects = desk.engine.take_effects()
    return result


def offer(desk: Desk, market: Market, period: str = "month") -> int:
    return desk.ok(PublishSubscriptionOffer(market.issuer, COMPUTE, TOKENS, period, PRICE)).id


def quota(desk: Desk, market: Market, subscription_id: int):
    instrument = desk.engine.instruments[COMPUTE]
    return desk.engine.quotas.rows[(market.bob, instrument.id, subscriptions.source(subscription_id))]


def test_only_an_approved_issuer_of_compute_offers_and_bad_offers_change_nothing(desk: Desk, market: Market) -> None:
    desk.assert_refused(PublishSubscriptionOffer(market.alice, COMPUTE, TOKENS, "month", PRICE), "not_permitted")
    desk.assert_refused(PublishSubscriptionOffer(market.rival, COMPUTE, TOKENS, "month", PRICE), "not_approved")
    desk.assert_refused(PublishSubscriptionOffer(market.issuer, DATASET, TOKENS, "month", PRICE), "not_compute")
    for tokens, period, price in ((0, "month", PRICE), (TOKENS, "year", PRICE), (TOKENS, "month", 0)):
        desk.assert_refused(PublishSubscriptionOffer(market.issuer, COMPUTE, tokens, period, price), "invalid_offer")
    assert offer(desk, market) == 1


def test_subscribing_pays_the_first_period_and_grants_its_quota_until_it_ends(desk: Desk, market: Market) -> None:
    offer_id = offer(desk, market)
    seller_cash = desk.engine.ledger.available(market.issuer, CASH)
    subscription_id = desk.ok(Subscribe(market.bob, offer_id)).id
    ledger = desk.engine.ledger
    assert ledger.available(market.bob, CASH) == DEPOSIT - PRICE
    assert ledger.available(market.issuer, CASH) == seller_cash + PRICE - FEE
    assert ledger.available(FEES, CASH) == FEE
    granted = quota(desk, market, subscription_id)
    assert (granted.granted, granted.expires_at) == (TOKENS, AT.replace(year=2027, month=1))  # a calendar month
    assert desk.effects.subscription_periods == [(subscription_id, 0, desk.effects.entries[0][0], PRICE, FEE, TOKENS,
                                                  None, AT)]
    desk.assert_refused(Subscribe(market.issuer, offer_id), "not_permitted")
    desk.assert_refused(Subscribe(market.bob, 99), "unknown_offer")
    desk.assert_refused(RenewSubscription(subscription_id, 1), "period_not_due")


def test_each_period_lapses_what_is_left_and_grants_anew_once(desk: Desk, market: Market) -> None:
    subscription_id = desk.ok(Subscribe(market.bob, offer(desk, market, "week"))).id
    assert at(desk, RenewSubscription(subscription_id, 1), timedelta(days=7)) == Done(1)
    row = quota(desk, market, subscription_id)
    assert (row.granted, row.lapsed, row.free, row.expires_at) == (2 * TOKENS, TOKENS, TOKENS, AT + timedelta(days=14))
    assert at(desk, RenewSubscription(subscription_id, 1), timedelta(days=7)).code == "period_not_due"
    assert desk.engine.ledger.available(market.bob, CASH) == DEPOSIT - 2 * PRICE


def test_a_period_the_buyer_cannot_pay_or_that_was_missed_grants_nothing(desk: Desk, market: Market) -> None:
    subscription_id = desk.ok(Subscribe(market.bob, offer(desk, market, "day"))).id
    desk.ok(Withdraw(market.bob, DEPOSIT - PRICE))
    assert at(desk, RenewSubscription(subscription_id, 1), timedelta(days=1)) == Done(1)
    assert desk.effects.subscription_periods[0][1:] == (1, None, 0, 0, 0, "insufficient_funds", AT + timedelta(days=1))
    assert quota(desk, market, subscription_id).free == 0
    assert at(desk, RenewSubscription(subscription_id, 2), timedelta(days=3, hours=1)) == Done(2)
    assert desk.effects.subscription_periods[0][6] == "missed"


def test_cancelling_ends_the_subscription_at_the_end_of_the_paid_period(desk: Desk, market: Market) -> None:
    subscription_id = desk.ok(Subscribe(market.bob, offer(desk, market, "day"))).id
    assert desk.ok(CancelSubscription(market.bob, subscription_id)) == Done(subscription_id)
    desk.assert_refused(CancelSubscription(market.alice, subscription_id), "unknown_subscription")
    assert quota(desk, market, subscription_id).free == TOKENS  # the paid period runs to its end
    assert at(desk, RenewSubscription(subscription_id, 1), timedelta(days=1)) == Done(1)
    assert desk.effects.subscription_periods[0][6] == "cancelled"
    assert desk.effects.subscriptions[subscription_id].status == "ended"
    assert (quota(desk, market, subscription_id).free, quota(desk, market, subscription_id).lapsed) == (0, TOKENS)
    assert desk.engine.ledger.available(market.bob, CASH) == DEPOSIT - PRICE
    assert subscription_id not in desk.engine.subscriptions.subscriptions


def test_a_withdrawn_offer_takes_no_subscriber_and_ends_its_subscriptions(desk: Desk, market: Market) -> None:
    offer_id = offer(desk, market, "day")
    subscription_id = desk.ok(Subscribe(market.bob, offer_id)).id
    desk.assert_refused(WithdrawSubscriptionOffer(market.alice, offer_id), "unknown_offer")
    desk.ok(WithdrawSubscriptionOffer(market.issuer, offer_id))
    desk.assert_refused(Subscribe(market.alice, offer_id), "offer_withdrawn")
    assert at(desk, RenewSubscription(subscription_id, 1), timedelta(days=1)) == Done(1)
    assert desk.effects.subscription_periods[0][6] == "offer_withdrawn"
