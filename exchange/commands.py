"""What callers ask the exchange to do, and what it answers.

Every state-changing request is one of these commands, processed in order by the sequencer. The answer is a
value: the command's result, or a ``Rejection`` with a stable code and a message a person can act on.
Programmer errors (a command of an unknown type) raise instead.

Results are tagged (``result`` is the tag field, each struct's fields follow in order), so that a result encoded by
``encode_result`` decodes back to the struct it was, wherever it went meanwhile.
"""

from datetime import datetime

import msgspec

from matching.types import CANCEL_NEWEST, GTC


class Command(msgspec.Struct, frozen=True, tag_field="command"):
    pass


class CreateAccount(Command, frozen=True, tag="create_account"):
    name: str
    role: str


class ListInstrument(Command, frozen=True, tag="list_instrument"):
    symbol: str
    kind: str
    tick: int
    min_qty: int = 1
    max_qty: int = 1_000_000
    maker_fee_bps: int = 10
    taker_fee_bps: int = 20
    model: str | None = None
    substitution_group: str | None = None
    quality: int | None = None
    tokens_per_lot: int | None = None
    issuer_id: int | None = None
    description: str | None = None
    license: str | None = None
    grants: str | None = None
    supply_cap: int | None = None


class SetInstrumentStatus(Command, frozen=True, tag="set_instrument_status"):
    symbol: str
    status: str


class ApproveIssuer(Command, frozen=True, tag="approve_issuer"):
    account_id: int
    symbol: str
    capacity: int


class Deposit(Command, frozen=True, tag="deposit"):
    account_id: int
    amount: int
    client_request_id: str | None = None
    """Unique per account and kind (``engine.CLIENT_REQUEST_KINDS``): sending it again returns what it did the
    first time and changes nothing."""


class Withdraw(Command, frozen=True, tag="withdraw"):
    account_id: int
    amount: int
    client_request_id: str | None = None
    """As ``Deposit.client_request_id``."""


class Mint(Command, frozen=True, tag="mint"):
    account_id: int
    symbol: str
    qty: int
    client_request_id: str | None = None
    """As ``Deposit.client_request_id``."""


class Burn(Command, frozen=True, tag="burn"):
    account_id: int
    symbol: str
    qty: int
    client_request_id: str | None = None
    """As ``Deposit.client_request_id``."""


class Redeem(Command, frozen=True, tag="redeem"):
    account_id: int
    symbol: str
    qty: int
    client_request_id: str | None = None
    """As ``Deposit.client_request_id``."""


class PlaceOrder(Command, frozen=True, tag="place_order"):
    account_id: int
    symbol: str
    side: str
    type: str = "limit"
    price: int | None = None
    qty: int | None = None
    budget: int | None = None
    tif: str = GTC
    post_only: bool = False
    stp: str = CANCEL_NEWEST
    client_order_id: str | None = None


class CancelOrder(Command, frozen=True, tag="cancel_order"):
    account_id: int
    order_id: int


class CancelAll(Command, frozen=True, tag="cancel_all"):
    account_id: int
    symbol: str


class AmendOrder(Command, frozen=True, tag="amend_order"):
    account_id: int
    order_id: int
    price: int | None = None
    qty: int | None = None


class RouteOrder(Command, frozen=True, tag="route_order"):
    """Buy or sell ``qty`` lots across the books of a substitution group (``exchange.route_planner``)."""

    account_id: int
    group: str
    side: str
    qty: int
    mode: str
    price: int | None = None
    """The limit per lot, on every book."""
    budget: int | None = None
    """The most the whole order may cost, fees included (buys only)."""
    rest_remainder: bool = False
    client_order_id: str | None = None
    """Unique per account among routed orders: sending it again returns the original and changes nothing."""


class CreatePackage(Command, frozen=True, tag="create_package"):
    """A standing plan: buy ``qty`` lots of ``group`` every ``period`` from ``start_at``, costing at most
    ``max_cost`` per period (``exchange.packages``)."""

    account_id: int
    group: str
    qty: int
    mode: str
    period: str
    max_cost: int
    start_at: datetime
    price: int | None = None
    client_request_id: str | None = None
    """As ``Deposit.client_request_id``."""


class SetPackageStatus(Command, frozen=True, tag="set_package_status"):
    account_id: int
    package_id: int
    status: str


class RunPackage(Command, frozen=True, tag="run_package"):
    """Execute period number ``period`` (0 is the one starting at ``start_at``) of a package, once."""

    package_id: int
    period: int


class Rejection(msgspec.Struct, frozen=True, tag_field="result", tag="rejection", array_like=True):
    """The command changed nothing, because of ``code``."""

    code: str
    message: str


class Done(msgspec.Struct, frozen=True, tag_field="result", tag="done", array_like=True):
    """The command took effect; ``id`` names what it created or changed, when there is one."""

    id: int | None = None


class OrderFill(msgspec.Struct, frozen=True):
    fill_id: int
    price: int
    qty: int
    fee: int
    role: str


class OrderView(msgspec.Struct, frozen=True, tag_field="result", tag="order", array_like=True):
    """An order as it stands after the command's batch committed."""

    id: int
    account_id: int
    symbol: str
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
    fee: int
    status: str
    reason: str | None
    created_at: datetime
    updated_at: datetime
    fills: list[OrderFill] = []


class Cancelled(msgspec.Struct, frozen=True, tag_field="result", tag="cancelled", array_like=True):
    order_ids: list[int]


class RoutedOrderView(msgspec.Struct, frozen=True, tag_field="result", tag="routed_order", array_like=True):
    """A routed order right after its command: totals over its children, and the children themselves."""

    id: int
    account_id: int
    group: str
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
    package_id: int | None
    created_at: datetime
    children: list[OrderView] = []


class PackageView(msgspec.Struct, frozen=True, tag_field="result", tag="package", array_like=True):
    id: int
    account_id: int
    group: str
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


class ExecutionView(msgspec.Struct, frozen=True, tag_field="result", tag="execution", array_like=True):
    """One period of a package, run: the routed order it placed, or why it placed none."""

    package_id: int
    period: int
    routed_order_id: int | None
    reason: str | None
    created_at: datetime
    routed: RoutedOrderView | None = None


Result = Rejection | Done | OrderView | Cancelled | RoutedOrderView | PackageView | ExecutionView

# A result travels (to a gateway) and is stored (with its signed request, ``exchange.replay``) as msgpack: each
# kind carries its tag first, then its fields in order, so the union decodes back to the same struct.
_RESULT_ENCODER = msgspec.msgpack.Encoder()
_RESULT_DECODER = msgspec.msgpack.Decoder(Result)


def encode_result(result: Result) -> bytes:
    """The tagged msgpack form of ``result``."""
    return _RESULT_ENCODER.encode(result)


def decode_result(data: bytes) -> Result:
    """The result ``encode_result`` made ``data`` from."""
    return _RESULT_DECODER.decode(data)
