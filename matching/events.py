"""What the book tells its caller: every call returns a list of these, in the order they happened.

Each event carries the ``seq`` and ``ts`` the caller passed with the command, so the events of one command
share them. Events are immutable msgspec Structs without GC tracking: they hold only ints and strings, and
millions are created per second.
"""

import msgspec

from matching.types import AccountId, Budget, OrderId, Price, Qty


class Event(msgspec.Struct, frozen=True, gc=False, kw_only=False):
    """Every event; its kinds inherit ``frozen`` and ``gc=False``."""

    seq: int
    ts: int


class Accepted(Event):
    """The order passed validation. ``price`` is None for market orders, ``qty`` None for budget orders."""

    order_id: OrderId
    account: AccountId
    side: str
    price: Price | None
    qty: Qty | None
    budget: Budget | None = None


class Rejected(Event):
    """The command was refused for ``code`` (see ``matching.types``); the book did not change."""

    order_id: OrderId
    code: str


class Trade(Event):
    """``qty`` lots changed hands at the resting (maker) order's ``price``."""

    price: Price
    qty: Qty
    maker_order_id: OrderId
    maker_account: AccountId
    taker_order_id: OrderId
    taker_account: AccountId
    taker_side: str
    maker_remaining: Qty
    """Lots still open on the maker order; 0 means it is filled and gone from the book."""


class Cancelled(Event):
    """The order is closed; ``qty`` open lots were released (0 for a budget order)."""

    order_id: OrderId
    account: AccountId
    qty: Qty
    reason: str


class Decremented(Event):
    """Self-trade prevention took ``qty`` lots off an order that stays open with ``remaining`` lots."""

    order_id: OrderId
    account: AccountId
    qty: Qty
    remaining: Qty


class Amended(Event):
    """The resting order now has ``price`` and ``qty`` open lots; it kept its place in the queue or not."""

    order_id: OrderId
    price: Price
    qty: Qty
    priority_kept: bool


class LevelChanged(Event):
    """The price level now holds ``total`` lots on ``side``; 0 means the level is gone."""

    side: str
    price: Price
    total: Qty
