"""The routed-order planner over random books: limits, budgets, the modes' promises, and plan = execution.

Books are random (several venues of one group, random quality, depth, fees and size limits); the execution
side runs the real engine in memory, which is what the sequencer would apply.
"""

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange import fees, route_planner, routed_orders
from exchange.commands import ApproveIssuer, CreateAccount, Deposit, ListInstrument, Mint, PlaceOrder, RouteOrder
from exchange.engine import Engine
from exchange.records import OrderView, RoutedOrder
from matching.types import BUY, SELL

TICK = 10_000
AT = datetime(2026, 11, 28, tzinfo=UTC)
TS = int(AT.timestamp()) * 1_000_000


@st.composite
def venue(draw, index: int, side: str) -> route_planner.Venue:
    prices = draw(st.lists(st.integers(1, 60), min_size=0, max_size=6, unique=True))
    prices.sort(reverse=side == SELL)
    levels = [(p * TICK, draw(st.integers(1, 20))) for p in prices]
    taker_bps = draw(st.integers(0, 50))
    return route_planner.Venue(
        f"V{index}", draw(st.integers(0, 100)), TICK, 1, draw(st.sampled_from([5, 30, 1_000_000])),
        taker_bps // 2 * 100, taker_bps * 100, levels,
        draw(st.integers(0, 60)) if side == SELL else None,
    )


@st.composite
def books(draw, side: str = BUY) -> list[route_planner.Venue]:
    return [draw(venue(i, side)) for i in range(draw(st.integers(1, 4)))]


limits = st.one_of(st.none(), st.integers(1, 60).map(lambda p: p * TICK))
budgets = st.one_of(st.none(), st.integers(1, 2_000 * TICK))
modes = st.sampled_from(route_planner.MODES)


def in_limit(side: str, price: int, limit: int | None) -> bool:
    return route_planner.within(side, price, limit)


@given(books(), st.integers(1, 80), modes, limits, budgets, st.booleans())
def test_a_plan_never_exceeds_the_limit_the_budget_or_the_sizes(venues, qty, mode, limit, budget, rest):
    if limit is None and budget is None:
        budget = 500 * TICK
    plan = route_planner.plan(venues, BUY, qty, mode, limit, budget, rest)
    by_symbol = {v.symbol: v for v in venues}
    assert plan.filled_qty + plan.remainder == qty and plan.filled_qty <= qty
    for leg in plan.legs:
        venue = by_symbol[leg.symbol]
        assert in_limit(BUY, leg.price, limit)
        assert venue.min_qty <= leg.qty <= venue.max_qty
        # The leg is exactly the best levels of its book up to its worst price: what an IOC there fills.
        took, notional = 0, 0
        for price, size in venue.levels:
            if price > leg.price or took == leg.qty:
                break
            n = min(size, leg.qty - took)
            took, notional = took + n, notional + n * price
        assert (took, notional) == (leg.qty, leg.notional)
        assert leg.fee == fees.fee_on(leg.notional, venue.taker_ppm)
    if budget is not None:
        assert plan.hold(BUY)["CNY"] <= budget
    if plan.rest is not None:
        assert rest and limit is not None and plan.rest.price == limit
        assert plan.rest.qty <= plan.remainder


@given(books(SELL), st.integers(1, 80), modes, st.integers(1, 60).map(lambda p: p * TICK))
def test_a_sell_plan_sells_no_more_than_held_and_no_lower_than_the_limit(venues, qty, mode, limit):
    plan = route_planner.plan(venues, SELL, qty, mode, limit)
    by_symbol = {v.symbol: v for v in venues}
    for leg in plan.legs:
        assert leg.price >= limit
        assert leg.qty <= by_symbol[leg.symbol].tokens


@given(books(), st.integers(1, 80), st.sampled_from(["quality", "balance"]), limits)
def test_cost_never_pays_more_for_the_same_quantity(venues, qty, mode, limit):
    limit = limit or 60 * TICK
    other = route_planner.plan(venues, BUY, qty, mode, limit)
    if not other.filled_qty:
        return
    cheapest = route_planner.plan(venues, BUY, other.filled_qty, "cost", limit)
    assert cheapest.filled_qty == other.filled_qty
    assert cheapest.notional <= other.notional


@given(books(), st.integers(1, 80), limits)
def test_quality_takes_no_lower_quality_while_a_higher_one_within_the_limit_remains(venues, qty, limit):
    limit = limit or 60 * TICK
    plan = route_planner.plan(venues, BUY, qty, "quality", limit)
    taken = {leg.symbol: leg.qty for leg in plan.legs}
    for leg in plan.legs:
        for venue in venues:
            if venue.quality > leg.quality:
                within = sum(size for price, size in venue.levels if price <= limit)
                assert taken.get(venue.symbol, 0) == min(within, venue.max_qty)


