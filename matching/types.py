"""Units, names and codes shared by the order book and its callers.

Units
-----
Every number the book sees is an ``int``: a price is micro-yuan per lot, a quantity is whole lots, a budget is
micro-yuan, and an order id is positive. A float, a bool or anything else in their place is rejected, never
coerced; so is a flag that is not a bool or a code that is not one of the strings below. Account ids are the
caller's business and are only compared.

Codes
-----
Rejection codes and cancel reasons are stable snake_case strings: callers show them to users and store them,
so they never change meaning once published.
"""

from typing import Final

Price = int
"""Micro-yuan (1 CNY = 1,000,000) per lot."""
Qty = int
"""Whole lots."""
Budget = int
"""Micro-yuan to spend at most."""
OrderId = int
AccountId = int

BUY: Final = "buy"
SELL: Final = "sell"
SIDES: Final = frozenset((BUY, SELL))

GTC: Final = "GTC"
"""Good till cancelled: the unfilled rest of the order waits on the book."""
IOC: Final = "IOC"
"""Immediate or cancel: fill what can be filled now, expire the rest."""
FOK: Final = "FOK"
"""Fill or kill: fill the whole quantity now or do nothing at all."""
TIME_IN_FORCE: Final = frozenset((GTC, IOC, FOK))

# Self-trade prevention: what happens when an incoming order meets a resting order of the same account.
CANCEL_NEWEST: Final = "cancel_newest"
"""Cancel the rest of the incoming order."""
CANCEL_OLDEST: Final = "cancel_oldest"
"""Cancel the resting order and go on matching."""
CANCEL_BOTH: Final = "cancel_both"
"""Cancel both."""
DECREMENT: Final = "decrement"
"""Reduce both by the smaller open quantity without trading; cancel whichever reaches zero."""
STP_MODES: Final = frozenset((CANCEL_NEWEST, CANCEL_OLDEST, CANCEL_BOTH, DECREMENT))

# Why a Rejected event was emitted. The book is unchanged after every one of these.
INVALID_ORDER_ID: Final = "invalid_order_id"
INVALID_SIDE: Final = "invalid_side"
INVALID_QTY: Final = "invalid_qty"
INVALID_PRICE: Final = "invalid_price"
OFF_TICK_PRICE: Final = "off_tick_price"
INVALID_BUDGET: Final = "invalid_budget"
INVALID_TIME_IN_FORCE: Final = "invalid_time_in_force"
INVALID_STP_MODE: Final = "invalid_stp_mode"
INVALID_POST_ONLY: Final = "invalid_post_only"
POST_ONLY_REQUIRES_GTC: Final = "post_only_requires_gtc"
DUPLICATE_ORDER_ID: Final = "duplicate_order_id"
UNKNOWN_ORDER: Final = "unknown_order"
WOULD_TAKE: Final = "would_take"
NO_CHANGE: Final = "no_change"

# Why a Cancelled event was emitted: the order is closed and its open quantity released.
BY_REQUEST: Final = "by_request"
"""The owner cancelled it."""
EXPIRED: Final = "expired"
"""An IOC or market order could not fill the rest immediately."""
FILL_OR_KILL: Final = "fill_or_kill"
"""A FOK order could not be filled in full, so nothing was done."""
SELF_TRADE: Final = "self_trade"
"""Self-trade prevention removed it."""
