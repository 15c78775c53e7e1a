"""The quote of a routed order: what ``POST /v1/routed-orders`` (``api.routes.routing``) would do now.

``GET /v1/routed-quote`` plans the order (``exchange.route_planner``) over what is committed: the market view's books
(``DEPTH_LEVELS`` per book), the instruments' status and the account's fee tier and tokens; it trades nothing and
holds nothing. Given the same books, the quote and the execution take the same lots at the same prices and fees.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints
from api.problems import Problem
from api.routes.routing import ERRORS, RoutedOrderQuery, command
from api.units import from_micro
from exchange import fees, route_planner
from exchange.database.queries import sql
from matching.types import BUY

GROUP = sql("group_instruments")
TOKENS = sql("token_balances")
DAILY_VOLUME = sql("daily_volume")

quoting = Endpoints("routed orders")


class QuoteLeg(Struct):
    symbol: str
    quality: int
    qty: int
    price: Annotated[str, Meta(description="The worst price taken on this book: the child's IOC limit.")]
    notional: str
    average_price: str | None
    fee: str


class QuoteRest(Struct):
    symbol: str
    price: str
    qty: int


class RoutedQuote(Struct):
    group: str
    side: schemas.Side
    mode: schemas.Mode
    qty: int
    legs: list[QuoteLeg]
    filled_qty: int
    filled_notional: str
    fee: str
    cost: Annotated[str, Meta(description="For a buy, filled_notional + fee; for a sell, filled_notional - fee.")]
    average_price: str | None
    average_quality: str | None
    remainder: int
    resting: QuoteRest | None


@quoting.route("GET", "/v1/routed-quote", summary="Quote a routed order", scope="read", query=RoutedOrderQuery,
               response=RoutedQuote, errors=ERRORS)
async def quote_routed_order(call: Call) -> RoutedQuote:
    """What ``POST /v1/routed-orders`` with the same parameters would do now: the lots, books, prices and fees
    of each child, the average quality and the remainder. Nothing is traded or held."""
    request = command(call.account_id, call.query)
    now = datetime.now(UTC)
    since = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=fees.WINDOW_DAYS - 1)
    async with call.services.connection() as conn:
        instruments = await conn.fetch(GROUP, request.group)
        tokens = dict(await conn.fetch(TOKENS, call.account_id, [row["symbol"] for row in instruments]))
        days = await conn.fetch(DAILY_VOLUME, call.account_id, since)
        percent = fees.tier_percent(sum(day["notional"] for day in days))
    books = call.services.market.books
    venues = []
    for row in instruments:
        if row["status"] != "trading":
            continue
        view = books.get(row["symbol"])
        bids, asks = view.depth(route_planner.DEPTH_LEVELS) if view is not None else ([], [])
        venues.append(route_planner.Venue(
            row["symbol"], row["quality"], row["tick"], row["min_qty"], row["max_qty"],
            fees.rate_ppm(row["maker_fee_bps"], percent), fees.rate_ppm(row["taker_fee_bps"], percent),
            asks if request.side == BUY else bids, None if request.side == BUY else tokens.get(row["symbol"], 0),
        ))
    code = route_planner.refusal(venues, request.side, request.qty, request.mode, request.price, request.budget,
                          request.rest_remainder)
    if code is None and not instruments:
        code = "unknown_group"
    if code is not None:
        raise Problem(code)
    plan = route_planner.plan(venues, request.side, request.qty, request.mode, request.price, request.budget,
                       request.rest_remainder)
    legs = [QuoteLeg(leg.symbol, leg.quality, leg.qty, from_micro(leg.price), from_micro(leg.notional),
                     schemas.average_price(leg.notional, leg.qty), from_micro(leg.fee)) for leg in plan.legs]
    notional, fee = plan.notional, plan.fee
    rest = plan.rest
    return RoutedQuote(
        request.group, request.side, request.mode, request.qty, legs, plan.filled_qty, from_micro(notional),
        from_micro(fee), from_micro(notional + fee if request.side == BUY else notional - fee),
        schemas.average_price(notional, plan.filled_qty), schemas.average_quality(plan.quality_lots, plan.filled_qty),
        plan.remainder, None if rest is None else QuoteRest(rest.symbol, from_micro(rest.price), rest.qty),
    )
