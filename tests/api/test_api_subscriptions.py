"""Subscriptions over HTTP against a live server: a seller's offer, a buyer's periods paid and granted on the
engine's clock, the quota consumed through the inference gateway with the official ``openai`` SDK, lapsing at each
period's end, cancelling at the period's end, and ``tokex check`` clean throughout."""

from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal

import openai
import pytest

from api.client import ApiError, Client
from api.keys import bearer_token
from tests.support.api_server import Live, unique
from tests.support.index_clock import on_server
from tests.support.providers import settled, simulated_provider

TOKENS = 5_000
PRICE = "2.5"
FEE = Decimal("0.005")
"""The instrument's taker rate, 20 bps, on the price, out of the seller's share."""
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def offer(admin: Client, new_account):
    """A compute instrument, its issuer serving it through a simulated provider, and the issuer's daily offer:
    (symbol, seller, seller's account, offer)."""
    symbol = unique("SUB").upper()
    await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="sim",
                                  substitution_group=unique("g"), quality=80, tokens_per_lot=10_000)
    account, seller = await new_account("issuer")
    await admin.approve_issuer(account["id"], symbol, 1_000)
    with simulated_provider("sim-sub") as url:
        await seller.register_provider(symbol, url, "sim-sub")
        yield symbol, seller, account, await seller.publish_subscription_offer(symbol, TOKENS, "day", PRICE)


@contextmanager
def clock_ahead(live: Live, delta: timedelta):
    """The live server's engine clock (the sequencer's, which the scheduler shares) ``delta`` ahead."""
    sequencer = live.app.state.services.sequencer
    wall_clock = sequencer.clock
    sequencer.clock = lambda: wall_clock() + delta // timedelta(microseconds=1)
    try:
        yield
    finally:
        sequencer.clock = wall_clock


async def run_due(live: Live) -> None:
    await on_server(live, live.app.state.services.scheduler.run_due())


async def cash(client: Client) -> Decimal:
    return Decimal((await client.balances())["CNY"]["available"])


async def test_periods_are_paid_granted_consumed_and_lapse_and_cancelling_ends_at_the_period_end(
        live: Live, admin: Client, new_account, offer) -> None:
    symbol, seller, _, published = offer
    assert [o["id"] for o in await seller.subscription_offers(symbol)] == [published["id"]]
    assert (published["tokens_per_period"], published["period"], published["price"]) == (TOKENS, "day", "2.5")
    buyer_account, buyer = await new_account(cash="10")
    subscribed = await buyer.subscribe(published["id"], client_request_id="sub-1")
    assert await buyer.subscribe(published["id"], client_request_id="sub-1") == subscribed
    start = datetime.fromisoformat(subscribed["start_at"])
    assert subscribed["status"] == "active" and subscribed["quota"]["granted"] == TOKENS
    assert datetime.fromisoformat(subscribed["quota"]["expires_at"]) == start + timedelta(days=1)
    assert datetime.fromisoformat(subscribed["renews_at"]) == start + timedelta(days=1)
    assert await cash(buyer) == 10 - Decimal(PRICE) and await cash(seller) == Decimal(PRICE) - FEE
    [quota] = [q for q in await buyer.quotas() if q["symbol"] == symbol]
    assert (quota["source"], quota["remaining"]) == (f"subscription:{subscribed['id']}", TOKENS)

    key = await admin.create_key(buyer_account["id"], ["inference"])
    sdk = openai.AsyncOpenAI(base_url=live.url + "/inference/v1", api_key=bearer_token(key["id"], key["secret"]))
    answer = await sdk.chat.completions.create(model=symbol, messages=HELLO, max_tokens=10)
    await sdk.close()
    used = answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert (await settled(buyer, symbol))["used"] == used  # the settlement commits just after the answer
    assert (await buyer.subscription(subscribed["id"]))["quota"]["used"] == used

    with clock_ahead(live, timedelta(days=1, seconds=1)):
        await run_due(live)
        renewed = await buyer.subscription(subscribed["id"])
        assert renewed["next_period"] == 2
        assert (renewed["quota"]["granted"], renewed["quota"]["used"], renewed["quota"]["lapsed"]) == \
            (2 * TOKENS, used, TOKENS - used)
        assert await cash(buyer) == 10 - 2 * Decimal(PRICE)
        cancelling = await buyer.cancel_subscription(subscribed["id"])
        assert cancelling["status"] == "cancelling"
        assert datetime.fromisoformat(cancelling["renews_at"]) == start + timedelta(days=2)
    with clock_ahead(live, timedelta(days=2, seconds=1)):
        await run_due(live)
    ended = await buyer.subscription(subscribed["id"])
    assert (ended["status"], ended["renews_at"], ended["quota"]["lapsed"]) == ("ended", None, 2 * TOKENS - used)
    periods = (await buyer.subscription_periods(subscribed["id"]))["items"]
    assert [(p["period"], p["price"], p["fee"], p["tokens"], p["reason"]) for p in periods] == [
        (2, "0", "0", 0, "cancelled"), (1, PRICE, str(FEE), TOKENS, None), (0, PRICE, str(FEE), TOKENS, None)]
    assert await cash(buyer) == 10 - 2 * Decimal(PRICE)
    assert await cash(seller) == 2 * (Decimal(PRICE) - FEE)
    assert await live.problems() == []


async def test_refusals_change_nothing(live: Live, new_account, offer) -> None:
    symbol, seller, _, published = offer
    _, poor = await new_account(cash="1")
    with pytest.raises(ApiError) as refused:
        await poor.subscribe(published["id"])
    assert (refused.value.status, refused.value.code) == (409, "insufficient_funds")
    with pytest.raises(ApiError) as refused:
        await seller.subscribe(published["id"])
    assert (refused.value.status, refused.value.code) == (403, "not_permitted")
    with pytest.raises(ApiError) as refused:
        await seller.publish_subscription_offer(symbol, 0, "day", PRICE)
    assert (refused.value.status, refused.value.field) == (422, "tokens_per_period")
    _, stranger = await new_account("issuer")
    with pytest.raises(ApiError) as refused:
        await stranger.publish_subscription_offer(symbol, TOKENS, "week", PRICE)
    assert (refused.value.status, refused.value.code) == (403, "not_approved")
    withdrawn = await seller.withdraw_subscription_offer(published["id"])
    assert withdrawn["status"] == "withdrawn" and await seller.subscription_offers(symbol) == []
    with pytest.raises(ApiError) as refused:
        await poor.subscribe(published["id"])
    assert (refused.value.status, refused.value.code) == (409, "offer_withdrawn")
    assert await poor.subscriptions() == [] and await cash(poor) == 1
    with pytest.raises(ApiError) as refused:
        await poor.cancel_subscription(12345)
    assert (refused.value.status, refused.value.code) == (404, "unknown_subscription")
    assert await live.problems() == []
