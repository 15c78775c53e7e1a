"""Trading fees: tiered rates, rounding in the exchange's favour, and the holds that cover them.

Rates
-----
Each instrument has a base maker and taker rate in basis points. An account's tier, chosen by its trailing
30-day traded notional (as maker or taker, on every instrument), scales both by a percentage. The effective
rate is kept in parts per million of notional (ppm = bps x percent), fixed on the order when it is accepted.

Rounding
--------
This module is the one place fees are rounded. An order's fee for one role (maker or taker) is
``ceil(cumulative notional x ppm / 1,000,000)``, and each fill charges the increase of that figure. Fees
therefore round up, in the exchange's favour, once per order and role rather than once per fill.

Holds
-----
A buy limit order for ``qty`` lots at ``price`` holds ``notional + ceil(notional x r / 1e6) + 1`` where
``r`` is the higher of its two rates: the fees of both roles together exceed ``ceil(notional x r / 1e6)`` by
at most one micro-yuan of rounding, so the hold always covers every fill at or below the limit.
"""

from collections import defaultdict
from typing import Final

from matching.types import Price, Qty

MICRO: Final = 1_000_000
"""Parts per million, and micro-yuan per CNY."""
DAY_US: Final = 86_400 * 1_000_000
WINDOW_DAYS: Final = 30

FEE_TIERS: Final = (
    (0, 100),
    (1_000_000 * MICRO, 80),
    (10_000_000 * MICRO, 60),
    (100_000_000 * MICRO, 40),
)
"""(minimum trailing 30-day notional in micro-yuan, percent of the instrument's base rates), ascending."""


def tier_percent(volume: int) -> int:
    """The percentage of base rates that an account with ``volume`` trailing notional pays."""
    percent = FEE_TIERS[0][1]
    for threshold, tier in FEE_TIERS:
        if volume >= threshold:
            percent = tier
    return percent


def rate_ppm(base_bps: int, percent: int) -> int:
    """The effective rate in parts per million of notional."""
    return base_bps * percent


def fee_on(notional: int, ppm: int) -> int:
    """The fee on ``notional`` micro-yuan at ``ppm``, rounded up to the micro-yuan."""
    return -(-notional * ppm // MICRO)


def fee_increment(before: int, after: int, ppm: int) -> int:
    """The fee a fill adds when an order's notional in one role grows from ``before`` to ``after``."""
    return fee_on(after, ppm) - fee_on(before, ppm)


def buy_hold(qty: Qty, price: Price, ppm: int) -> int:
    """Micro-yuan to hold for a buy of ``qty`` lots at up to ``price`` paying at most ``ppm`` in fees."""
    notional = qty * price
    return notional + fee_on(notional, ppm) + 1


def budget_for_notional(budget: int, ppm: int) -> int:
    """The largest notional whose taker fee at ``ppm`` still fits in ``budget`` with it."""
    return budget * MICRO // (MICRO + ppm)


class VolumeTracker:
    """Each account's traded notional per day, for the trailing 30-day tier."""

    def __init__(self) -> None:
        self._days: defaultdict[int, dict[int, int]] = defaultdict(dict)

    def add(self, account: int, ts: int, notional: int) -> None:
        days = self._days[account]
        day = ts // DAY_US
        days[day] = days.get(day, 0) + notional

    def trailing(self, account: int, ts: int) -> int:
        """Notional traded over the 30 days up to and including the day of ``ts``."""
        today = ts // DAY_US
        days = self._days.get(account)
        if not days:
            return 0
        stale = [d for d in days if d <= today - WINDOW_DAYS]
        for d in stale:
            del days[d]
        return sum(days.values())
