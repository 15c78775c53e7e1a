"""Plan a routed order over the books of one substitution group: which levels to take, in which order.

Pure: no I/O, no clock, no engine. The engine plans from its live books and executes the plan in the same
command; the quote plans from the committed market view. Same venues in, same plan out.

Ranking
-------
Every price level of every venue (a compute instrument of the group that is trading) gets a key, and the
levels are taken best key first. For a buy, level A (price p_a, quality q_a) comes before level B when

- ``cost``: p_a < p_b; ties: higher quality, then symbol.
- ``quality``: q_a > q_b; ties: lower price, then symbol.
- ``balance``: p_a / q_a < p_b / q_b (price per quality point), compared as p_a x q_b < p_b x q_a in
  integers; ties: lower price, then symbol. A quality of 0 makes the ratio infinite: such levels come last.

A sell mirrors the price comparisons (higher price first; ``balance`` takes the highest price per quality
point, so quality 0 comes first); quality and symbol tie-breaks are the same. Within one venue every key
orders levels by price, so a deeper level is never taken before a shallower one of the same book.

Walking
-------
Levels beyond the limit price are left out. A level gives as many lots as are still wanted, within the venue's
``max_qty`` (one child order per venue), its ``tokens`` for a sell, and, with a budget, the lots whose notional
plus the child's taker fee still fit in what is left of the budget (fees are per child order, rounded up, as
the engine charges them). A venue whose share ends below its ``min_qty`` is dropped and its lots are left in the
remainder. Each venue's child is an IOC limit at the worst price planned on it for the lots planned there: the
book fills exactly those levels.

Remainder
---------
With ``rest``, what is left rests as a GTC limit at the limit price on the best venue: the one ranked first
when every venue is keyed at the limit price. Its hold (``fees.buy_hold`` at the higher of the venue's rates)
counts against the budget, so the resting quantity shrinks to what the budget still covers.
"""

from dataclasses import dataclass, field
from functools import cmp_to_key

from exchange import fees
from exchange.ledger import CASH
from matching.types import BUY, SELL

MODES = ("cost", "quality", "balance")
DEPTH_LEVELS = 1000
"""Price levels of each book a plan looks at: the planner's horizon per venue."""
MAX_QTY = 10**12
"""Lots, and micro-yuan per lot, in one routed order: price x qty stays far inside a bigint."""
MAX_BUDGET = 10**15


@dataclass(frozen=True)
class Venue:
    """One book of the group as the planner sees it: levels of the side it takes from, best first."""

    symbol: str
    quality: int
    tick: int
    min_qty: int
    max_qty: int
    maker_ppm: int
    taker_ppm: int
    levels: list[tuple[int, int]]
    """(price, lots) of the opposite side, best first."""
    tokens: int | None = None
    """For a sell: the lots the seller has of this instrument; None for a buy."""


@dataclass
class Leg:
    """One child order: ``qty`` lots on ``symbol`` up to ``price``, costing ``notional`` plus ``fee``."""

    symbol: str
    quality: int
    price: int = 0
    qty: int = 0
    notional: int = 0
    fee: int = 0

    @property
    def cost(self) -> int:
        """What a buy leg takes from the buyer: notional and fee."""
        return self.notional + self.fee


@dataclass(frozen=True)
class Rest:
    """The remainder resting as a GTC limit: ``qty`` lots on ``symbol`` at ``price``, holding ``hold``."""

    symbol: str
    price: int
    qty: int
    hold: int


@dataclass
class Plan:
    legs: list[Leg] = field(default_factory=list)
    rest: Rest | None = None
    qty: int = 0

    @property
    def filled_qty(self) -> int:
        return sum(leg.qty for leg in self.legs)

    @property
    def notional(self) -> int:
        return sum(leg.notional for leg in self.legs)

    @property
    def fee(self) -> int:
        return sum(leg.fee for leg in self.legs)

    @property
    def quality_lots(self) -> int:
        """Sum of quality x lots over the legs: the average quality's numerator."""
        return sum(leg.quality * leg.qty for leg in self.legs)

    @property
    def remainder(self) -> int:
        return self.qty - self.filled_qty

    def hold(self, side: str) -> dict[str, int]:
        """What the whole routed order holds, per asset (CNY for a buy, each symbol for a sell)."""
        if side == BUY:
            return {CASH: sum(leg.cost for leg in self.legs) + (self.rest.hold if self.rest else 0)}
        held: dict[str, int] = {}
        for leg in self.legs:
            held[leg.symbol] = held.get(leg.symbol, 0) + leg.qty
        if self.rest is not None:
            held[self.rest.symbol] = held.get(self.rest.symbol, 0) + self.rest.hold
        return held


