"""Every class of error is a problem+json with a stable code, and a refused request changes nothing."""

import httpx
import pytest

from api.client import Client
from api.endpoints import MAX_BODY
from api.problems import CODES, MEDIA_TYPE
from exchange.rejections import MESSAGES


def test_every_engine_rejection_has_a_status():
    assert set(MESSAGES) <= set(CODES)
    assert all(400 <= spec.status < 600 for spec in CODES.values())


async def problem(client: Client, method: str, path: str, **options) -> tuple[int, dict]:
    response = await client.request(method, path, **options)
    assert response.headers["content-type"] == MEDIA_TYPE, response.text
    body = response.json()
    assert body["status"] == response.status_code
    assert body["type"] == f"urn:tokex:problem:{body['code']}"
    assert body["title"] and body["detail"]
    return response.status_code, body


async def test_unknown_routes_and_methods(admin):
    status, body = await problem(admin, "GET", "/v1/nothing-here")
    assert (status, body["code"]) == (404, "not_found")
    status, body = await problem(admin, "GET", "/v1/orders/")  # no redirect to a guess
    assert status == 404
    response = await admin.request("PUT", "/v1/orders")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == "DELETE, GET, POST"
    status, body = await problem(admin, "GET", "/v1/orders/not-a-number")
    assert (status, body["code"], body["field"]) == (404, "unknown_order", "order_id")
    status, body = await problem(admin, "GET", "/v1/instruments/no%20such")
    assert (status, body["code"]) == (404, "unknown_instrument")


async def test_validation_names_the_field(market, new_account):
    symbol, _ = market
    _, trader = await new_account(cash="10")
    order = {"type": "limit", "symbol": symbol, "side": "buy", "price": "1.00", "qty": 1}
    cases = [
        ({**order, "colour": "red"}, "unknown_field", "colour"),
        ({**order, "qty": "1"}, "invalid_field", "qty"),
        ({**order, "qty": 0}, "invalid_field", "qty"),
        ({**order, "qty": 10**30}, "invalid_field", "qty"),
        ({**order, "side": "up"}, "invalid_field", "side"),
        ({k: v for k, v in order.items() if k != "side"}, "missing_field", "side"),
        ({**order, "price": 1.5}, "invalid_field", "price"),
        ({**order, "price": "1.0000001"}, "too_precise", "price"),
        ({**order, "price": "1.005"}, "off_tick_price", "price"),
        ({**order, "price": "1e3"}, "invalid_decimal", "price"),
        ({**order, "price": "99999999"}, "out_of_range", "price"),
        ({**order, "symbol": "lower"}, "invalid_field", "symbol"),
        ({**order, "client_order_id": "has space"}, "invalid_field", "client_order_id"),
        ({**order, "tif": "GTD"}, "invalid_field", "tif"),
        ({**order, "type": "market"}, "unknown_field", "price"),
        ({k: v for k, v in order.items() if k != "type"}, "missing_field", "type"),
        ({"type": "market", "symbol": symbol, "side": "buy"}, "invalid_field", "qty"),
        ({"type": "market", "symbol": symbol, "side": "buy", "qty": 1, "budget": "1"}, "invalid_field", "qty"),
        ({"type": "market", "symbol": symbol, "side": "sell", "budget": "1"}, "invalid_budget", "budget"),
    ]
    for body, code, field in cases:
        status, answer = await problem(trader, "POST", "/v1/orders", json=body)
        assert (status, answer["code"], answer.get("field")) == (422, code, field), body
    status, answer = await problem(trader, "GET", "/v1/orders", params={"limit": "many"})
    assert (status, answer["code"], answer["field"]) == (422, "invalid_field", "limit")
    status, answer = await problem(trader, "GET", "/v1/orders", params={"colour": "red"})
    assert (status, answer["code"], answer["field"]) == (422, "unknown_field", "colour")
    status, answer = await problem(trader, "GET", "/v1/orders", params={"cursor": "x"})
    assert (status, answer["field"]) == (422, "cursor")
    assert (await trader.orders())["items"] == []
    assert (await trader.balances())["CNY"] == {"asset": "CNY", "available": "10", "held": "0"}


