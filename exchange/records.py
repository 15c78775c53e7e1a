"""The exchange's in-memory records (accounts, instruments, orders, routed orders, packages), mirroring their tables;
commands answer with them (`exchange.commands.Result`)."""

from datetime import datetime

import msgspec

from matching.book import OrderBook

ROLES = frozenset(("admin", "issuer", "trader"))
TRADING_ROLES = frozenset(("issuer", "trader"))
KINDS = frozenset(("compute", "dataset"))
STATUSES = frozenset(("trading", "halted"))


class Row(msgspec.Struct):
    """A record that mirrors a row of one table: its fields are the table's columns, in order."""

    def row(self) -> tuple:
        """The values of the table's columns."""
        return msgspec.structs.astuple(self)


class Account(msgspec.Struct):
    id: int
    name: str
    role: str
    created_at: datetime


class Instrument(msgspec.Struct):
    id: int
    symbol: str
    kind: str
    status: str
    tick: int
    min_qty: int
    max_qty: int
    maker_fee_bps: int
    taker_fee_bps: int
    model: str | None
    substitution_group: str | None
    quality: int | None
    tokens_per_lot: int | None
    issuer_id: int | None
    description: str | None
    license: str | None
    grants: str | None
    supply_cap: int | None
    seq: int
    created_at: datetime
    book: OrderBook | None = None
    issued: int = 0
    """Lots minted less lots burned, over every issuer."""

    ROW_FIELDS = (
        "id", "symbol", "kind", "status", "tick", "min_qty", "max_qty", "maker_fee_bps", "taker_fee_bps",
        "model", "substitution_group", "quality", "tokens_per_lot", "issuer_id", "description", "license",
        "grants", "supply_cap", "created_at",
    )
    """The columns of ``instrument``; ``seq`` lives in ``instrument_seq``."""

    def row(self) -> tuple:
        return tuple(getattr(self, name) for name in self.ROW_FIELDS)


class Approval(msgspec.Struct):
    account_id: int
    instrument_id: int
    capacity: int
    issued: int
    approved_at: datetime


class Order(Row, gc=False):
    """One order and everything the exchange tracks about it; a row of ``book_order``."""

    id: int
    instrument_id: int
    account_id: int
    client_order_id: str | None
    side: str
    type: str
    tif: str
    post_only: bool
    stp: str
    price: int | None
    qty: int | None
    budget: int | None
    open_qty: int
    filled_qty: int
    filled_notional: int
    maker_notional: int
    taker_notional: int
    fee: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    held: int
    status: str
    reason: str | None
    priority: int
    created_at: datetime
    updated_at: datetime


class Package(Row, tag_field="result", tag="package", array_like=True):
    """A row of ``package``."""

    id: int
    account_id: int
    substitution_group: str
    qty: int
    mode: str
    period: str
    max_cost: int
    price: int | None
    start_at: datetime
    status: str
    next_period: int
    created_at: datetime
    updated_at: datetime


class OrderFill(msgspec.Struct, frozen=True):
    fill_id: int
    price: int
    qty: int
    fee: int
    role: str


class OrderView(Order, frozen=True, tag_field="result", tag="order", array_like=True):
    """An order as a command left it, for the command's result: a copy of the record (later commands of the batch
    change the record itself), its instrument's symbol and the command's fills. Read back from the database, the
    same with no fills."""

    symbol: str
    fills: list[OrderFill] = []


class RoutedOrder(msgspec.Struct, tag_field="result", tag="routed_order", array_like=True):
    """A routed order (a row of ``routed_order``) and, right after its command, its children."""

    id: int
    account_id: int
    substitution_group: str
    side: str
    mode: str
    qty: int
    price: int | None
    budget: int | None
    rest_remainder: bool
    status: str
    filled_qty: int
    filled_notional: int
    fee: int
    quality_lots: int
    """Sum of quality x lots filled: the numerator of the average quality."""
    remainder: int
    resting_order_id: int | None
    order_ids: list[int]
    package_id: int | None
    created_at: datetime
    client_order_id: str | None
    children: list[OrderView] = []
    """The child orders as the command left them; empty when read back from the database."""

    ROW_FIELDS = (
        "id", "account_id", "substitution_group", "side", "mode", "qty", "price", "budget", "rest_remainder",
        "status", "filled_qty", "filled_notional", "fee", "quality_lots", "remainder", "resting_order_id",
        "order_ids", "package_id", "created_at", "client_order_id",
    )
    """The columns of ``routed_order``."""

    def row(self) -> tuple:
        return tuple(getattr(self, name) for name in self.ROW_FIELDS)
