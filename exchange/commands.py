"""What callers ask the exchange to do, and what it answers.

Every state-changing request is one of these commands, processed in order by the sequencer. The answer is a
value: the command's result, or a ``Rejection`` with a stable code and a message a person can act on.
Programmer errors (a command of an unknown type) raise instead.

Results are tagged (``result`` is the tag field, each struct's fields follow in order), so that a result encoded by
``encode_result`` decodes back to the struct it was, wherever it went meanwhile.
"""

import re
from datetime import datetime

import msgspec

from exchange.records import OrderView, Package, RoutedOrder
from matching.types import CANCEL_NEWEST, GTC


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Command(msgspec.Struct, frozen=True, tag_field="command", tag=_snake_case):
    """A command's tag is its class name in snake_case (``CancelOrder`` travels as ``cancel_order``): renaming a
    command changes what gateways and stored requests say. Subclasses inherit ``frozen``."""


class CreateAccount(Command):
    name: str
    role: str


class ListInstrument(Command):
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


class SetInstrumentStatus(Command):
    symbol: str
    status: str


class ApproveIssuer(Command):
    account_id: int
    symbol: str
    capacity: int


class CashMovement(msgspec.Struct, frozen=True):
    """The fields of a deposit or a withdrawal (a mixin, not a command of its own)."""

    account_id: int
    amount: int
    client_request_id: str | None = None
    """Unique per account and kind (``engine.CLIENT_REQUEST_KINDS``): sending it again returns what it did the
    first time and changes nothing."""


class Deposit(CashMovement, Command):
    """Credit cash from outside the exchange (an admin's command)."""


class Withdraw(CashMovement, Command):
    """Pay cash the account has available out of the exchange (an admin's command)."""


class TokenMovement(msgspec.Struct, frozen=True):
    """The fields of a mint, a burn or a redemption (a mixin, not a command of its own)."""

    account_id: int
    symbol: str
    qty: int
    client_request_id: str | None = None
    """As ``CashMovement.client_request_id``."""


class Mint(TokenMovement, Command):
    """Issue lots into the issuer's own holdings, within its approved capacity."""


class Burn(TokenMovement, Command):
    """Destroy unsold lots of the issuer's own holdings."""


class Redeem(TokenMovement, Command):
    terms_version: int | None = None
    """The version of a dataset's license terms the holder accepts by redeeming (``exchange.datasets``)."""


class PublishTerms(Command):
    """A new version of a dataset's license terms, by its issuer (``exchange.datasets``)."""

    account_id: int
    symbol: str
    permitted_use: tuple[str, ...]
    redistribution: bool
    attribution: str | None
    days_per_token: int | None
    downloads_per_token: int | None
    text: str


class Download(Command):
    """Count one download of a dataset's file, of ``bytes`` bytes, against the account's access grants."""

    account_id: int
    symbol: str
    file_id: int
    bytes: int


class PublishSubscriptionOffer(Command):
    """A seller's subscription offer: ``tokens_per_period`` tokens of a compute instrument every ``period`` for
    ``price`` micro-yuan a period (``exchange.subscriptions``)."""

    account_id: int
    symbol: str
    tokens_per_period: int
    period: str
    price: int


class WithdrawSubscriptionOffer(Command):
    account_id: int
    offer_id: int


class Subscribe(Command):
    """Subscribe to an offer: its first period is paid and granted at once."""

    account_id: int
    offer_id: int
    client_request_id: str | None = None
    """As ``CashMovement.client_request_id``."""


class CancelSubscription(Command):
    """End a subscription at the end of the period under way."""

    account_id: int
    subscription_id: int


class RenewSubscription(Command):
    """Run period number ``period`` of a subscription (0 began when it was made), once."""

    subscription_id: int
    period: int


class PlaceOrder(Command):
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


class CancelOrder(Command):
    account_id: int
    order_id: int


class CancelAll(Command):
    account_id: int
    symbol: str


class AmendOrder(Command):
    account_id: int
    order_id: int
    price: int | None = None
    qty: int | None = None


class RouteOrder(Command):
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


