"""Subscriptions: a seller's offer of tokens every period at a fixed price, and the buyers' subscriptions to it.

Not packages (``api.routes.packages``: a buyer's standing plan of routed orders). An issuer approved for a compute
instrument publishes an offer ("10,000,000 tokens a month for 9.9 CNY"); anyone lists the active ones. A trader
subscribes: the first period is paid at once, and each following one when it starts (``exchange.subscriptions``):
the price moves to the seller less the exchange's fee (the instrument's taker rate, rounded up), and the period's
tokens become a quota on the instrument (source ``subscription:<id>``, ``GET /v1/quotas``) that the inference
gateway draws on and that lapses, whatever is left of it, when the period ends. Cancelling takes effect at the
end of the period under way.
"""

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints, money
from api.problems import Problem
from api.units import from_micro
from exchange import subscriptions as rules
from exchange.commands import (
    CancelSubscription,
    Done,
    PublishSubscriptionOffer,
    Subscribe,
    WithdrawSubscriptionOffer,
)
from exchange.database.queries import sql
from exchange.packages import period_start

subscriptions = Endpoints("subscriptions")

OFFER_ID = {"offer_id": (schemas.Id, "unknown_offer")}
SUBSCRIPTION_ID = {"subscription_id": (schemas.Id, "unknown_subscription")}

OFFER = sql("subscription_offer_by_id")
OFFERS = sql("active_subscription_offers")
OWN = sql("subscriptions_of_account")
PERIODS = sql("subscription_periods")


class NewOffer(schemas.Request):
    symbol: schemas.Symbol
    tokens_per_period: Annotated[int, Meta(ge=1, le=rules.MAX_TOKENS_PER_PERIOD)]
    period: schemas.Period
    price: Annotated[schemas.Decimal, Meta(description="CNY a period, paid by the subscriber; the exchange's fee "
                                                       "comes out of the seller's share.")]


class OfferQuery(schemas.Request):
    symbol: schemas.Symbol | None = None


class NewSubscription(schemas.Request):
    offer_id: schemas.Id
    client_request_id: schemas.ClientRequestId | None = None
    """Unique per account among subscriptions: sending it again returns the subscription it made the first time."""


class Offer(Struct):
    id: int
    seller_id: int
    symbol: str
    tokens_per_period: int
    period: schemas.Period
    price: str
    status: Literal["active", "withdrawn"]
    created_at: datetime
    updated_at: datetime


class OfferList(Struct):
    items: list[Offer]


class SubscriptionQuota(Struct):
    """The subscription's quota as it stands: tokens granted over all periods, reserved by calls under way, used,
    and lapsed at the end of their period."""

    granted: int
    reserved: int
    used: int
    lapsed: int
    expires_at: datetime | None


class Subscription(Struct):
    id: int
    offer_id: int
    symbol: str
    tokens_per_period: int
    period: schemas.Period
    price: str
    status: Annotated[Literal["active", "cancelling", "ended"], Meta(
        description="cancelling: cancelled, running to the end of the period paid for.")]
    start_at: datetime
    next_period: int
    renews_at: Annotated[datetime | None, Meta(description="When the next period starts (and is paid), or, when "
                                                           "cancelling, when the subscription ends; null once ended.")]
    quota: SubscriptionQuota | None
    created_at: datetime
    updated_at: datetime


class SubscriptionList(Struct):
    items: list[Subscription]


class SubscriptionPeriod(Struct):
    period: int
    starts_at: datetime
    entry_id: Annotated[int | None, Meta(description="The payment's journal entry; null when not paid.")]
    price: str
    fee: str
    tokens: int
    reason: Annotated[Literal["insufficient_funds", "missed", "cancelled", "offer_withdrawn"] | None, Meta(
        description="Why the period was not paid; null when it was.")]
    created_at: datetime


class PeriodPage(Struct):
    items: list[SubscriptionPeriod]
    next_cursor: str | None


def offer_from(row) -> Offer:
    values = dict(row)
    values["price"] = from_micro(values["price"])
    return Offer(**values)


def subscription_from(row) -> Subscription:
    quota = None if row["granted"] is None else SubscriptionQuota(row["granted"], row["reserved"], row["used"],
                                                                  row["lapsed"], row["expires_at"])
    renews_at = None if row["status"] == "ended" else period_start(row["start_at"], row["period"], row["next_period"])
    return Subscription(row["id"], row["offer_id"], row["symbol"], row["tokens_per_period"], row["period"],
                        from_micro(row["price"]), row["status"], row["start_at"], row["next_period"], renews_at, quota,
                        row["created_at"], row["updated_at"])


async def read_offer(call: Call, offer_id: int) -> Offer:
    async with call.services.connection() as conn:
        row = await conn.fetchrow(OFFER, offer_id)
    if row is None:
        raise Problem("unknown_offer")
    return offer_from(row)


async def read_subscription(call: Call, subscription_id: int) -> Subscription:
    async with call.services.connection() as conn:
        rows = await conn.fetch(OWN, call.account_id, subscription_id)
    if not rows:
        raise Problem("unknown_subscription")
    return subscription_from(rows[0])


