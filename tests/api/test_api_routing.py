"""Routed orders, quotes and token packages over HTTP against a live server."""

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from api.client import ApiError, Client
from tests.support.api_server import unique


@pytest.fixture
async def group(admin: Client, new_account):
    """A group of three compute books with the issuer's asks: (group, {symbol: quality}, issuer)."""
    name = unique("grp")
    account, issuer = await new_account("issuer", cash="1000")
    books = {}
    for quality, price in ((90, "2.00"), (70, "1.50"), (30, "1.00")):
        symbol = unique("R").upper()
        await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="m", substitution_group=name,
                                      quality=quality, tokens_per_lot=1_000_000)
        await admin.approve_issuer(account["id"], symbol, 100_000)
        await issuer.mint(symbol, 1000)
        await issuer.place_order(symbol, "sell", price=price, qty=10)
        books[symbol] = quality
    return name, books, issuer


async def test_the_quote_equals_the_routed_order_and_the_children_are_real_orders(group, new_account):
    name, books, _ = group
    _, buyer = await new_account(cash="100")
    high, mid, low = books

    quote = await buyer.routed_quote(name, "buy", 25, "quality", price="2.00")
    routed = await buyer.route_order(name, "buy", 25, "quality", price="2.00")

    assert [(leg["symbol"], leg["qty"], leg["price"]) for leg in quote["legs"]] == \
        [(high, 10, "2"), (mid, 10, "1.5"), (low, 5, "1")]
    assert [(c["symbol"], c["filled_qty"], c["tif"], c["status"]) for c in routed["children"]] == \
        [(leg["symbol"], leg["qty"], "IOC", "filled") for leg in quote["legs"]]
    assert [c["fee"] for c in routed["children"]] == [leg["fee"] for leg in quote["legs"]]
    assert routed["filled_notional"] == quote["filled_notional"] == "40"
    assert routed["average_price"] == quote["average_price"] == "1.6"
    assert routed["average_quality"] == quote["average_quality"] == "70.00"  # (900 + 700 + 150) / 25
    assert routed["fee"] == quote["fee"] and routed["remainder"] == quote["remainder"] == 0
    assert routed["status"] == "filled"

    assert await buyer.routed_order(routed["id"]) == routed
    [listed] = (await buyer.routed_orders())["items"]
    assert listed == {name: value for name, value in routed.items() if name != "children"}
    assert listed["order_ids"] == [c["id"] for c in routed["children"]]
    for child in routed["children"]:
        assert (await buyer.order(child["id"]))["fills"] == child["fills"]
    balances = await buyer.balances()
    assert balances["CNY"]["held"] == "0"
    assert Decimal(balances["CNY"]["available"]) == 100 - Decimal(quote["cost"])
    assert {symbol: balances[symbol]["available"] for symbol in books} == {high: "10", mid: "10", low: "5"}


async def test_the_remainder_rests_only_when_asked(group, new_account):
    name, books, _ = group
    _, buyer = await new_account(cash="100")
    high = next(iter(books))
    quote = await buyer.routed_quote(name, "buy", 12, "cost", price="1.00", rest_remainder=True)
    assert quote["resting"] == {"symbol": high, "price": "1", "qty": 2}
    routed = await buyer.route_order(name, "buy", 12, "cost", price="1.00", rest_remainder=True)
    assert routed["status"] == "partially_filled" and routed["remainder"] == 2
    resting = await buyer.order(routed["resting_order_id"])
    assert (resting["symbol"], resting["status"], resting["tif"], resting["open_qty"]) == (high, "open", "GTC", 2)

    expired = await buyer.route_order(name, "buy", 5, "cost", price="0.50")
    assert expired["status"] == "unfilled" and expired["children"] == [] and expired["resting_order_id"] is None


