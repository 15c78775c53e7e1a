"""Orders and fills of the signing key's own account: place, list, get, cancel, amend.

The acting account is always the key's: no body field names it, and an order of another account is answered
exactly as an order that does not exist (404 ``unknown_order``).

A command's answer is the engine's view of the order right after the commit (``OrderView``): status, filled
quantity and notional, fees, and the fills this command made. Reads come from the committed rows.
"""

from datetime import UTC, datetime

from api import schemas
from api.endpoints import Call, Endpoints, id_page, money
from api.problems import Problem
from api.routes.reads import with_fills, with_their_fills
from api.units import from_micro
from exchange.commands import AmendOrder, CancelAll, Cancelled, CancelOrder, Done, OrderView, PlaceOrder
from exchange.database.queries import sql
from matching.types import IOC

orders = Endpoints("orders")

ORDER_ID = {"order_id": (schemas.Id, "unknown_order")}
BY_ID = sql("order_of_account")
BY_IDS = sql("orders_by_ids")
BY_CLIENT_ID = sql("order_by_client_id")
LIST = sql("orders_page")
FILLS = sql("fills_page")


async def read_order(call: Call, row) -> schemas.OrderWithFills:
    """The committed order of ``row`` with all its fills."""
    if not row["filled_qty"]:
        return with_fills(schemas.order_from_row(row), [])
    async with call.services.connection() as conn:
        return (await with_their_fills(conn, call.account_id, [row]))[0]


async def fetch_order(call: Call, order_id: int) -> schemas.OrderWithFills:
    async with call.services.connection() as conn:
        row = await conn.fetchrow(BY_ID, order_id, call.account_id)
    if row is None:
        raise Problem("unknown_order", field="order_id")
    return await read_order(call, row)


async def answer(call: Call, result: OrderView | Done) -> schemas.OrderWithFills:
    """The order a command answered with; from the database when the engine no longer holds all of it."""
    if isinstance(result, Done):
        return await fetch_order(call, result.id)
    fills = [schemas.OrderFill(f.fill_id, from_micro(f.price), f.qty, from_micro(f.fee), f.role) for f in result.fills]
    if sum(f.qty for f in fills) != result.filled_qty:
        # A replayed client_order_id: the view carries no fills of earlier commands.
        return await fetch_order(call, result.id)
    return with_fills(schemas.order_from_view(result), fills)


@orders.route("POST", "/v1/orders", summary="Place an order", scope="trade", body=schemas.NewOrder,
              response=schemas.OrderWithFills, status=201,
              errors=("unknown_instrument", "not_permitted", "instrument_halted", "insufficient_funds",
                      "insufficient_tokens", "off_tick_price", "invalid_price", "invalid_qty", "invalid_budget",
                      "invalid_stp_mode", "post_only_requires_gtc", "would_take",
                      "qty_below_minimum", "qty_above_maximum", "too_precise", "invalid_decimal", "out_of_range"))
async def place_order(call: Call) -> schemas.OrderWithFills:
    """Place a limit or a market order (``type``) for the key's account. The answer comes after the commit, with
    the order as it then stands (status, filled quantity, average price) and the fills it made. Sending a
    ``client_order_id`` again returns the original order and changes nothing."""
    body: schemas.NewOrder = call.body
    if isinstance(body, schemas.NewLimitOrder):
        price = money(body.price, "price", schemas.MAX_PRICE)
        command = PlaceOrder(call.account_id, body.symbol, body.side, "limit", price, body.qty, None, body.tif,
                             body.post_only, body.stp, body.client_order_id)
    else:
        if (body.qty is None) == (body.budget is None):
            raise Problem("invalid_field", "A market order takes either qty or (buy only) budget.", field="qty")
        budget = None if body.budget is None else money(body.budget, "budget", schemas.MAX_AMOUNT)
        command = PlaceOrder(call.account_id, body.symbol, body.side, "market", None, body.qty, budget, IOC,
                             False, body.stp, body.client_order_id)
    return await answer(call, await call.submit(command))


@orders.route("GET", "/v1/orders", summary="List own orders", scope="read", query=schemas.OrderQuery,
              response=schemas.OrderPage, errors=("invalid_cursor",))
async def list_orders(call: Call) -> schemas.OrderPage:
    """Own orders, newest first; filter by status (open, closed, all), symbol and side."""
    query: schemas.OrderQuery = call.query
    status = None if query.status == "all" else query.status
    rows, next_cursor = await id_page(call, LIST, call.account_id, status, query.symbol, query.side, replica=True)
    return schemas.OrderPage([schemas.order_from_row(row) for row in rows], next_cursor)


