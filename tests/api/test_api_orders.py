"""Orders over HTTP against a live server: place, read, list, cancel, amend, fills, and market data."""

from decimal import Decimal

import pytest

from api.client import ApiError
from tests.support.pages import every_item


async def test_place_order_answers_after_commit_with_fills_and_average_price(market, new_account):
    symbol, issuer = market
    await issuer.place_order(symbol, "sell", price="1.85", qty=10)
    await issuer.place_order(symbol, "sell", price="1.90", qty=10)
    _, buyer = await new_account(cash="100")

    order = await buyer.place_order(symbol, "buy", price="1.90", qty=15, client_order_id="b-1")

    assert order["status"] == "filled"
    assert order["filled_qty"] == 15 and order["open_qty"] == 0
    assert order["filled_notional"] == "28"  # 10 x 1.85 + 5 x 1.90
    assert order["average_price"] == "1.866667"
    assert [(f["price"], f["qty"], f["role"]) for f in order["fills"]] == [("1.85", 10, "taker"), ("1.9", 5, "taker")]
    fee = sum(Decimal(f["fee"]) for f in order["fills"])
    assert Decimal(order["fee"]) == fee > 0

    stored = await buyer.order(order["id"])
    assert stored["fills"] == order["fills"]
    assert stored["created_at"] is not None
    assert {k: v for k, v in stored.items() if k not in ("created_at", "updated_at")} == \
        {k: v for k, v in order.items() if k not in ("created_at", "updated_at")}
    assert (await buyer.order_by_client_id("b-1"))["id"] == order["id"]

    balances = await buyer.balances()
    assert balances[symbol] == {"asset": symbol, "available": "15", "held": "0"}
    assert Decimal(balances["CNY"]["available"]) == Decimal(100) - Decimal("28") - fee


async def test_client_order_id_replay_returns_the_original_and_changes_nothing(market, new_account):
    symbol, issuer = market
    _, buyer = await new_account(cash="100")
    first = await buyer.place_order(symbol, "buy", price="1.00", qty=5, client_order_id="once")
    before = await buyer.balances()
    again = await buyer.place_order(symbol, "buy", price="2.00", qty=7, client_order_id="once")
    assert again["id"] == first["id"] and again["price"] == "1" and again["qty"] == 5
    assert await buyer.balances() == before
    assert len((await buyer.orders(status="open"))["items"]) == 1

    # Replayed after it traded (and after it closed): the fills come back too.
    await issuer.place_order(symbol, "sell", price="1.00", qty=5)
    replay = await buyer.place_order(symbol, "buy", price="1.00", qty=5, client_order_id="once")
    assert replay["status"] == "filled" and [f["qty"] for f in replay["fills"]] == [5]


async def test_cancel_amend_and_cancel_all(market, new_account):
    symbol, _ = market
    _, buyer = await new_account(cash="100")
    order = await buyer.place_order(symbol, "buy", price="1.00", qty=10)
    assert (await buyer.balances())["CNY"]["held"] != "0"

    amended = await buyer.amend_order(order["id"], qty=4)
    assert amended["qty"] == 4 and amended["open_qty"] == 4
    amended = await buyer.amend_order(order["id"], price="1.10")
    assert amended["price"] == "1.1"

    cancelled = await buyer.cancel_order(order["id"])
    assert cancelled["status"] == "cancelled" and cancelled["reason"] == "by_request"
    assert (await buyer.balances())["CNY"] == {"asset": "CNY", "available": "100", "held": "0"}
    with pytest.raises(ApiError) as error:
        await buyer.cancel_order(order["id"])
    assert error.value.status == 404 and error.value.code == "unknown_order"

    ids = [(await buyer.place_order(symbol, "buy", price="0.50", qty=1))["id"] for _ in range(3)]
    assert sorted(await buyer.cancel_all(symbol)) == sorted(ids)
    assert (await buyer.orders(status="open"))["items"] == []


async def test_orders_pagination_and_filters(market, new_account):
    symbol, _ = market
    _, buyer = await new_account(cash="1000")
    ids = [(await buyer.place_order(symbol, "buy", price="0.10", qty=1 + i))["id"] for i in range(7)]
    await buyer.cancel_order(ids[0])

    seen = [o["id"] for o in await every_item(buyer.orders, limit=3)]
    assert seen == sorted(ids, reverse=True)
    assert [o["id"] for o in (await buyer.orders(status="closed"))["items"]] == [ids[0]]
    assert len((await buyer.orders(status="open", symbol=symbol, side="buy"))["items"]) == 6
    assert (await buyer.orders(side="sell"))["items"] == []


