"""The ccxt class (``api.ccxt_tokex``) with the real ccxt package against a real server: every unified method it
has, each checked against what the API itself says."""

import ccxt
import pytest

from api.ccxt_tokex import tokex
from tests.support.api_server import Live


def connect(live: Live, key: str | None = None, secret: str | None = None) -> tokex:
    exchange = tokex({"apiKey": key, "secret": secret})
    exchange.urls["api"] = {"public": live.url, "private": live.url}
    return exchange


async def test_market_data(live: Live, market, new_account):
    symbol, issuer = market
    _, buyer = await new_account("trader", cash="1000")
    await issuer.place_order(symbol, "sell", price="1.52", qty=30)
    await issuer.place_order(symbol, "sell", price="1.50", qty=20)
    await buyer.place_order(symbol, "buy", price="1.50", qty=5)
    await buyer.place_order(symbol, "buy", price="1.40", qty=7)
    exchange = connect(live)
    pair = f"{symbol}/CNY"

    markets = exchange.load_markets()
    assert markets[pair]["base"] == symbol and markets[pair]["quote"] == "CNY"
    assert markets[pair]["precision"] == {"amount": 1, "price": 0.01}
    assert (markets[pair]["maker"], markets[pair]["taker"], markets[pair]["active"]) == (0.001, 0.002, True)

    book = exchange.fetch_order_book(pair, 5)
    assert book["bids"] == [[1.4, 7]] and book["asks"] == [[1.5, 15], [1.52, 30]]
    assert book["nonce"] == (await buyer.book(symbol))["seq"]

    ticker = exchange.fetch_ticker(pair)
    assert (ticker["last"], ticker["bid"], ticker["ask"], ticker["baseVolume"]) == (1.5, 1.4, 1.5, 5)
    tickers = exchange.fetch_tickers([pair])
    assert list(tickers) == [pair] and tickers[pair]["last"] == 1.5
    assert pair in exchange.fetch_tickers()

    trades = exchange.fetch_trades(pair)
    assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(1.5, 5, "buy")]
    candles = exchange.fetch_ohlcv(pair, "1m", limit=5)
    assert len(candles) == 1 and candles[0][1:] == [1.5, 1.5, 1.5, 1.5, 5]
    assert abs(exchange.fetch_time() - exchange.milliseconds()) < 5_000
    assert exchange.fetch_status()["status"] == "ok"

    with pytest.raises(ccxt.BadSymbol):
        exchange.fetch_order_book("NOPE/CNY")


async def test_trading(live: Live, market, new_account):
    symbol, issuer = market
    account, _ = await new_account("trader", cash="1000")
    exchange = connect(live, *await new_key(live, account["id"]))
    pair = f"{symbol}/CNY"
    await issuer.place_order(symbol, "sell", price="1.50", qty=20)
    await issuer.place_order(symbol, "sell", price="1.60", qty=20)

    rest = exchange.create_order(pair, "limit", "buy", 10, 1.20, {"clientOrderId": "bot-1"})
    assert (rest["status"], rest["clientOrderId"], rest["price"], rest["amount"]) == ("open", "bot-1", 1.2, 10)
    assert exchange.fetch_order(rest["id"])["remaining"] == 10
    assert exchange.fetch_order(None, params={"clientOrderId": "bot-1"})["id"] == rest["id"]
    assert [o["id"] for o in exchange.fetch_open_orders(pair)] == [rest["id"]]
    # A retry with the same client id is safe: it returns the original order and places nothing.
    assert exchange.create_order(pair, "limit", "buy", 10, 1.20, {"clientOrderId": "bot-1"})["id"] == rest["id"]

    taken = exchange.create_order(pair, "market", "buy", 5)
    assert (taken["status"], taken["filled"], taken["average"], taken["fee"]["currency"]) == ("closed", 5, 1.5, "CNY")
    assert [t["takerOrMaker"] for t in taken["trades"]] == ["taker"]
    by_cost = exchange.create_market_buy_order_with_cost(pair, 10)
    assert by_cost["filled"] == 6  # 6 lots at 1.50 is 9 CNY plus fees; a 7th would pass 10 CNY

    cancelled = exchange.cancel_order(rest["id"])
    assert cancelled["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        exchange.cancel_order(rest["id"] + "0")
    assert exchange.fetch_open_orders(pair) == []
    assert {o["id"] for o in exchange.fetch_closed_orders(pair)} == {rest["id"], taken["id"], by_cost["id"]}

    mine = exchange.fetch_my_trades(pair)
    assert sorted(t["amount"] for t in mine) == [5, 6] and {t["side"] for t in mine} == {"buy"}
    balance = exchange.fetch_balance()
    assert balance[symbol]["free"] == 11
    spent = sum(t["cost"] + t["fee"]["cost"] for t in mine)
    assert balance["CNY"]["total"] == pytest.approx(1000 - spent)

    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(pair, "limit", "sell", 500, 1.70)
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        exchange.create_order(pair, "limit", "buy", 1, 1.60, {"postOnly": True})


async def test_pages_follow_the_cursor(live: Live, market, new_account):
    symbol, _ = market
    account, _ = await new_account("trader", cash="100")
    exchange = connect(live, *await new_key(live, account["id"]))
    pair = f"{symbol}/CNY"
    ids = [exchange.create_order(pair, "limit", "buy", 1, 1.00 + i / 100)["id"] for i in range(5)]
    first = exchange.fetch_open_orders(pair, limit=2)
    assert len(first) == 2 and exchange.last_cursor is not None
    second = exchange.fetch_open_orders(pair, limit=2, params={"cursor": exchange.last_cursor})
    every = exchange.fetch_open_orders(pair, params={"paginate": True, "limit": 2})  # pages of 2
    assert len({o["id"] for o in first + second}) == 4
    assert sorted(o["id"] for o in every) == sorted(ids) and exchange.last_cursor is None


async def test_signing_failures_are_authentication_errors(live: Live):
    exchange = connect(live, "tk_0000000000000000", "00" * 32)
    with pytest.raises(ccxt.AuthenticationError):
        exchange.fetch_balance()
    with pytest.raises(ccxt.AuthenticationError):
        connect(live).fetch_balance()  # no credentials: ccxt itself refuses before sending


async def new_key(live: Live, account_id: int) -> tuple[str, str]:
    """A new read+trade key for ``account_id``: (id, secret)."""
    key, secret = live.run(live.app.state.services.keys.create(account_id, ["read", "trade"]))
    return key.id, secret
