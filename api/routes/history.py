"""Public market history: an instrument's trades and candles, read from the persisted fills.

Trades
------
``GET /v1/instruments/{symbol}/trades`` lists fills as public trades: ``id`` (the fill id, also the ``id`` of
the feed's trades), price, lots, the taker's ``side``, the instrument's ``seq`` and the time. Pages go newest
first (``order=desc``, the default) or oldest first (``order=asc``); ``cursor`` is a trade id, exclusive: the
``next_cursor`` of a page, or any id to start from, so a client that saw trade 1234 on the feed catches up with
``order=asc&cursor=1234``. ``start`` and ``end`` (RFC 3339 with a zone, end exclusive) bound the time.

Candles
-------
``GET /v1/instruments/{symbol}/candles?interval=1m`` (``1m``, ``5m``, ``1h``, ``1d``; bins start at whole UTC
minutes, hours and days): open, high, low, close, volume in lots, notional in CNY and the volume-weighted average
price, oldest first. Every bin of the range is listed; a bin without trades says so (``volume`` 0, ``notional``
"0", prices null): nothing is carried over or invented. Without ``start`` the answer is the ``limit`` bins up to
the current one (or up to ``end``); with ``start`` it is at most ``limit`` bins from the one holding ``start``.
The feed's ``candles`` channel sends the same object as it changes.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints
from api.problems import Problem, known
from api.units import from_micro
from exchange.database.queries import sql

history = Endpoints("market data")

TradeId = Annotated[str, schemas.whole(r"[0-9]{1,18}", description="A trade id, exclusive: the next_cursor of the "
                                                           "previous page, or any trade id to page from.")]


class TradeQuery(schemas.Request):
    order: Literal["desc", "asc"] = "desc"
    cursor: TradeId | None = None
    start: schemas.Time | None = None
    end: schemas.Time | None = None
    limit: schemas.Limit = 100


class CandleQuery(schemas.Request):
    interval: schemas.Interval = "1m"
    start: schemas.Time | None = None
    end: schemas.Time | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 300


class Trade(Struct):
    id: int
    price: str
    qty: int
    side: Annotated[schemas.Side, Meta(description="The taker's side.")]
    seq: int
    created_at: datetime


class TradePage(Struct):
    items: list[Trade]
    next_cursor: str | None


class CandleList(Struct):
    symbol: str
    interval: schemas.Interval
    items: list[schemas.Candle]


INSTRUMENT_ID = sql("instrument_id_by_symbol")
TRADES_DESC = sql("trades_desc")
TRADES_ASC = sql("trades_asc")
CANDLES = sql("candles")


def floor(moment: datetime, interval: timedelta) -> datetime:
    """The start of the bin of ``interval`` that holds ``moment``."""
    return schemas.ORIGIN + (moment - schemas.ORIGIN) // interval * interval


async def instrument_id(call: Call, conn, symbol: str) -> int:
    return known(await conn.fetchval(INSTRUMENT_ID, symbol), "unknown_instrument", "symbol")


@history.route("GET", "/v1/instruments/{symbol}/trades", summary="Trades", query=TradeQuery, response=TradePage,
               errors=("unknown_instrument",), params=schemas.SYMBOL_PARAM)
async def trades(call: Call) -> TradePage:
    """Public trades (fills) of the instrument, newest first unless ``order=asc``; ``cursor`` is a trade id,
    exclusive. ``side`` is the taker's."""
    query: TradeQuery = call.query
    cursor = None if query.cursor is None else int(query.cursor)
    async with call.services.read_connection() as conn:
        found = await instrument_id(call, conn, call.params["symbol"])
        rows = await conn.fetch(TRADES_ASC if query.order == "asc" else TRADES_DESC, found, cursor, query.start,
                                query.end, query.limit + 1)
    items = [Trade(row["id"], from_micro(row["price"]), row["qty"], row["taker_side"], row["seq"], row["created_at"])
             for row in rows[: query.limit]]
    return TradePage(items, str(items[-1].id) if len(rows) > query.limit else None)


@history.route("GET", "/v1/instruments/{symbol}/candles", summary="Candles", query=CandleQuery, response=CandleList,
               errors=("unknown_instrument", "out_of_range"), params=schemas.SYMBOL_PARAM)
async def candles(call: Call) -> CandleList:
    """OHLC, volume, notional and VWAP per bin of ``interval``, computed from the fills, oldest first. Every bin
    of the range is listed; one without trades has volume 0 and null prices."""
    query: CandleQuery = call.query
    interval = schemas.INTERVALS[query.interval]
    if query.start is not None and query.end is not None and query.end <= query.start:
        raise Problem("out_of_range", "end must be after start.", field="end")
    try:
        if query.start is not None:
            first = floor(query.start, interval)
            stop = first + query.limit * interval
            if query.end is not None:
                stop = min(stop, floor(query.end - timedelta.resolution, interval) + interval)
        else:
            end = query.end if query.end is not None else datetime.now(UTC) + timedelta.resolution
            stop = floor(end - timedelta.resolution, interval) + interval
            first = stop - query.limit * interval
    except OverflowError:
        raise Problem("out_of_range", "The range reaches past the dates the server can represent.",
                      field="start" if query.start is not None else "end") from None
    async with call.services.read_connection() as conn:
        found = await instrument_id(call, conn, call.params["symbol"])
        rows = await conn.fetch(CANDLES, found, interval, first, stop, schemas.ORIGIN)
    traded = {row["start"]: schemas.candle(row["start"], row["open"], row["high"], row["low"], row["close"],
                                           row["volume"], int(row["notional"])) for row in rows}
    items = []
    start = first
    while start < stop:
        items.append(traded.get(start) or schemas.empty_candle(start))
        start += interval
    return CandleList(call.params["symbol"], query.interval, items)
