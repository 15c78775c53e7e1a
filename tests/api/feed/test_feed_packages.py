"""The user channel reports each period a package runs, and the routed order's child fills as fills."""

from datetime import UTC, datetime

from tests.support.feed import FeedClient, Market, signed_user


async def test_a_package_execution_and_its_child_fills_reach_the_user_channel(live, market: Market):
    await market.issuer.place_order(market.symbol, "sell", price="2.5", qty=50)
    key = market.keys[0]
    client = await FeedClient.open(live)
    await client.subscribe("user", market.symbol, **signed_user(market.symbol, key["id"], key["secret"],
                                                                await client.challenge()))
    await client.until(lambda m: m["type"] == "subscribed")

    buyer = market.traders[0]
    package = await buyer.create_package("chat-general", 3, "cost", "month", max_cost="10",
                                         start_at=datetime.now(UTC).isoformat())
    # The execution is reported as the commit lands; the fills follow from the committed rows: either may come first.
    messages: list[dict] = []
    while not {"package_execution", "fill"} <= {m["type"] for m in messages}:
        messages.append(await client.next())
    execution = next(m for m in messages if m["type"] == "package_execution")
    assert execution["channel"] == "user" and execution["symbol"] == market.symbol
    assert execution["execution"]["package_id"] == package["id"]
    assert execution["execution"]["period"] == 0 and execution["execution"]["filled_qty"] == 3
    routed = await buyer.routed_order(execution["execution"]["routed_order_id"])
    [child] = routed["children"]
    fill = next(m for m in messages if m["type"] == "fill")
    assert fill["fill"]["order_id"] == child["id"]
    assert (fill["fill"]["qty"], fill["fill"]["price"], fill["fill"]["role"]) == (3, "2.5", "taker")
    await client.close()
