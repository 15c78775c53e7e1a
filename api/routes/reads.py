"""Reads that more than one route module answers with: orders with their fills, and what a journal entry moved."""

from api import schemas
from api.endpoints import Call
from api.units import from_micro
from exchange.database.queries import sql

ORDER_FILLS = sql("order_fills")
MOVEMENT = sql("entry_movement")


def with_fills(order: schemas.Order, fills: list[schemas.OrderFill]) -> schemas.OrderWithFills:
    return schemas.OrderWithFills(*(getattr(order, name) for name in schemas.Order.__struct_fields__), fills)


async def with_their_fills(conn, account_id: int, rows) -> list[schemas.OrderWithFills]:
    """The committed orders of ``rows`` (of ``account_id``) with all their fills, read in one query."""
    traded = [row["id"] for row in rows if row["filled_qty"]]
    fills: dict[int, list[schemas.OrderFill]] = {}
    if traded:
        for order_id, fill_id, price, qty, fee, role in await conn.fetch(ORDER_FILLS, account_id, traded):
            fill = schemas.OrderFill(fill_id, from_micro(price), qty, from_micro(fee), role)
            fills.setdefault(order_id, []).append(fill)
    return [with_fills(schemas.order_from_row(row), fills.get(row["id"], [])) for row in rows]


async def movement(call: Call, account_id: int, entry_id: int) -> schemas.Movement:
    """What journal entry ``entry_id`` (a deposit, withdrawal, mint or burn) moved in or out of ``account_id``."""
    async with call.services.connection() as conn:
        asset, amount = await conn.fetchrow(MOVEMENT, account_id, entry_id)
    return schemas.Movement(account_id, asset, schemas.asset_amount(asset, amount))