async def test_fills_and_ledger_are_own_and_paginated(market, new_account):
    symbol, issuer = market
    _, buyer = await new_account(cash="100")
    for _ in range(5):
        await issuer.place_order(symbol, "sell", price="1.00", qty=1)
    await buyer.place_order(symbol, "buy", type="market", qty=5)

    fills = await every_item(buyer.fills, limit=2)
    assert len(fills) == 5 and len({f["id"] for f in fills}) == 5
    assert all(f["side"] == "buy" and f["role"] == "taker" and f["symbol"] == symbol for f in fills)
    issuer_fills = (await issuer.fills(symbol=symbol))["items"]
    assert {f["id"] for f in issuer_fills} == {f["id"] for f in fills}
    assert all(f["side"] == "sell" and f["role"] == "maker" for f in issuer_fills)

    entries = await every_item(buyer.ledger, limit=2)
    kinds = [e["kind"] for e in entries]
    assert kinds[-1] == "deposit" and kinds.count("trade") == 5
    account_id = (await buyer.me())["id"]
    assert all(p["asset"] in ("CNY", symbol) for e in entries for p in e["postings"])
    cash = sum(Decimal(p["amount"]) for e in entries for p in e["postings"] if p["asset"] == "CNY")
    assert cash == sum(Decimal(v) for v in (await buyer.balances())["CNY"].values() if v != "CNY")
    assert account_id > 0
    assert (await buyer.ledger(asset=symbol))["items"][0]["kind"] in ("trade", "release")


async def test_book_and_ticker(market, new_account, admin):
    symbol, issuer = market
    empty = await admin.book(symbol)
    assert empty["bids"] == [] and empty["asks"] == []
    await issuer.place_order(symbol, "sell", price="2.00", qty=5)
    await issuer.place_order(symbol, "sell", price="2.00", qty=3)
    await issuer.place_order(symbol, "sell", price="2.10", qty=1)
    _, buyer = await new_account(cash="100")
    await buyer.place_order(symbol, "buy", price="1.50", qty=4)
    await buyer.place_order(symbol, "buy", price="1.60", qty=2)

    book = await admin.book(symbol, depth=1)
    assert book["bids"] == [{"price": "1.6", "qty": 2}] and book["asks"] == [{"price": "2", "qty": 8}]
    book = await admin.book(symbol)
    assert [level["price"] for level in book["asks"]] == ["2", "2.1"]
    assert [level["price"] for level in book["bids"]] == ["1.6", "1.5"]
    assert book["seq"] > empty["seq"]

    await buyer.place_order(symbol, "buy", price="2.00", qty=6)
    ticker = await admin.ticker(symbol)
    assert ticker["last_price"] == "2" and ticker["last_qty"] == 1  # 5 lots, then 1 of the next order
    assert ticker["best_ask"] == "2" and ticker["best_bid"] == "1.6"
    assert ticker["volume_24h"] == 6 and ticker["notional_24h"] == "12"
    assert ticker["seq"] == (await admin.book(symbol))["seq"]
    assert (await admin.book(symbol))["asks"][0] == {"price": "2", "qty": 2}
    assert ticker["open_24h"] == "2" and ticker["change_24h"] == "0"

    await buyer.place_order(symbol, "buy", price="2.10", qty=3)  # 2 lots at 2.00, then 1 at 2.10
    ticker = await admin.ticker(symbol)
    assert (ticker["last_price"], ticker["change_24h"], ticker["high_24h"]) == ("2.1", "0.1", "2.1")


async def test_instruments_halt_resume_and_redemption(market, new_account, admin):
    symbol, issuer = market
    assert symbol in [i["symbol"] for i in await admin.instruments()]
    assert (await admin.halt(symbol))["status"] == "halted"
    with pytest.raises(ApiError) as error:
        await issuer.place_order(symbol, "sell", price="1.00", qty=1)
    assert (error.value.status, error.value.code) == (409, "instrument_halted")
    assert (await admin.resume(symbol))["status"] == "trading"

    redemption = await issuer.redeem(symbol, 3)
    assert redemption["qty"] == 3 and redemption["symbol"] == symbol
    assert (await issuer.redemptions())["items"][0]["id"] == redemption["id"]
    assert (await issuer.balances())[symbol]["available"] == "997"
    assert (await issuer.burn(symbol, 7))["amount"] == "-7"
    with pytest.raises(ApiError) as error:
        await issuer.redeem(symbol, 10_000)
    assert (error.value.status, error.value.code) == (409, "insufficient_tokens")


async def test_an_order_keeps_its_fills_when_the_clock_steps_back(live, market, new_account):
    symbol, issuer = market
    _, buyer = await new_account(cash="100")
    resting = await issuer.place_order(symbol, "sell", price="1.50", qty=10)
    sequencer = live.app.state.services.sequencer
    wall_clock = sequencer.clock
    sequencer.clock = lambda: wall_clock() - 3_600_000_000  # an hour back, as after an NTP step
    try:
        taken = await buyer.place_order(symbol, "buy", price="1.50", qty=4)
    finally:
        sequencer.clock = wall_clock
    assert taken["fills"][0]["qty"] == 4
    maker = await issuer.order(resting["id"])
    assert maker["updated_at"] < maker["created_at"]  # its fill is stamped before it was made
    assert [(f["fill_id"], f["qty"], f["role"]) for f in maker["fills"]] == [(taken["fills"][0]["fill_id"], 4, "maker")]
    assert (await buyer.order(taken["id"]))["fills"] == taken["fills"]