def test_balance_ranks_by_price_per_quality_point_then_price_then_symbol():
    venues = [
        route_planner.Venue("CHEAP-LOW", 20, 1, 1, 100, 0, 0, [(100, 5)]),   # 5.0 per point
        route_planner.Venue("DEAR-HIGH", 90, 1, 1, 100, 0, 0, [(360, 5)]),   # 4.0 per point
        route_planner.Venue("SAME-B", 50, 1, 1, 100, 0, 0, [(250, 5)]),      # 5.0 per point, dearer than CHEAP-LOW
        route_planner.Venue("ZERO", 0, 1, 1, 100, 0, 0, [(1, 5)]),           # infinite: last
    ]
    plan = route_planner.plan(venues, BUY, 20, "balance", 1_000)
    assert [leg.symbol for leg in plan.legs] == ["DEAR-HIGH", "CHEAP-LOW", "SAME-B", "ZERO"]
    assert [leg.symbol for leg in route_planner.plan(venues, BUY, 20, "cost", 1_000).legs] == \
        ["ZERO", "CHEAP-LOW", "SAME-B", "DEAR-HIGH"]
    assert [leg.symbol for leg in route_planner.plan(venues, BUY, 20, "quality", 1_000).legs] == \
        ["DEAR-HIGH", "SAME-B", "CHEAP-LOW", "ZERO"]


def test_a_budget_counts_each_childs_fee():
    venues = [route_planner.Venue("A", 50, 1, 1, 100, 0, 100_000, [(1_000, 10)])]  # 10% taker fee
    plan = route_planner.plan(venues, BUY, 10, "cost", budget=5_500)
    assert plan.filled_qty == 5 and plan.hold(BUY)["CNY"] == 5_500
    assert route_planner.plan(venues, BUY, 10, "cost", budget=5_499).filled_qty == 4


def chunks(venue: route_planner.Venue) -> list[tuple[int, int]]:
    """Each level as resting orders within the instrument's maximum order size."""
    return [(price, min(venue.max_qty, size - done)) for price, size in venue.levels
            for done in range(0, size, venue.max_qty)]


def market(venues: list[route_planner.Venue], side: str) -> Engine:
    """An engine whose group ``g`` holds ``venues``' books: asks of the issuer (100) and cash for the router
    (102), for a buy; bids of trader 101 and the issuer holding each venue's ``tokens``, for a sell."""
    engine = Engine()
    for command in (CreateAccount("issuer", "issuer"), CreateAccount("maker", "trader"),
                    CreateAccount("router", "trader"), Deposit(101, 10**13), Deposit(102, 10**13)):
        engine.apply(command, TS, AT)
    for v in venues:
        engine.apply(ListInstrument(v.symbol, "compute", TICK, 1, v.max_qty, v.maker_ppm // 100, v.taker_ppm // 100,
                                    "m", "g", v.quality, 1_000_000), TS, AT)
        engine.apply(ApproveIssuer(100, v.symbol, 10**6), TS, AT)
        if side == BUY:
            engine.apply(Mint(100, v.symbol, 10_000), TS, AT)
            for price, size in chunks(v):
                assert isinstance(engine.apply(PlaceOrder(100, v.symbol, SELL, price=price, qty=size), TS, AT),
                                  OrderView)
        else:
            if v.tokens:
                engine.apply(Mint(100, v.symbol, v.tokens), TS, AT)
            for price, size in chunks(v):
                assert isinstance(engine.apply(PlaceOrder(101, v.symbol, BUY, price=price, qty=size), TS, AT),
                                  OrderView)
    engine.take_effects()
    return engine


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from([BUY, SELL]), st.integers(1, 80), modes, st.booleans())
def test_the_quote_equals_the_execution_when_nothing_changed(data, side, qty, mode, rest):
    venues = data.draw(books(side))
    limit = data.draw(limits if side == BUY else limits.filter(lambda x: x is not None))
    budget = data.draw(budgets) if side == BUY else None
    if limit is None and budget is None:
        budget = 700 * TICK
    engine = market(venues, side)
    account = 102 if side == BUY else 100
    rest = rest and limit is not None
    venues_now = routed_orders.venues(engine, "g", side, account, 100)
    quoted = route_planner.plan(venues_now, side, qty, mode, limit, budget, rest)
    result = engine.apply(RouteOrder(account, "g", side, qty, mode, limit, budget, rest), TS, AT)
    if side == SELL and not any(v.tokens for v in venues):
        assert result.code == "insufficient_tokens"
        return
    assert isinstance(result, RoutedOrder), result
    swept = [c for c in result.children if c.id != result.resting_order_id]
    assert [(c.symbol, c.filled_qty, c.filled_notional, c.fee) for c in swept] == \
        [(leg.symbol, leg.qty, leg.notional, leg.fee) for leg in quoted.legs]
    assert result.remainder == quoted.remainder
    resting = engine.orders.get(result.resting_order_id) if result.resting_order_id else None
    assert (resting is None) == (quoted.rest is None)
    if resting is not None:
        assert (resting.price, resting.qty) == (quoted.rest.price, quoted.rest.qty)
    # The one hold was released in full, bar what the resting order holds.
    held = engine.ledger.held(account, "CNY") if side == BUY else \
        sum(engine.ledger.held(account, v.symbol) for v in venues)
    assert held == (resting.held if resting is not None else 0)
