"""The API's field types with their limits; as msgspec Structs, the request and response bodies and query strings
of orders, instruments and market data, and those more than one route module (or the feed) uses; and the
conversions from the exchange's rows and views to them. A route module declares the bodies only it uses next to
its routes (``api.routes.accounts``, ``api.routes.packages``, ...).

Requests forbid unknown fields. Field types carry their limits (``Meta``), so decoding validates them and the
OpenAPI document (``api.openapi``) states them. Limits that are not business rules protect the database:
every integer fits a PostgreSQL bigint even when multiplied out (price x qty), and no text holds a NUL.

Units at the boundary: CNY amounts and prices are decimal strings in yuan ("1.85"), converted exactly to
micro-yuan (``api.units``); quantities are integer lots. Balances and ledger amounts are strings for every
asset: yuan for CNY, whole lots for a token.
"""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from api.marketdata import BookView
from api.units import from_micro
from exchange import records
from exchange.commands import OrderView
from exchange.indexer import IndexRow

BIGINT = 2**63 - 1
MAX_QTY = 10**12
"""Lots in one order, mint, burn or capacity."""
MAX_PRICE = 10**12
"""Micro-yuan per lot (one million CNY)."""
MAX_AMOUNT = 10**15
"""Micro-yuan in one deposit, withdrawal or budget (one billion CNY)."""

DECIMAL_PATTERN = r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,6})?$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
"""Line breaks are text, so ``$`` (which also matches before a final newline) is right here."""


def whole(pattern: str, **meta: Any) -> Meta:
    """The ``Meta`` of a string that ``pattern`` (no anchors, no top-level ``|``) must match as a whole.

    msgspec searches with ``re``, where ``^...$`` also takes "X\\n": ``$`` matches before a final newline. So the
    pattern ends in ``\\Z``, which the OpenAPI document writes as ``$`` (``api.openapi``)."""
    return Meta(pattern=f"^{pattern}\\Z", **meta)


Id = Annotated[int, Meta(ge=1, le=BIGINT)]
Symbol = Annotated[str, whole(r"[A-Z0-9][A-Z0-9._-]{0,31}", description="Instrument symbol.",
                              examples=["DEEPSEEK-V3"])]
