"""The user channel: signed like REST, it carries one's own orders, fills and balances and nobody else's."""

import asyncio
import random
import time

import pytest

from api.client import Client
from tests.support.feed import FeedClient, Market, random_flow, signed_user


async def user_client(live, market: Market, index: int, **overrides) -> FeedClient:
    key = market.keys[index]
    client = await FeedClient.open(live)
    nonce = await client.challenge()
    await client.subscribe("user", market.symbol, **{**signed_user(market.symbol, key["id"], key["secret"], nonce),
                                                     **overrides})
    return client


async def drain(client: FeedClient, quiet: float = 1.5) -> list[dict]:
    """Everything until nothing but heartbeats came for ``quiet`` seconds."""
    messages = []
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        try:
            message = await client.next(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if message["type"] != "heartbeat":
            messages.append(message)
            deadline = time.monotonic() + quiet
    return messages


def latest_balances(messages: list[dict]) -> dict[str, dict]:
    return {m["balance"]["asset"]: m["balance"] for m in messages if m["type"] == "balance"}


async def test_the_subscription_must_be_signed_by_a_key_with_read(live, market: Market):
    key = market.keys[0]
    client = await FeedClient.open(live)
    nonce = await client.challenge()
    good = signed_user(market.symbol, key["id"], key["secret"], nonce)
    cases = [
        ({}, "unauthenticated"),
        ({**good, "timestamp": str(int(time.time()) - 120)}, "stale_timestamp"),
        ({**good, "timestamp": "soon"}, "stale_timestamp"),
        (signed_user(market.symbol, key["id"], "0" * 64, nonce), "invalid_signature"),
        (signed_user("OTHER", key["id"], key["secret"], nonce), "invalid_signature"),
        (signed_user(market.symbol, key["id"], key["secret"], "0" * 32), "invalid_signature"),
        ({**good, "key": "tk_0000000000000000"}, "invalid_signature"),
        ({**good, "key": "nonsense"}, "invalid_signature"),
    ]
    for fields, code in cases:
        await client.subscribe("user", market.symbol, **fields)
        message, _ = await client.until(lambda m: m["type"] in ("error", "subscribed"))
        assert (message["type"], message.get("code")) == ("error", code), fields
    await client.close()

    admin = Client(live.url, live.admin_key, live.admin_secret)
    trade_only = await admin.create_key(market.accounts[0]["id"], ["trade"])
    client = await FeedClient.open(live)
    await client.subscribe("user", market.symbol, **signed_user(market.symbol, trade_only["id"],
                                                                trade_only["secret"], await client.challenge()))
    message, _ = await client.until(lambda m: m["type"] in ("error", "subscribed"))
    assert message["code"] == "insufficient_scope"
    await client.close()
    await admin.aclose()


async def test_own_orders_fills_and_balances_arrive_as_rest_shows_them(live, market: Market):
    seller, buyer = market.traders[0], market.traders[1]
    resting = await seller.place_order(market.symbol, "sell", price="3.5", qty=4)
    client = await user_client(live, market, 0)
    subscribed, _ = await client.until(lambda m: m["type"] == "subscribed")
    assert subscribed["channel"] == "user" and "key" not in subscribed
    initial = await drain(client)
    assert [m["order"]["id"] for m in initial if m["type"] == "order"] == [resting["id"]]
    assert latest_balances(initial) == await seller.balances()

    await buyer.place_order(market.symbol, "buy", price="3.5", qty=3)
    messages = await drain(client)
    orders = [m for m in messages if m["type"] == "order"]
    fills = [m for m in messages if m["type"] == "fill"]
    assert [m["order"]["id"] for m in orders] == [resting["id"]]
    stored = await seller.order(resting["id"])
    assert orders[-1]["order"] == {k: v for k, v in stored.items() if k != "fills"}
    assert orders[-1]["order"]["open_qty"] == 1 and orders[-1]["seq"] >= subscribed["seq"]
    assert [m["fill"] for m in fills] == (await seller.fills(symbol=market.symbol, limit=1))["items"]
    assert fills[0]["fill"]["role"] == "maker" and fills[0]["fill"]["side"] == "sell"
    assert fills[0]["seq"] == fills[0]["fill"]["seq"]
    assert latest_balances(messages).items() <= (await seller.balances()).items()
    assert all(m["symbol"] == market.symbol and m["channel"] == "user" for m in messages)
    await client.close()


async def test_no_account_sees_another_accounts_data(live, market: Market):
    clients = [await user_client(live, market, i) for i in range(len(market.traders))]
    for client in clients:
        await client.until(lambda m: m["type"] == "subscribed")
    await random_flow(market, 120, random.Random(17))
    for index, (client, trader) in enumerate(zip(clients, market.traders, strict=True)):
        messages = await drain(client)
        own_orders = {o["id"] for o in (await trader.orders(symbol=market.symbol, limit=500))["items"]}
        own_fills = {(f["id"], f["role"]): f for f in (await trader.fills(symbol=market.symbol, limit=500))["items"]}
        seen_orders = {m["order"]["id"] for m in messages if m["type"] == "order"}
        seen_fills = [m["fill"] for m in messages if m["type"] == "fill"]
        assert seen_orders and seen_orders <= own_orders, f"trader {index} saw orders of others"
        assert all(own_fills.get((f["id"], f["role"])) == f for f in seen_fills), f"trader {index} saw fills of others"
        assert {f["order_id"] for f in seen_fills} <= own_orders
        assert latest_balances(messages).items() <= (await trader.balances()).items()
        # Every one of its own orders touched since subscribing came through, last state first-hand.
        changed = {o["id"]: o for o in (await trader.orders(symbol=market.symbol, limit=500))["items"]}
        last = {m["order"]["id"]: m["order"] for m in messages if m["type"] == "order"}
        assert all(changed[order_id] == order for order_id, order in last.items())
        await client.close()


async def test_deposits_reach_the_balance_and_a_revoked_key_loses_the_channel(live, market: Market):
    client = await user_client(live, market, 2)
    await drain(client, quiet=0.5)
    admin = Client(live.url, live.admin_key, live.admin_secret)
    await admin.deposit(market.accounts[2]["id"], "12.5")
    message, _ = await client.until(lambda m: m["type"] == "balance" and m["balance"]["asset"] == "CNY", timeout=5)
    assert message["balance"] == (await market.traders[2].balances())["CNY"]

    await admin.call("DELETE", f"/v1/keys/{market.keys[2]['id']}")
    error, _ = await client.until(lambda m: m["type"] == "error", timeout=8)
    assert error["code"] == "key_revoked"
    await admin.deposit(market.accounts[2]["id"], "1")
    assert [m for m in await drain(client, quiet=2.5) if m.get("channel") == "user"] == []
    await client.close()
    await admin.aclose()


@pytest.mark.parametrize("channel", ["level2", "user"])
async def test_unsubscribing_stops_the_messages(live, market: Market, channel):
    key = market.keys[1]
    client = await FeedClient.open(live)
    extra = signed_user(market.symbol, key["id"], key["secret"], await client.challenge()) if channel == "user" else {}
    await client.subscribe(channel, market.symbol, **extra)
    await client.until(lambda m: m["type"] == "subscribed")
    await client.send(type="unsubscribe", channel=channel, symbol=market.symbol, id="bye")
    answer, _ = await client.until(lambda m: m["type"] == "unsubscribed")
    assert answer["id"] == "bye"
    await market.traders[1].place_order(market.symbol, "buy", price="0.7", qty=2)
    await asyncio.sleep(0.5)
    assert [m for m in await drain(client, quiet=1.2) if m.get("channel") == channel] == []
    await client.close()
