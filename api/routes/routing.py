"""Routed orders: buy or sell lots across the books of a substitution group (their quote: ``api.routes.routed_quote``).

``POST /v1/routed-orders`` is one engine command (``exchange.routed_orders``): the answer comes after its commit,
with the child orders as ``GET /v1/orders/{id}`` shows them.
"""

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints, id_page, money
from api.problems import Problem
from api.routes.reads import with_their_fills
from api.units import from_micro
from exchange import records
from exchange.commands import Done, RouteOrder
from exchange.database.queries import sql

routing = Endpoints("routed orders")

ROUTED_ID = {"routed_order_id": (schemas.Id, "unknown_routed_order")}
ERRORS = ("unknown_group", "invalid_route_mode", "limit_or_budget_required", "invalid_route_budget",
          "rest_requires_price", "off_tick_price", "invalid_qty", "too_precise", "invalid_decimal", "out_of_range")

ROUTED_ORDER = sql("routed_order_of_account")
ROUTED_ORDERS = sql("routed_orders_page")
ORDERS_BY_IDS = sql("orders_by_ids")


class RoutedOrderQuery(schemas.Request):
    """``qty`` lots of any instrument of ``group``, routed by ``mode``: ``cost`` (lowest price first for a buy,
    highest for a sell), ``quality`` (highest quality first) or ``balance`` (lowest price per quality point first
    for a buy). Give a limit ``price`` per lot, a total ``budget`` (buys only, fees included), or both. With
    ``rest_remainder`` (needs ``price``) what is left rests as a GTC limit on the best book."""

    group: schemas.Text
    side: schemas.Side
    qty: schemas.Qty
    mode: schemas.Mode
    price: schemas.Decimal | None = None
    budget: schemas.Decimal | None = None
    rest_remainder: bool = False


class RoutedOrderRequest(RoutedOrderQuery):
    """A routed order as quoted, and the client's own id for it: sending the same ``client_order_id`` again
    returns the routed order it made the first time, and trades nothing."""

    client_order_id: schemas.ClientOrderId | None = None


class RoutedOrderSummary(Struct):
    id: int
    client_order_id: str | None
    group: str
    side: schemas.Side
    mode: schemas.Mode
    qty: int
    price: str | None
    budget: str | None
    rest_remainder: bool
    status: Literal["filled", "partially_filled", "unfilled"]
    filled_qty: int
    filled_notional: str
    average_price: Annotated[str | None, Meta(description="filled_notional / filled_qty over every child, rounded "
                                                          "half-even to the micro-yuan; null before a fill.")]
    average_quality: Annotated[str | None, Meta(description="Quality averaged over the lots filled, to 2 "
                                                            "decimals; null before a fill.")]
    fee: str
    remainder: Annotated[int, Meta(description="Lots not filled by the sweep (resting or expired).")]
    resting_order_id: int | None
    package_id: int | None
    created_at: datetime
    order_ids: Annotated[list[int], Meta(description="The child orders in the order they executed; the resting "
                                                     "one last.")]


class RoutedOrder(RoutedOrderSummary):
    children: list[schemas.OrderWithFills]


class RoutedOrderPage(Struct):
    items: list[RoutedOrderSummary]
    next_cursor: str | None


def command(account_id: int, request: RoutedOrderQuery, client_order_id: str | None = None) -> RouteOrder:
    price = None if request.price is None else money(request.price, "price", schemas.MAX_PRICE)
    budget = None if request.budget is None else money(request.budget, "budget", schemas.MAX_AMOUNT)
    return RouteOrder(account_id, request.group, request.side, request.qty, request.mode, price, budget,
                      request.rest_remainder, client_order_id)


@routing.route("POST", "/v1/routed-orders", summary="Place a routed order", scope="trade", body=RoutedOrderRequest,
               response=RoutedOrder, status=201,
               errors=(*ERRORS, "not_permitted", "insufficient_funds", "insufficient_tokens"))
async def place_routed_order(call: Call) -> RoutedOrder:
    """Sweep the group's books with immediate-or-cancel child orders under one hold, committed as one command.
    Halted instruments are skipped. The answer, after the commit, has every child with its fills, the blended
    average price, the average quality and the remainder. Sending a ``client_order_id`` again returns the
    routed order it made, as it stands now."""
    result = await call.submit(command(call.account_id, call.body, call.body.client_order_id))
    assert isinstance(result, records.RoutedOrder | Done)  # Done: a replayed client_order_id
    return await fetch_routed(call, result.id)


@routing.route("GET", "/v1/routed-orders/{routed_order_id}", summary="Get a routed order", scope="read",
               response=RoutedOrder, errors=("unknown_routed_order",), params=ROUTED_ID)
async def get_routed_order(call: Call) -> RoutedOrder:
    """One own routed order with its child orders as they stand now."""
    return await fetch_routed(call, call.params["routed_order_id"])


@routing.route("GET", "/v1/routed-orders", summary="List own routed orders", scope="read", query=schemas.PageQuery,
               response=RoutedOrderPage, errors=("invalid_cursor",))
async def list_routed_orders(call: Call) -> RoutedOrderPage:
    """Own routed orders, newest first, with their child order ids (``GET /v1/routed-orders/{id}`` has the rest)."""
    rows, next_cursor = await id_page(call, ROUTED_ORDERS, call.account_id, replica=True)
    return RoutedOrderPage([summary(records.RoutedOrder(**row)) for row in rows], next_cursor)


def summary(routed: records.RoutedOrder) -> RoutedOrderSummary:
    return RoutedOrderSummary(
        routed.id, routed.client_order_id, routed.substitution_group, routed.side, routed.mode, routed.qty,
        schemas.optional_price(routed.price), schemas.optional_price(routed.budget), routed.rest_remainder,
        routed.status, routed.filled_qty, from_micro(routed.filled_notional),
        schemas.average_price(routed.filled_notional, routed.filled_qty),
        schemas.average_quality(routed.quality_lots, routed.filled_qty), from_micro(routed.fee), routed.remainder,
        routed.resting_order_id, routed.package_id, routed.created_at, routed.order_ids,
    )


async def fetch_routed(call: Call, routed_id: int) -> RoutedOrder:
    """A routed order and its children with their fills: three queries on one connection, however many children."""
    async with call.services.connection() as conn:
        row = await conn.fetchrow(ROUTED_ORDER, routed_id, call.account_id)
        if row is None:
            raise Problem("unknown_routed_order", field="routed_order_id")
        rows = await conn.fetch(ORDERS_BY_IDS, row["order_ids"], call.account_id)
        by_id = {child.id: child for child in await with_their_fills(conn, call.account_id, rows)}
    children = [by_id[order_id] for order_id in row["order_ids"]]
    found = summary(records.RoutedOrder(**row))
    return RoutedOrder(*(getattr(found, name) for name in RoutedOrderSummary.__struct_fields__), children)
