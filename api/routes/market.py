"""Public market data: an instrument's order book by price level, and its ticker, as last committed."""

import time

from api import schemas
from api.endpoints import Call, Endpoints
from api.marketdata import LOAD_INSTRUMENTS, MINUTE_US, BookView
from api.problems import known
from api.units import from_micro

market = Endpoints("market data")


async def book_view(call: Call, symbol: str) -> BookView:
    return known(await call.services.market.view_of(call.services.connection, symbol), "unknown_instrument", "symbol")


@market.route("GET", "/v1/instruments/{symbol}/book", summary="Order book", query=schemas.BookQuery,
              response=schemas.Book, errors=("unknown_instrument",), params=schemas.SYMBOL_PARAM)
async def book(call: Call) -> schemas.Book:
    """Total lots per price level, best first, as of sequence number ``seq`` (the feed's numbering)."""
    symbol = call.params["symbol"]
    view = await book_view(call, symbol)
    bids, asks = view.depth(call.query.depth)
    return schemas.Book(symbol, view.seq, [schemas.Level(from_micro(p), q) for p, q in bids],
                [schemas.Level(from_micro(p), q) for p, q in asks])


@market.route("GET", "/v1/instruments/{symbol}/ticker", summary="Ticker", response=schemas.Ticker,
              errors=("unknown_instrument",), params=schemas.SYMBOL_PARAM)
async def ticker(call: Call) -> schemas.Ticker:
    """Best bid and ask, the last trade, and the trailing 24 hours (by whole minutes)."""
    symbol = call.params["symbol"]
    return ticker_of(symbol, await book_view(call, symbol), time.time_ns() // 1000 // MINUTE_US)


@market.route("GET", "/v1/tickers", summary="Every ticker", response=schemas.TickerList)
async def tickers(call: Call) -> schemas.TickerList:
    """The ticker of every instrument, trading or halted, by symbol: one call instead of one per instrument."""
    async with call.services.read_connection() as conn:
        rows = await conn.fetch(LOAD_INSTRUMENTS)
    minute = time.time_ns() // 1000 // MINUTE_US
    market_view = call.services.market
    return schemas.TickerList([ticker_of(symbol, market_view.known(symbol, seq), minute)
                       for _, symbol, seq in sorted(rows, key=lambda row: row[1])])


def ticker_of(symbol: str, view: BookView, minute: int) -> schemas.Ticker:
    return schemas.Ticker(symbol, view.seq, *schemas.ticker_figures(view, *view.best(), minute))
