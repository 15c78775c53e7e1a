"""The feed's index channel: a group's token price index as each minute is computed, its heartbeats and errors."""

from api.client import Client
from exchange.indexer import MINUTE
from tests.support.feed import FeedClient, unique
from tests.support.index_clock import compute_index, iso


async def group_with_trades(live, group: str) -> None:
    """A compute instrument of ``group`` (2M tokens per lot) that has traded 4 lots at 3.00 CNY."""
    async with Client(live.url, live.admin_key, live.admin_secret) as admin:
        symbol = unique("IDX")
        await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="m", substitution_group=group,
                                      quality=60, tokens_per_lot=2_000_000)
        issuer_account = await admin.create_account(unique("issuer").lower(), "issuer")
        trader_account = await admin.create_account(unique("trader").lower(), "trader")
        await admin.approve_issuer(issuer_account["id"], symbol, 100)
        await admin.deposit(trader_account["id"], "100")
        keys = [await admin.create_key(account["id"], scopes) for account, scopes in (
            (issuer_account, ["read", "trade", "issue"]), (trader_account, ["read", "trade"]))]
        async with admin.with_key(keys[0]["id"], keys[0]["secret"]) as issuer, \
                admin.with_key(keys[1]["id"], keys[1]["secret"]) as trader:
            await issuer.mint(symbol, 10)
            await issuer.place_order(symbol, "sell", price="3", qty=4)
            await trader.place_order(symbol, "buy", price="3", qty=4)


async def test_a_subscriber_gets_each_computed_minute_then_heartbeats(live) -> None:
    group = unique("grp-").lower()
    await group_with_trades(live, group)
    client = await FeedClient.open(live)
    await client.send(type="subscribe", channel="index", group=group, id=7)
    assert await client.next() == {"type": "subscribed", "channel": "index", "group": group, "id": 7}
    # A heartbeat names the newest minute computed, the one of the last index message before it (if any: the
    # server's own job may have computed a minute of the group meanwhile).
    beat, before = await client.until(lambda m: m["type"] == "heartbeat")
    assert beat["group"] == group
    assert beat["at"] == (before[-1]["index"]["at"] if before else None)

    at = await compute_index(live)
    last, earlier = await client.until(lambda m: m["type"] == "index" and m["index"]["at"] == iso(at))
    assert all(m["type"] in ("index", "heartbeat") for m in earlier)
    caught_up = [m["index"]["at"] for m in earlier if m["type"] == "index"]
    assert caught_up[-59:] == [iso(at - n * MINUTE) for n in range(59, 0, -1)], "the caught-up hour, in order"
    assert last == {"type": "index", "channel": "index", "group": group, "index": {
        "group": group, "at": iso(at), "value": "1.5", "stale": False, "trades": 1, "volume_tokens": 8_000_000,
        "notional": "12", "computed_at": last["index"]["computed_at"]}}
    beat, _ = await client.until(lambda m: m["type"] == "heartbeat")
    assert beat["at"] == iso(at) and beat["group"] == group

    # A new subscriber gets the newest value at once; unsubscribing stops the channel.
    other = await FeedClient.open(live)
    await other.send(type="subscribe", channel="index", group=group)
    assert (await other.next())["type"] == "subscribed"
    assert (await other.next())["index"]["at"] == iso(at)
    await other.send(type="unsubscribe", channel="index", group=group)
    assert await other.next() == {"type": "unsubscribed", "channel": "index", "group": group}
    await other.close()
    await client.close()


async def test_index_requests_that_are_refused(live) -> None:
    group = unique("grp-").lower()
    await group_with_trades(live, group)
    client = await FeedClient.open(live)
    for request, code in (
        ({"channel": "index", "group": "no-such-group"}, "unknown_group"),
        ({"channel": "index", "symbol": "X"}, "invalid_message"),
        ({"channel": "index", "group": group, "interval": "1m"}, "invalid_message"),
        ({"channel": "ticker", "group": group}, "invalid_message"),
    ):
        await client.send(type="subscribe", **request)
        answer = await client.next()
        assert (answer["type"], answer["code"]) == ("error", code), request
    await client.send(type="unsubscribe", channel="index", group=group)
    assert (await client.next())["code"] == "not_subscribed"
    # Refusals changed nothing: the connection still subscribes as usual.
    await client.send(type="subscribe", channel="index", group=group)
    assert (await client.next())["type"] == "subscribed"
    await client.close()