@subscriptions.route("POST", "/v1/subscription-offers", summary="Publish a subscription offer", scope="issue",
                     body=NewOffer, response=Offer, status=201,
                     errors=("unknown_instrument", "not_permitted", "not_compute", "not_approved", "invalid_offer",
                             "invalid_decimal", "too_precise", "out_of_range"))
async def publish_offer(call: Call) -> Offer:
    """Offer ``tokens_per_period`` tokens of a compute instrument this issuer is approved for, every period, at
    ``price`` CNY a period."""
    body: NewOffer = call.body
    done = await call.submit(PublishSubscriptionOffer(call.account_id, body.symbol, body.tokens_per_period,
                                                      body.period, money(body.price, "price", rules.MAX_PRICE)))
    assert isinstance(done, Done) and done.id is not None
    return await read_offer(call, done.id)


@subscriptions.route("GET", "/v1/subscription-offers", summary="List subscription offers", query=OfferQuery,
                     response=OfferList)
async def list_offers(call: Call) -> OfferList:
    """The active offers, oldest first, or those of one instrument."""
    async with call.services.connection() as conn:
        rows = await conn.fetch(OFFERS, call.query.symbol)
    return OfferList([offer_from(row) for row in rows])


@subscriptions.route("GET", "/v1/subscription-offers/{offer_id}", summary="One subscription offer", response=Offer,
                     params=OFFER_ID, errors=("unknown_offer",))
async def get_offer(call: Call) -> Offer:
    """One offer, active or withdrawn."""
    return await read_offer(call, call.params["offer_id"])


@subscriptions.route("POST", "/v1/subscription-offers/{offer_id}/withdraw", summary="Withdraw a subscription offer",
                     scope="issue", response=Offer, params=OFFER_ID, errors=("unknown_offer",))
async def withdraw_offer(call: Call) -> Offer:
    """Take no new subscribers; each subscription to the offer ends at the end of the period it paid for."""
    await call.submit(WithdrawSubscriptionOffer(call.account_id, call.params["offer_id"]))
    return await read_offer(call, call.params["offer_id"])


@subscriptions.route("POST", "/v1/subscriptions", summary="Subscribe", scope="trade", body=NewSubscription,
                     response=Subscription, status=201,
                     errors=("unknown_offer", "offer_withdrawn", "not_permitted", "insufficient_funds"))
async def subscribe(call: Call) -> Subscription:
    """Subscribe to an offer: its first period is paid and its tokens granted now, and the next period renews when
    it starts. Sending a ``client_request_id`` again returns the subscription it made and changes nothing."""
    body: NewSubscription = call.body
    done = await call.submit(Subscribe(call.account_id, body.offer_id, body.client_request_id))
    assert isinstance(done, Done) and done.id is not None
    return await read_subscription(call, done.id)


@subscriptions.route("GET", "/v1/subscriptions", summary="Own subscriptions", scope="read",
                     response=SubscriptionList)
async def list_subscriptions(call: Call) -> SubscriptionList:
    """This account's subscriptions, newest first, ended ones included."""
    async with call.services.connection() as conn:
        rows = await conn.fetch(OWN, call.account_id, None)
    return SubscriptionList([subscription_from(row) for row in rows])


@subscriptions.route("GET", "/v1/subscriptions/{subscription_id}", summary="One own subscription", scope="read",
                     response=Subscription, params=SUBSCRIPTION_ID, errors=("unknown_subscription",))
async def get_subscription(call: Call) -> Subscription:
    """One subscription with its quota."""
    return await read_subscription(call, call.params["subscription_id"])


@subscriptions.route("POST", "/v1/subscriptions/{subscription_id}/cancel", summary="Cancel a subscription",
                     scope="trade", response=Subscription, params=SUBSCRIPTION_ID, errors=("unknown_subscription",))
async def cancel_subscription(call: Call) -> Subscription:
    """End the subscription when the period under way ends: its tokens stay usable until then, and nothing more is
    paid. Cancelling a cancelled or ended subscription changes nothing."""
    subscription_id = call.params["subscription_id"]
    current = await read_subscription(call, subscription_id)
    if current.status != "ended":
        await call.submit(CancelSubscription(call.account_id, subscription_id))
    return await read_subscription(call, subscription_id)


@subscriptions.route("GET", "/v1/subscriptions/{subscription_id}/periods", summary="A subscription's periods",
                     scope="read", query=schemas.PeriodPageQuery, response=PeriodPage, params=SUBSCRIPTION_ID,
                     errors=("unknown_subscription",))
async def list_periods(call: Call) -> PeriodPage:
    """The periods run, newest first: what each paid and granted, or why it did not."""
    subscription = await read_subscription(call, call.params["subscription_id"])
    cursor = None if call.query.cursor is None else int(call.query.cursor)
    async with call.services.connection() as conn:
        rows = await conn.fetch(PERIODS, subscription.id, cursor, call.query.limit + 1)
    items = [SubscriptionPeriod(r["period"], period_start(subscription.start_at, subscription.period, r["period"]),
                                r["entry_id"], from_micro(r["price"]), from_micro(r["fee"]), r["tokens"], r["reason"],
                                r["created_at"]) for r in rows[: call.query.limit]]
    return PeriodPage(items, str(items[-1].period) if len(rows) > call.query.limit else None)