class CreatePackage(Command):
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
    """As ``CashMovement.client_request_id``."""


class SetPackageStatus(Command):
    account_id: int
    package_id: int
    status: str


class RunPackage(Command):
    """Execute period number ``period`` (0 is the one starting at ``start_at``) of a package, once."""

    package_id: int
    period: int


class RegisterProvider(Command):
    """An issuer's OpenAI-compatible upstream for a compute instrument it is approved for; again to change it
    (``exchange.delivery``)."""

    account_id: int
    symbol: str
    base_url: str
    model: str
    credential: bytes
    """Already encrypted: the engine keeps it and hands it back to the gateway, never reads it."""


class Reserve(Command):
    """Hold an inference call's worst case, ``tokens``, from the account's quota on ``model``: an instrument
    symbol, or a substitution group whose instrument ``mode`` picks (``exchange.delivery``)."""

    account_id: int
    model: str
    tokens: int
    mode: str | None = None


class Attempt(msgspec.Struct, frozen=True):
    """One try of a call on one provider, as the gateway measured it."""

    provider_id: int
    status: str
    """``ok`` (the provider answered; its usage is charged) or ``failed`` (nothing charged)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_us: int = 0
    """Microseconds to the first token (to the whole answer, when not streamed)."""
    latency_us: int = 0


class Settle(Command):
    """Charge an open reservation what its call delivered, and record every attempt as a usage row."""

    reservation_id: int
    attempts: list[Attempt]


class ExpireReservations(Command):
    """Free every open reservation past its deadline (its call never settled) and lapse expired quotas."""


class Rejection(msgspec.Struct, frozen=True, tag_field="result", tag="rejection", array_like=True):
    """The command changed nothing, because of ``code``."""

    code: str
    message: str


class Done(msgspec.Struct, frozen=True, tag_field="result", tag="done", array_like=True):
    """The command took effect; ``id`` names what it created or changed, when there is one."""

    id: int | None = None


class Cancelled(msgspec.Struct, frozen=True, tag_field="result", tag="cancelled", array_like=True):
    order_ids: list[int]


class ExecutionView(msgspec.Struct, frozen=True, tag_field="result", tag="execution", array_like=True):
    """One period of a package, run: the routed order it placed, or why it placed none."""

    package_id: int
    period: int
    routed_order_id: int | None
    reason: str | None
    created_at: datetime
    routed: RoutedOrder | None = None


class ProviderView(msgspec.Struct, frozen=True, tag_field="result", tag="provider", array_like=True):
    """A provider as its issuer sees it; never its credential."""

    id: int
    account_id: int
    symbol: str
    base_url: str
    model: str
    delivered: int
    """Tokens delivered."""
    obligation: int
    """Tokens minted (lots x tokens per lot, minted less burned) less tokens delivered."""
    created_at: datetime
    updated_at: datetime


class Upstream(msgspec.Struct, frozen=True):
    """Where to forward a call: one provider, with its credential as stored (encrypted)."""

    provider_id: int
    base_url: str
    model: str
    credential: bytes


class ReservationView(msgspec.Struct, frozen=True, tag_field="result", tag="reservation", array_like=True):
    """A reservation just made, and the instrument's providers in the order to try them."""

    id: int
    account_id: int
    symbol: str
    source: str
    tokens: int
    deadline_at: datetime
    providers: list[Upstream]


class Delivered(Attempt, kw_only=True):
    """One attempt of a call as settled, its tokens those charged: a usage row, and its provider's totals after it."""

    usage_id: int
    provider_account_id: int
    delivered: int
    """The provider's delivered tokens, this attempt included."""
    obligation: int
    """The provider's obligation after this attempt."""


class SettlementView(msgspec.Struct, frozen=True, tag_field="result", tag="settlement", array_like=True):
    reservation_id: int
    symbol: str
    charged: int
    attempts: list[Delivered]
    created_at: datetime


Result = (Rejection | Done | OrderView | Cancelled | RoutedOrder | Package | ExecutionView | ProviderView
          | ReservationView | SettlementView)

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