async def test_a_routed_orders_client_order_id_replay_returns_the_original_and_trades_nothing(group, new_account):
    name, _, _ = group
    _, buyer = await new_account(cash="100")
    first = await buyer.route_order(name, "buy", 12, "cost", price="2.00", client_order_id="route.1")
    assert first["client_order_id"] == "route.1" and first["filled_qty"] == 12
    balances = await buyer.balances()

    again = await buyer.route_order(name, "buy", 3, "quality", price="2.00", client_order_id="route.1")

    assert again == first
    assert await buyer.balances() == balances
    assert [item["id"] for item in (await buyer.routed_orders())["items"]] == [first["id"]]


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ({"group": "no-such-group", "price": "1"}, 404, "unknown_group", "group"),
    ({"mode": "cheapest", "price": "1"}, 422, "invalid_field", "mode"),
    ({}, 422, "limit_or_budget_required", "price"),
    ({"qty": 0, "price": "1"}, 422, "invalid_field", "qty"),
    ({"side": "sell", "budget": "5"}, 422, "invalid_route_budget", "budget"),
    ({"budget": "5", "rest_remainder": True}, 422, "rest_requires_price", "rest_remainder"),
    ({"price": "1.0000001"}, 422, "too_precise", "price"),
    ({"price": "2", "qty": 30}, 409, "insufficient_funds", None),
    ({"side": "sell", "price": "1"}, 409, "insufficient_tokens", None),
])
async def test_bad_routed_orders_get_a_stable_code_and_change_nothing(group, new_account, body, status, code, field):
    name, _, _ = group
    _, buyer = await new_account(cash="10")
    request = {"group": name, "side": "buy", "qty": 5, "mode": "cost", **body}
    before = await buyer.balances()
    response = await buyer.request("POST", "/v1/routed-orders", json=request)
    assert response.status_code == status, response.text
    problem = response.json()
    assert (problem["code"], problem.get("field")) == (code, field) and problem["detail"]
    assert await buyer.balances() == before
    assert (await buyer.orders())["items"] == []
    if code not in ("insufficient_funds", "insufficient_tokens"):
        # The quote refuses the same parameters the same way.
        quoted = await buyer.request("GET", "/v1/routed-quote", params=request)
        assert (quoted.status_code, quoted.json()["code"]) == (status, code)


async def test_another_accounts_routed_order_is_unknown(group, new_account):
    name, _, _ = group
    _, buyer = await new_account(cash="100")
    _, other = await new_account(cash="100")
    routed = await buyer.route_order(name, "buy", 1, "cost", price="2")
    with pytest.raises(ApiError) as error:
        await other.routed_order(routed["id"])
    assert (error.value.status, error.value.code) == (404, "unknown_routed_order")


async def executions_of(client: Client, package_id: int, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        items = (await client.package_executions(package_id))["items"]
        if len(items) >= count or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.05)


async def test_a_package_runs_its_current_period_and_can_be_paused_resumed_and_cancelled(group, new_account):
    name, books, _ = group
    _, buyer = await new_account(cash="100")
    start = (datetime.now(UTC) - timedelta(days=2, hours=1)).isoformat()
    package = await buyer.create_package(name, 2, "cost", "day", max_cost="2.5", start_at=start)
    assert package["status"] == "active" and package["next_period"] == 2  # the periods already over are skipped

    [execution] = await executions_of(buyer, package["id"], 1)
    assert execution["period"] == 2 and execution["reason"] is None
    assert execution["filled_qty"] == 2 and Decimal(execution["filled_notional"]) + Decimal(execution["fee"]) <= 2.5
    routed = await buyer.routed_order(execution["routed_order_id"])
    assert routed["package_id"] == package["id"] and routed["children"][0]["symbol"] == list(books)[-1]
    stored = await buyer.package(package["id"])
    assert stored["next_period"] == 3 and stored["next_run_at"] > package["start_at"]
    assert [p["id"] for p in await buyer.packages()] == [package["id"]]

    assert (await buyer.pause_package(package["id"]))["status"] == "paused"
    assert (await buyer.pause_package(package["id"]))["next_run_at"] is None
    assert (await buyer.resume_package(package["id"]))["status"] == "active"
    assert (await buyer.cancel_package(package["id"]))["status"] == "cancelled"
    with pytest.raises(ApiError) as error:
        await buyer.resume_package(package["id"])
    assert (error.value.status, error.value.code) == (409, "package_cancelled")
    assert len((await buyer.package_executions(package["id"]))["items"]) == 1


async def test_a_package_that_cannot_pay_records_why(group, new_account):
    name, _, _ = group
    _, poor = await new_account(cash="0.5")
    package = await poor.create_package(name, 1, "quality", "week", max_cost="100",
                                        start_at=datetime.now(UTC).isoformat())
    [execution] = await executions_of(poor, package["id"], 1)
    assert (execution["reason"], execution["routed_order_id"], execution["filled_qty"]) == \
        ("insufficient_funds", None, 0)


@pytest.mark.parametrize(("change", "code", "field"), [
    ({"group": "no-such-group"}, "unknown_group", "group"),
    ({"period": "hour"}, "invalid_field", "period"),
    ({"max_cost": "0"}, "invalid_decimal", "max_cost"),
    ({"start_at": "2026-12-01T09:00:00"}, "invalid_field", "start_at"),
])
async def test_bad_packages_are_refused(group, new_account, change, code, field):
    name, _, _ = group
    _, buyer = await new_account(cash="10")
    body = {"group": name, "qty": 1, "mode": "cost", "period": "day", "max_cost": "5",
            "start_at": "2026-12-01T09:00:00Z", **change}
    response = await buyer.request("POST", "/v1/packages", json=body)
    assert (response.json()["code"], response.json().get("field")) == (code, field)
    assert await buyer.packages() == []