def _compare(mode: str, side: str):
    """The comparison of two (price, quality, symbol) keys: negative when the first is taken first."""
    sign = 1 if side == BUY else -1

    def by_price(a, b) -> int:
        return sign * ((a[0] > b[0]) - (a[0] < b[0]))

    def compare(a, b) -> int:
        if mode == "cost":
            order = by_price(a, b) or (b[1] > a[1]) - (b[1] < a[1])
        elif mode == "quality":
            order = (b[1] > a[1]) - (b[1] < a[1]) or by_price(a, b)
        else:
            left, right = a[0] * b[1], b[0] * a[1]  # p_a / q_a against p_b / q_b, without division
            order = sign * ((left > right) - (left < right)) or by_price(a, b)
        return order or (a[2] > b[2]) - (a[2] < b[2])

    return compare


def rank(venues: list[Venue], mode: str, side: str, price: int) -> list[Venue]:
    """The venues ranked as their levels would be if each had one at ``price``."""
    key = cmp_to_key(_compare(mode, side))
    return sorted(venues, key=lambda v: key((price, v.quality, v.symbol)))


def refusal(venues: list[Venue], side: str, qty: object, mode: str, limit: object, budget: object,
            rest: bool) -> str | None:
    """The rejection code of a routed order's parameters (before funds), or None when they are valid."""
    if side not in (BUY, SELL):
        return "invalid_side"
    if mode not in MODES:
        return "invalid_route_mode"
    if type(qty) is not int or not 0 < qty <= MAX_QTY:
        return "invalid_qty"
    if limit is None and budget is None:
        return "limit_or_budget_required"
    if limit is not None and (type(limit) is not int or not 0 < limit <= MAX_QTY):
        return "invalid_price"
    if budget is not None and (type(budget) is not int or not 0 < budget <= MAX_BUDGET or side != BUY):
        return "invalid_route_budget"
    if rest and limit is None:
        return "rest_requires_price"
    if rest and venues and limit % rank(venues, mode, side, limit)[0].tick:
        return "off_tick_price"
    return None


def within(side: str, price: int, limit: int | None) -> bool:
    return limit is None or (price <= limit if side == BUY else price >= limit)


def plan(venues: list[Venue], side: str, qty: int, mode: str, limit: int | None = None,
         budget: int | None = None, rest: bool = False) -> Plan:
    """Plan a routed order of ``qty`` lots; see the module's docstring for the rules."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    by_symbol = {venue.symbol: venue for venue in venues}
    levels = [(price, venue.quality, venue.symbol, size) for venue in venues for price, size in venue.levels
              if within(side, price, limit)]
    levels.sort(key=cmp_to_key(_compare(mode, side)))
    legs: dict[str, Leg] = {}
    left = qty
    spent = 0
    for price, quality, symbol, size in levels:
        if not left:
            break
        venue = by_symbol[symbol]
        leg = legs.get(symbol) or Leg(symbol, quality)
        take = min(size, left, venue.max_qty - leg.qty)
        if venue.tokens is not None:
            take = min(take, venue.tokens - leg.qty)
        if budget is not None:
            largest = fees.budget_for_notional(budget - (spent - leg.cost), venue.taker_ppm)
            take = min(take, (largest - leg.notional) // price)
        if take <= 0:
            continue
        spent -= leg.cost
        leg.price = price
        leg.qty += take
        leg.notional += take * price
        leg.fee = fees.fee_on(leg.notional, venue.taker_ppm)
        spent += leg.cost
        left -= take
        legs[symbol] = leg
    result = Plan([leg for leg in legs.values() if leg.qty >= by_symbol[leg.symbol].min_qty], qty=qty)
    if rest and limit is not None and result.remainder and venues:
        result.rest = _rest(result, rank(venues, mode, side, limit)[0], side, limit, budget)
    return result


def _rest(result: Plan, venue: Venue, side: str, limit: int, budget: int | None) -> Rest | None:
    """The remainder's resting order on ``venue``, within its size limits, the budget and the seller's tokens."""
    qty = min(result.remainder, venue.max_qty)
    if side == BUY:
        if budget is not None:
            left = budget - sum(leg.cost for leg in result.legs) - 1  # buy_hold's one micro-yuan of rounding
            qty = min(qty, fees.budget_for_notional(max(left, 0), max(venue.maker_ppm, venue.taker_ppm)) // limit)
    else:
        assert venue.tokens is not None
        qty = min(qty, venue.tokens - sum(leg.qty for leg in result.legs if leg.symbol == venue.symbol))
    if qty < venue.min_qty or qty <= 0:
        return None
    hold = fees.buy_hold(qty, limit, max(venue.maker_ppm, venue.taker_ppm)) if side == BUY else qty
    return Rest(venue.symbol, limit, qty, hold)
