"""REST trades and candles from the persisted fills, and the ticker and candles channels that follow them."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from api.client import ApiError, Client
from tests.support.feed import FeedClient, Market


async def trade(market: Market, price: str, qty: int) -> None:
    """One trade of ``qty`` at ``price``, the first trader selling to the second."""
    await market.traders[0].place_order(market.symbol, "sell", price=price, qty=qty)
    await market.traders[1].place_order(market.symbol, "buy", price=price, qty=qty)


async def get(client: Client, path: str, **params) -> dict:
    return await client.call("GET", path, params=params)


async def test_trades_page_newest_first_or_from_a_trade_id(live, market: Market):
    rest = Client(live.url)
    for price, qty in (("2.1", 1), ("2.2", 2), ("2.3", 3), ("2.4", 4), ("2.5", 5)):
        await trade(market, price, qty)
    path = f"/v1/instruments/{market.symbol}/trades"
    everything = (await get(rest, path, limit=500))["items"]
    assert [t["price"] for t in everything[:5]] == ["2.5", "2.4", "2.3", "2.2", "2.1"]
    assert everything[0] == {"id": everything[0]["id"], "price": "2.5", "qty": 5, "side": "buy",
                             "seq": everything[0]["seq"], "created_at": everything[0]["created_at"]}
    ids = [t["id"] for t in everything]
    assert ids == sorted(ids, reverse=True)

    first = await get(rest, path, limit=2)
    assert [t["id"] for t in first["items"]] == ids[:2] and first["next_cursor"] == str(ids[1])
    second = await get(rest, path, limit=2, cursor=first["next_cursor"])
    assert [t["id"] for t in second["items"]] == ids[2:4]

    newer = await get(rest, path, order="asc", cursor=str(ids[3]), limit=2)
    assert [t["id"] for t in newer["items"]] == [ids[2], ids[1]] and newer["next_cursor"] == str(ids[1])
    last = await get(rest, path, order="asc", cursor=newer["next_cursor"], limit=2)
    assert [t["id"] for t in last["items"]] == [ids[0]] and last["next_cursor"] is None

    cut = datetime.fromisoformat(everything[2]["created_at"])
    before = await get(rest, path, end=cut.isoformat(), limit=500)
    assert all(datetime.fromisoformat(t["created_at"]) < cut for t in before["items"])
    since = await get(rest, path, start=cut.isoformat(), limit=500)
    assert {t["id"] for t in since["items"]} | {t["id"] for t in before["items"]} == set(ids)
    await rest.aclose()


async def test_trades_refuse_bad_queries(live, market: Market):
    rest = Client(live.url)
    path = f"/v1/instruments/{market.symbol}/trades"
    for params, code in (({"cursor": "abc"}, "invalid_field"), ({"order": "up"}, "invalid_field"),
                         ({"start": "2026-01-01T00:00:00"}, "invalid_field"), ({"limit": 501}, "invalid_field"),
                         ({"page": 2}, "unknown_field")):
        with pytest.raises(ApiError) as error:
            await get(rest, path, **params)
        assert error.value.status == 422 and error.value.code == code
    with pytest.raises(ApiError) as error:
        await get(rest, "/v1/instruments/NOPE-NOPE/trades")
    assert error.value.status == 404 and error.value.code == "unknown_instrument"
    await rest.aclose()


async def test_candles_state_empty_bins_and_aggregate_the_fills(live, market: Market):
    rest = Client(live.url)
    client = await FeedClient.open(live)
    await client.subscribe("candles", market.symbol, interval="1m")
    await client.until(lambda m: m["type"] == "candle")

    path = f"/v1/instruments/{market.symbol}/candles"
    prices = (("2.1", 10), ("2.3", 5), ("1.9", 5), ("2.2", 20))
    for price, qty in prices:
        await trade(market, price, qty)
    fills = (await get(rest, f"/v1/instruments/{market.symbol}/trades", limit=500))["items"]
    latest = datetime.fromisoformat(fills[0]["created_at"])
    minute = latest.replace(second=0, microsecond=0)
    ours = [f for f in reversed(fills) if datetime.fromisoformat(f["created_at"]) >= minute]

    answer = await get(rest, path, interval="1m", end=(minute + timedelta(minutes=1)).isoformat(), limit=30)
    assert answer["symbol"] == market.symbol and answer["interval"] == "1m" and len(answer["items"]) == 30
    starts = [datetime.fromisoformat(c["start"]) for c in answer["items"]]
    assert starts == [minute - timedelta(minutes=29 - i) for i in range(30)]
    current = answer["items"][-1]
    volume = sum(f["qty"] for f in ours)
    notional = sum(Decimal(f["price"]) * f["qty"] for f in ours)
    assert current["open"] == ours[0]["price"] and current["close"] == ours[-1]["price"]
    assert current["high"] == max((f["price"] for f in ours), key=Decimal)
    assert current["low"] == min((f["price"] for f in ours), key=Decimal)
    assert current["volume"] == volume and Decimal(current["notional"]) == notional
    assert Decimal(current["vwap"]) == (notional / volume).quantize(Decimal("0.000001"))
    # Before the market opened nothing traded, and the answer says so rather than carrying a price over.
    assert answer["items"][0] == {"start": answer["items"][0]["start"], "open": None, "high": None, "low": None,
                                  "close": None, "volume": 0, "notional": "0", "vwap": None}

    # Coarser bins hold the same fills; the day's bin starts at UTC midnight.
    end = (minute + timedelta(minutes=1)).isoformat()
    day = (await get(rest, path, interval="1d", end=end, limit=1))["items"][0]
    assert datetime.fromisoformat(day["start"]) == minute.replace(hour=0, minute=0)
    assert day["volume"] >= volume and day["close"] == current["close"]
    hour = (await get(rest, path, interval="1h", start=minute.isoformat(), limit=3))["items"]
    assert len(hour) == 3 and hour[0]["volume"] >= volume

    # The feed's candle is the same object as REST's.
    message, _ = await client.until(lambda m: m["type"] == "candle" and m["candle"]["volume"] == current["volume"])
    assert message["interval"] == "1m" and message["candle"] == current
    await client.close()
    await rest.aclose()


async def test_candles_refuse_bad_ranges(live, market: Market):
    rest = Client(live.url)
    path = f"/v1/instruments/{market.symbol}/candles"
    with pytest.raises(ApiError) as error:
        await get(rest, path, interval="2m")
    assert error.value.code == "invalid_field"
    with pytest.raises(ApiError) as error:
        await get(rest, path, start="2026-01-02T00:00:00Z", end="2026-01-01T00:00:00Z")
    assert error.value.code == "out_of_range"
    with pytest.raises(ApiError) as error:
        await get(rest, path, end="9999-12-31T23:59:00Z", interval="1d")
    assert error.value.code == "out_of_range"
    bounded = await get(rest, path, interval="1h", start="2026-01-01T00:30:00Z", end="2026-01-01T05:00:00Z")
    assert [c["start"] for c in bounded["items"]] == [f"2026-01-01T0{h}:00:00Z" for h in range(5)]
    await rest.aclose()


async def test_ticker_channel_follows_trades(live, market: Market):
    client = await FeedClient.open(live)
    await client.subscribe("ticker", market.symbol)
    first, _ = await client.until(lambda m: m["type"] == "ticker")
    await trade(market, "2.5", 3)
    message, _ = await client.until(lambda m: m["type"] == "ticker" and m["last_price"] == "2.5")
    rest = await Client(live.url).ticker(market.symbol)
    assert message["seq"] > first["seq"] and message["last_qty"] == 3
    assert message["volume_24h"] == rest["volume_24h"] and message["high_24h"] == rest["high_24h"]
    assert Decimal(message["change_24h"]) == Decimal("2.5") - Decimal(rest["open_24h"])
    await client.close()


async def test_history_is_in_the_openapi_document(live):
    document = await Client(live.url).call("GET", "/v1/openapi.json")
    for path in ("/v1/instruments/{symbol}/trades", "/v1/instruments/{symbol}/candles"):
        operation = document["paths"][path]["get"]
        assert operation["security"] == [] and {p["name"] for p in operation["parameters"]} >= {"symbol", "limit"}