Name = Annotated[str, whole(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", description="Account name.")]
Text = Annotated[str, Meta(min_length=1, max_length=2000, pattern=TEXT_PATTERN)]
Label = Annotated[str, Meta(max_length=200, pattern=TEXT_PATTERN)]
Qty = Annotated[int, Meta(ge=1, le=MAX_QTY, description="Whole lots.")]
Bps = Annotated[int, Meta(ge=0, le=10_000, description="Basis points.")]
Decimal = Annotated[str, Meta(
    max_length=32, description="A positive CNY amount in yuan, as a decimal string with at most 6 decimals.",
    extra_json_schema={"pattern": DECIMAL_PATTERN, "examples": ["1.85"]},
)]
ClientOrderId = Annotated[str, whole(r"[A-Za-z0-9._:-]{1,64}",
                                     description="Unique per account; sending it again returns the original order.")]
ClientRequestId = Annotated[str, whole(r"[A-Za-z0-9._:-]{1,64}",
                                       description="Unique per account and kind; sending it again returns the "
                                                   "original result and changes nothing.")]
Limit = Annotated[int, Meta(ge=1, le=500)]
Cursor = Annotated[str, whole(r"[0-9]{1,19}(-[0-9]{1,19})?",
                              description="Opaque: the next_cursor of the previous page.")]
Asset = Annotated[str, whole(r"[A-Z0-9][A-Z0-9._-]{0,31}", description="CNY or an instrument symbol.")]

Role = Literal["admin", "issuer", "trader"]
Scope = Literal["read", "trade", "issue", "admin", "inference"]
Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
TimeInForce = Literal["GTC", "IOC", "FOK"]
SelfTradePrevention = Literal["cancel_newest", "cancel_oldest", "cancel_both", "decrement"]
OrderStatus = Literal["open", "filled", "cancelled", "expired"]


class Request(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


def shown(name: str, record: type[Struct], fields: tuple[str, ...], **types: Any) -> type[Struct]:
    """The response Struct ``name`` that shows ``fields`` of the exchange's ``record``, in that order, each typed as
    the record types it unless ``types`` says how the API shows it (a Literal for a str, yuan for micro-yuan)."""
    typed = {field.name: field.type for field in msgspec.structs.fields(record)}
    return msgspec.defstruct(name, [(field, types[field] if field in types else typed[field]) for field in fields],
                             module=__name__)


# Requests


class NewComputeInstrument(Request, tag="compute", tag_field="kind"):
    """A standardized block of tokens of one model class."""

    symbol: Symbol
    tick: Decimal
    model: Text
    substitution_group: Text
    quality: Annotated[int, Meta(ge=0, le=100)]
    tokens_per_lot: Annotated[int, Meta(ge=1, le=BIGINT)]
    min_qty: Qty = 1
    max_qty: Qty = 1_000_000
    maker_fee_bps: Bps = 10
    taker_fee_bps: Bps = 20


class NewDatasetInstrument(Request, tag="dataset", tag_field="kind"):
    """Units of access to one dataset, minted by its issuer."""

    symbol: Symbol
    tick: Decimal
    issuer_id: Id
    description: Text
    license: Text
    grants: Text
    supply_cap: Qty
    min_qty: Qty = 1
    max_qty: Qty = 1_000_000
    maker_fee_bps: Bps = 10
    taker_fee_bps: Bps = 20


NewInstrument = NewComputeInstrument | NewDatasetInstrument


class NewLimitOrder(Request, tag="limit", tag_field="type"):
    """Buy or sell ``qty`` lots at ``price`` or better; what does not trade at once rests (GTC), expires (IOC) or
    makes the whole order do nothing (FOK). A post-only order never takes: it is refused if it would."""

    symbol: Symbol
    side: Side
    price: Decimal
    qty: Qty
    tif: TimeInForce = "GTC"
    post_only: bool = False
    stp: SelfTradePrevention = "cancel_newest"
    client_order_id: ClientOrderId | None = None


class NewMarketOrder(Request, tag="market", tag_field="type"):
    """Trade now at the best prices, up to ``qty`` lots, or (buy only) for up to ``budget`` CNY including the
    fee; give exactly one of the two. The rest expires."""

    symbol: Symbol
    side: Side
    qty: Qty | None = None
    budget: Decimal | None = None
    stp: SelfTradePrevention = "cancel_newest"
    client_order_id: ClientOrderId | None = None


NewOrder = NewLimitOrder | NewMarketOrder


class OrderAmendment(Request):
    """A new price, a new total quantity, or both. Lowering the quantity keeps time priority."""

    price: Decimal | None = None
    qty: Qty | None = None


# Query strings


class OrderQuery(Request):
    status: Literal["open", "closed", "all"] = "all"
    symbol: Symbol | None = None
    side: Side | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class FillQuery(Request):
    symbol: Symbol | None = None
    limit: Limit = 100
    cursor: Cursor | None = None


class PageQuery(Request):
    limit: Limit = 100
    cursor: Cursor | None = None


class CancelAllQuery(Request):
    symbol: Symbol


class BookQuery(Request):
    depth: Annotated[int, Meta(ge=1, le=1000, description="Price levels per side.")] = 20


# Responses


Instrument = shown("Instrument", records.Instrument, records.Instrument.ROW_FIELDS[1:],
                   kind=Literal["compute", "dataset"], status=Literal["trading", "halted"], tick=str)
"""An instrument's row but its id, with the tick in yuan."""


class InstrumentList(Struct):
    items: list[Instrument]


class Balance(Struct):
    asset: str
    available: str
    held: str


class Movement(Struct):
    """Cash or tokens that moved into (positive ``amount``) or out of (negative) an account."""

    account_id: int
    asset: str
    amount: str


class Delivery(Struct):
    """One attempt of an inference call on a provider: what it delivered and how it went."""

    id: int
    reservation_id: int
    symbol: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    latency_ms: float
    status: Literal["ok", "failed"]
    created_at: datetime


class DeliveryEvent(Delivery):
    """A delivery as the provider's ``user`` channel reports it, with the provider's totals after it."""

    provider_id: int
    delivered: Annotated[int, Meta(description="Tokens the provider delivered, this one included.")]
    obligation: Annotated[int, Meta(description="Tokens minted less tokens delivered, after this one.")]


class Redemption(Struct):
    id: int
    symbol: str
    qty: int
    created_at: datetime


class RedemptionPage(Struct):
    items: list[Redemption]
    next_cursor: str | None


class OrderFill(Struct):
    fill_id: int
    price: str
    qty: int
    fee: str
    role: Literal["maker", "taker"]


class Order(Struct):
    id: int
    symbol: str
    client_order_id: str | None
    side: Side
    type: OrderType
    tif: TimeInForce
    post_only: bool
    stp: SelfTradePrevention
    price: str | None
    qty: int | None
    budget: str | None
    status: OrderStatus
    reason: str | None
    open_qty: int
    filled_qty: int
    filled_notional: str
    average_price: Annotated[str | None, Meta(
        description="filled_notional / filled_qty, rounded half-even to the micro-yuan (filled_notional is exact); "
                    "null before the first fill.")]
    fee: str
    created_at: datetime
    updated_at: datetime


class OrderWithFills(Order):
    fills: list[OrderFill]


class OrderPage(Struct):
    items: list[Order]
    next_cursor: str | None


class CancelledOrders(Struct):
    order_ids: list[int]


class Fill(Struct):
    id: int
    order_id: int
    symbol: str
    side: Side
    role: Literal["maker", "taker"]
    price: str
    qty: int
    fee: str
    seq: int
    created_at: datetime


class FillPage(Struct):
    items: list[Fill]
    next_cursor: str | None


class Level(Struct):
    price: str
    qty: int


class Book(Struct):
    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]


class Ticker(Struct):
    symbol: str
    seq: int
    best_bid: str | None
    best_ask: str | None
    last_price: str | None
    last_qty: int | None
    open_24h: str | None
    high_24h: str | None
    low_24h: str | None
    change_24h: Annotated[str | None, Meta(
        description="last_price - open_24h, signed; null without a trade in the last 24 hours.")]
    volume_24h: int
    notional_24h: str


class TickerList(Struct):
    items: list[Ticker]


class ServerTime(Struct):
    epoch_ms: Annotated[int, Meta(description="Milliseconds since the Unix epoch.")]
    iso: Annotated[str, Meta(description="The same instant in ISO 8601, UTC.", examples=["2026-12-01T09:00:00.123Z"])]


class Leader(Struct):
    """The engine that takes the commands now."""

    host: str
    pid: int
    since: Annotated[str, Meta(description="When it became the leader, ISO 8601 UTC.")]


class Health(Struct):
    """The server answers (live) and can take commands and read its database (ready), and which engine leads."""

    live: bool
    ready: bool
    database: Literal["ok"]
    sequencer: Literal["ok"]
    version: str
    leader: Annotated[Leader, Meta(description="The engine that takes commands: this process itself when it "
                                               "runs the whole exchange; on a gateway, the engine whose heartbeat "
                                               "it last heard.")]


CASH = "CNY"


def asset_amount(asset: str, value: int) -> str:
    """An amount of ``asset`` as a string: yuan for CNY, whole lots for a token."""
    return from_micro(value) if asset == CASH else str(value)


def average_price(notional: int, qty: int) -> str | None:
    """``notional / qty`` in yuan, rounded half-even to the micro-yuan; None before the first fill."""
    if not qty:
        return None
    quotient, remainder = divmod(notional, qty)
    if 2 * remainder > qty or (2 * remainder == qty and quotient % 2):
        quotient += 1
    return from_micro(quotient)


encoder = msgspec.json.Encoder()


# Shared by routes and the feed: a path parameter, the forms of candles, indices, orders and executions.

SYMBOL_PARAM = {"symbol": (Symbol, "unknown_instrument")}
"""The ``{symbol}`` path parameter, and the problem when it names no instrument."""

INTERVALS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
"""Bins are whole multiples of their interval from this UTC midnight."""

Interval = Literal["1m", "5m", "1h", "1d"]
Time = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a time zone, e.g. 2026-11-28T09:30:00Z.")]

Mode = Literal["cost", "quality", "balance"]
Period = Literal["day", "week", "month"]
"""How often a package buys, or a subscription renews."""


class PeriodPageQuery(Request):
    """A page of the periods a package or a subscription ran; the cursor is a period's number."""

    limit: Limit = 100
    cursor: Annotated[str, whole(r"[0-9]{1,9}", description="The next_cursor of the previous page.")] | None = None


class Candle(Struct):
    start: datetime
    open: str | None
    high: str | None
    low: str | None
    close: str | None
    volume: Annotated[int, Meta(description="Lots traded; 0 means no trade in this bin, and the prices are null.")]
    notional: str
    vwap: Annotated[str | None, Meta(description="notional / volume, rounded half-even to the micro-yuan.")]


def empty_candle(start: datetime) -> Candle:
    return Candle(start, None, None, None, None, 0, "0", None)


def candle(start: datetime, open_: int, high: int, low: int, close: int, volume: int, notional: int) -> Candle:
    return Candle(start, from_micro(open_), from_micro(high), from_micro(low), from_micro(close), volume,
                  from_micro(notional), average_price(notional, volume))


class PriceIndex(Struct):
    group: str
    at: Annotated[datetime, Meta(description="The whole UTC minute the value is as of: it covers the trades with "
                                             "at - 24 h <= created_at < at.")]
    value: Annotated[str | None, Meta(description="CNY per 1M tokens: the volume-weighted mean price after trimming "
                                                  "10% of volume off each end, rounded half to even to the "
                                                  "micro-yuan; null when stale.")]
    stale: Annotated[bool, Meta(description="No trade in the window: the value is null, never carried over.")]
    trades: Annotated[int, Meta(description="Trades in the window, before trimming.")]
    volume_tokens: Annotated[int, Meta(description="Tokens traded in the window (lots x tokens per lot).")]
    notional: Annotated[str, Meta(description="CNY traded in the window.")]
    computed_at: datetime


def price_index(row: IndexRow) -> PriceIndex:
    """The API's form of one computed minute."""
    return PriceIndex(row.substitution_group, row.at, None if row.value is None else from_micro(row.value), row.stale,
                      row.trades, row.volume_tokens, from_micro(row.notional), row.computed_at)


def optional_price(value: int | None) -> str | None:
    return None if value is None else from_micro(value)


def order_from_row(row) -> Order:
    """A row of ``book_order`` with its instrument's symbol (the order queries of ``sql/queries/orders.sql``), as
    the API shows it."""
    return order_from_view(OrderView(**row))


def order_from_view(view: OrderView) -> Order:
    """An order as the API shows it: the one conversion, for a command's result and a row read back alike."""
    return Order(
        view.id, view.symbol, view.client_order_id, view.side, view.type, view.tif, view.post_only, view.stp,
        optional_price(view.price), view.qty, optional_price(view.budget), view.status, view.reason, view.open_qty,
        view.filled_qty, from_micro(view.filled_notional), average_price(view.filled_notional, view.filled_qty),
        from_micro(view.fee), view.created_at, view.updated_at,
    )


class Execution(Struct):
    package_id: int
    period: int
    period_start: datetime
    routed_order_id: int | None
    reason: Annotated[str | None, Meta(description="Why no routed order was placed, as a problem code.")]
    filled_qty: int
    filled_notional: str
    average_price: str | None
    average_quality: str | None
    fee: str
    created_at: datetime


def average_quality(quality_lots: int, qty: int) -> str | None:
    """``quality_lots / qty`` to two decimals, rounded half-even; None before a fill."""
    if not qty:
        return None
    hundredths, remainder = divmod(quality_lots * 100, qty)
    if 2 * remainder > qty or (2 * remainder == qty and hundredths % 2):
        hundredths += 1
    whole, fraction = divmod(hundredths, 100)
    return f"{whole}.{fraction:02d}"


def ticker_figures(view: BookView | None, bid: int | None, ask: int | None, minute: int) -> tuple:
    """A ticker's fields after its symbol and seq, REST's and the feed's: best bid and ask, the last trade, and
    the 24 hours up to ``minute``."""
    last_price = last_qty = open_ = high = low = None
    volume = notional = 0
    if view is not None:
        last_price, last_qty = view.last_price, view.last_qty
        open_, high, low, volume, notional = view.day(minute)
    change = None if last_price is None or open_ is None else from_micro(last_price - open_)
    return (optional_price(bid), optional_price(ask), optional_price(last_price), last_qty, optional_price(open_),
            optional_price(high), optional_price(low), change, volume, from_micro(notional))