async def test_bodies_that_are_not_json_too_large_or_of_another_type(admin):
    status, body = await problem(admin, "POST", "/v1/accounts", content=b"{not json",
                                 headers={"Content-Type": "application/json"})
    assert (status, body["code"]) == (400, "malformed_body")
    status, body = await problem(admin, "POST", "/v1/accounts", content=b"[]",
                                 headers={"Content-Type": "application/json"})
    assert (status, body["code"]) == (422, "invalid_field")
    status, body = await problem(admin, "POST", "/v1/accounts", content=b"name=x",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body["code"]) == (415, "unsupported_media_type")
    huge = b'{"name": "' + b"x" * MAX_BODY + b'", "role": "trader"}'
    status, body = await problem(admin, "POST", "/v1/accounts", content=huge,
                                 headers={"Content-Type": "application/json"})
    assert (status, body["code"]) == (413, "body_too_large")
    status, body = await problem(admin, "POST", "/v1/instruments/X/halt", content=b'{"a": 1}')
    assert (status, body["code"]) == (400, "malformed_body")


async def test_a_streamed_body_over_the_limit_is_413(live):
    async def chunks():
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024

    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.post("/v1/accounts", content=chunks())
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"


async def test_business_rejections_change_nothing(market, new_account, admin):
    symbol, issuer = market
    account, trader = await new_account(cash="10")
    cases = [
        ({"type": "limit", "symbol": symbol, "side": "buy", "price": "5.00", "qty": 3}, 409, "insufficient_funds"),
        ({"type": "limit", "symbol": symbol, "side": "sell", "price": "5.00", "qty": 3}, 409, "insufficient_tokens"),
        ({"type": "limit", "symbol": "NO-SUCH", "side": "buy", "price": "1.00", "qty": 1}, 404, "unknown_instrument"),
        ({"type": "limit", "symbol": symbol, "side": "buy", "price": "1.00", "qty": 10**7}, 422, "qty_above_maximum"),
    ]
    before = await trader.balances()
    for body, status, code in cases:
        got, answer = await problem(trader, "POST", "/v1/orders", json=body)
        assert (got, answer["code"]) == (status, code)
    await issuer.place_order(symbol, "sell", price="2.00", qty=1)
    got, answer = await problem(trader, "POST", "/v1/orders", json={
        "type": "limit", "symbol": symbol, "side": "buy", "price": "2.00", "qty": 1, "post_only": True})
    assert (got, answer["code"]) == (409, "would_take")
    got, answer = await problem(admin, "POST", "/v1/withdrawals", json={"account_id": account["id"], "amount": "11"})
    assert (got, answer["code"]) == (409, "insufficient_funds")
    got, answer = await problem(admin, "POST", "/v1/accounts", json={"name": "admin", "role": "trader"})
    assert (got, answer["code"], answer["field"]) == (409, "name_taken", "name")
    assert await trader.balances() == before
    assert (await trader.orders())["items"] == []
    assert [e["kind"] for e in (await trader.ledger())["items"]] == ["deposit"]


@pytest.mark.parametrize("kind", ["compute", "dataset"])
async def test_instrument_listing_is_validated(admin, new_account, kind):
    issuer, _ = await new_account("issuer")
    base = {"kind": kind, "symbol": f"V-{kind.upper()}", "tick": "0.01"}
    extra = ({"model": "m", "substitution_group": "g", "quality": 50, "tokens_per_lot": 1000} if kind == "compute"
             else {"issuer_id": issuer["id"], "description": "d", "license": "l", "grants": "g", "supply_cap": 10})
    good = {**base, **extra}
    for bad, code, field in [
        ({**good, "tick": "0.0000001"}, "too_precise", "tick"),
        ({**good, "min_qty": 5, "max_qty": 2}, "out_of_range", "max_qty"),
        ({**good, "symbol": "CNY"}, "invalid_field", "symbol"),
        ({**good, "kind": "bond"}, "invalid_field", "kind"),
        ({**good, "maker_fee_bps": 10_001}, "invalid_field", "maker_fee_bps"),
    ]:
        status, answer = await problem(admin, "POST", "/v1/instruments", json=bad)
        assert (status, answer["code"], answer.get("field")) == (422, code, field), bad
    if kind == "dataset":
        status, answer = await problem(admin, "POST", "/v1/instruments", json={**good, "issuer_id": 1})
        assert (status, answer["field"]) == (422, "issuer_id")
        status, answer = await problem(admin, "POST", "/v1/instruments", json={**good, "description": "a\0b"})
        assert (status, answer["field"]) == (422, "description")
    created = await admin.create_instrument(**good)
    assert created["symbol"] == good["symbol"] and created["tick"] == "0.01" and created["status"] == "trading"
    status, answer = await problem(admin, "POST", "/v1/instruments", json=good)
    assert (status, answer["code"]) == (409, "symbol_taken")