@orders.route("GET", "/v1/orders/{order_id}", summary="Get an order", scope="read", response=schemas.OrderWithFills,
              errors=("unknown_order",), params=ORDER_ID)
async def get_order(call: Call) -> schemas.OrderWithFills:
    """One own order, open or closed, with all its fills."""
    return await fetch_order(call, call.params["order_id"])


@orders.route("GET", "/v1/orders/by-client-id/{client_order_id}", summary="Get an order by client order id",
              scope="read", response=schemas.OrderWithFills, errors=("unknown_order",),
              params={"client_order_id": (schemas.ClientOrderId, "unknown_order")})
async def get_order_by_client_id(call: Call) -> schemas.OrderWithFills:
    """One own order by the client_order_id it was placed with."""
    async with call.services.connection() as conn:
        row = await conn.fetchrow(BY_CLIENT_ID, call.account_id, call.params["client_order_id"])
    if row is None:
        raise Problem("unknown_order", field="client_order_id")
    return await read_order(call, row)


@orders.route("DELETE", "/v1/orders/{order_id}", summary="Cancel an order", scope="trade", response=schemas.Order,
              errors=("unknown_order",), params=ORDER_ID)
async def cancel_order(call: Call) -> schemas.Order:
    """Cancel one open order of this account; what it held is released."""
    result = await call.submit(CancelOrder(call.account_id, call.params["order_id"]))
    if isinstance(result, Done):
        return await fetch_order(call, result.id)
    return schemas.order_from_view(result)


@orders.route("DELETE", "/v1/orders", summary="Cancel all orders in an instrument", scope="trade",
              query=schemas.CancelAllQuery, response=schemas.CancelledOrders, errors=("unknown_instrument",))
async def cancel_all(call: Call) -> schemas.CancelledOrders:
    """Cancel every open order of this account in ``symbol``; answers the ids cancelled."""
    result = await call.submit(CancelAll(call.account_id, call.query.symbol))
    assert isinstance(result, Cancelled)
    return schemas.CancelledOrders(result.order_ids)


@orders.route("PATCH", "/v1/orders/{order_id}", summary="Amend an order", scope="trade", body=schemas.OrderAmendment,
              response=schemas.Order, params=ORDER_ID,
              errors=("unknown_order", "instrument_halted", "insufficient_funds", "insufficient_tokens",
                      "off_tick_price", "invalid_price", "invalid_qty", "qty_not_above_filled", "qty_above_maximum",
                      "no_change", "too_precise", "invalid_decimal", "out_of_range"))
async def amend_order(call: Call) -> schemas.Order:
    """Change an open limit order's price and/or total quantity. Lowering only the quantity keeps its place in
    the queue; a new price or a larger quantity sends it to the back (and a new price may trade at once)."""
    body: schemas.OrderAmendment = call.body
    price = None if body.price is None else money(body.price, "price", schemas.MAX_PRICE)
    result = await call.submit(AmendOrder(call.account_id, call.params["order_id"], price, body.qty))
    if isinstance(result, Done):
        return await fetch_order(call, result.id)
    return schemas.order_from_view(result)


@orders.route("GET", "/v1/fills", summary="List own fills", scope="read", query=schemas.FillQuery,
              response=schemas.FillPage, errors=("invalid_cursor",))
async def list_fills(call: Call) -> schemas.FillPage:
    """This account's fills, newest first, each with this account's side, role and fee."""
    query: schemas.FillQuery = call.query
    after, before_id = (None, None) if query.cursor is None else fill_cursor(query.cursor)
    async with call.services.read_connection() as conn:
        rows = await conn.fetch(FILLS, call.account_id, after, before_id, query.symbol, query.limit + 1)
    items = [
        schemas.Fill(row["id"], row["order_id"], row["symbol"], row["side"], row["role"], from_micro(row["price"]),
             row["qty"], from_micro(row["fee"]), row["seq"], row["created_at"])
        for row in rows[: query.limit]
    ]
    next_cursor = None
    if len(rows) > query.limit:
        last = items[-1]
        micros = (last.created_at - EPOCH) // MICROSECOND
        next_cursor = f"{micros}-{last.id}"
    return schemas.FillPage(items, next_cursor)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = datetime.resolution


def fill_cursor(cursor: str) -> tuple[datetime, int]:
    micros, _, fill_id = cursor.partition("-")
    if not (micros.isdecimal() and fill_id.isdecimal()) or int(fill_id) > 2**63 - 1 or int(micros) > 2**52:
        raise Problem("invalid_cursor", "Pass the next_cursor of the previous page as it was.")
    return EPOCH + int(micros) * MICROSECOND, int(fill_id)
