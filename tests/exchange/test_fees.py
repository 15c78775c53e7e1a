"""Fee arithmetic: rounding in the exchange's favour, telescoping increments, holds that always cover, tiers."""

from hypothesis import given
from hypothesis import strategies as st

from exchange import fees
from exchange.fees import (
    DAY_US,
    FEE_TIERS,
    MICRO,
    VolumeTracker,
    budget_for_notional,
    buy_hold,
    fee_increment,
    fee_on,
    rate_ppm,
    tier_percent,
)

CNY = MICRO
notionals = st.integers(0, 10**15)
rates = st.integers(0, 10_000 * 100)  # ppm: up to 10,000 bps at 100 %


def test_fee_on_rounds_any_fraction_of_a_micro_yuan_up() -> None:
    assert fee_on(0, 2_000) == 0
    assert fee_on(1, 2_000) == 1
    assert fee_on(499, 2_000) == 1
    assert fee_on(500, 2_000) == 1
    assert fee_on(501, 2_000) == 2
    assert fee_on(1_000_000, 2_000) == 2_000
    assert fee_on(1_000_001, 2_000) == 2_001
    assert fee_on(10**12, 0) == 0


@given(notionals, rates)
def test_fee_on_is_the_exact_fee_rounded_up_by_less_than_one_micro_yuan(notional: int, ppm: int) -> None:
    fee = fee_on(notional, ppm)
    assert fee * MICRO >= notional * ppm
    assert (fee - 1) * MICRO < notional * ppm


@given(st.lists(st.integers(1, 10**12), max_size=20), rates)
def test_fee_increments_of_fills_sum_to_the_fee_on_the_total(fills: list[int], ppm: int) -> None:
    total = charged = 0
    for notional in fills:
        increment = fee_increment(total, total + notional, ppm)
        assert increment >= 0
        charged += increment
        total += notional
    assert charged == fee_on(total, ppm)


def test_rounding_happens_once_per_order_not_once_per_fill() -> None:
    # Three fills of 1 micro-yuan at 2,000 ppm: per fill that would be 3 x 1; per order it is ceil(0.006) = 1.
    increments = [fee_increment(n, n + 1, 2_000) for n in range(3)]
    assert increments == [1, 0, 0]


@st.composite
def buys_and_fills(draw) -> tuple[int, int, int, int, list[tuple[int, int, str]]]:
    """A buy limit (qty, price, maker ppm, taker ppm) and fills at or below its price, as maker or taker."""
    qty = draw(st.integers(1, 1_000))
    price = draw(st.integers(1, 10**9))
    maker_ppm = draw(rates)
    taker_ppm = draw(rates)
    fills = []
    left = qty
    while left and draw(st.booleans()):
        lots = draw(st.integers(1, left))
        fills.append((lots, draw(st.integers(1, price)), draw(st.sampled_from(("maker", "taker")))))
        left -= lots
    return qty, price, maker_ppm, taker_ppm, fills


@given(buys_and_fills())
def test_buy_hold_covers_every_split_of_fills_at_or_below_the_limit(case) -> None:
    qty, price, maker_ppm, taker_ppm, fills = case
    hold = buy_hold(qty, price, max(maker_ppm, taker_ppm))
    notional = {"maker": 0, "taker": 0}
    ppm = {"maker": maker_ppm, "taker": taker_ppm}
    spent = 0
    for lots, fill_price, role in fills:
        amount = lots * fill_price
        spent += amount + fee_increment(notional[role], notional[role] + amount, ppm[role])
        notional[role] += amount
    assert spent <= hold


def test_buy_hold_needs_its_extra_micro_yuan_when_both_roles_round_up() -> None:
    # 1 lot at 1 as maker and 1 lot at 1 as taker, 1 ppm each: fees 1 + 1, but the fee on 2 is only 1.
    spent = 1 + fee_on(1, 1) + 1 + fee_on(1, 1)
    assert spent == 4
    assert 2 + fee_on(2, 1) == 3
    assert buy_hold(2, 1, 1) == 4


def test_buy_hold_is_notional_plus_fee_plus_one() -> None:
    assert buy_hold(10, 1_850_000, 2_000) == 18_500_000 + 37_000 + 1
    assert buy_hold(5, 333, 2_000) == 1_665 + 4 + 1


@given(st.integers(1, 10**15), rates)
def test_budget_for_notional_is_the_largest_notional_that_fits_with_its_fee(budget: int, ppm: int) -> None:
    notional = budget_for_notional(budget, ppm)
    assert 0 <= notional <= budget
    assert notional + fee_on(notional, ppm) <= budget
    assert notional + 1 + fee_on(notional + 1, ppm) > budget


def test_budget_for_notional_leaves_room_for_the_fee() -> None:
    assert budget_for_notional(1_002_000, 2_000) == 1_000_000
    assert budget_for_notional(1_001_999, 2_000) == 999_999
    assert budget_for_notional(5 * CNY, 0) == 5 * CNY


def test_tier_thresholds_are_inclusive_and_ascending() -> None:
    assert [threshold for threshold, _ in FEE_TIERS] == sorted(threshold for threshold, _ in FEE_TIERS)
    assert tier_percent(0) == 100
    assert tier_percent(1_000_000 * CNY - 1) == 100
    assert tier_percent(1_000_000 * CNY) == 80
    assert tier_percent(10_000_000 * CNY - 1) == 80
    assert tier_percent(10_000_000 * CNY) == 60
    assert tier_percent(100_000_000 * CNY - 1) == 60
    assert tier_percent(100_000_000 * CNY) == 40
    assert tier_percent(10**18) == 40


@given(st.integers(0, 10**16), st.integers(0, 10**16))
def test_more_volume_never_pays_a_higher_tier(lower: int, higher: int) -> None:
    lower, higher = sorted((lower, higher))
    assert tier_percent(higher) <= tier_percent(lower)


def test_rate_ppm_applies_the_tier_percentage_to_basis_points() -> None:
    assert rate_ppm(20, 100) == 2_000  # 20 bps = 0.2 % = 2,000 ppm
    assert rate_ppm(10, 80) == 800
    assert fee_on(1 * CNY, rate_ppm(20, 100)) == 2_000


def test_volume_counts_the_trailing_30_days_including_today() -> None:
    tracker = VolumeTracker()
    start = 1_000 * DAY_US
    tracker.add(7, start, 100)
    tracker.add(7, start + DAY_US - 1, 20)  # the same day
    tracker.add(8, start, 5)
    assert tracker.trailing(7, start) == 120
    assert tracker.trailing(7, start + (fees.WINDOW_DAYS - 1) * DAY_US) == 120
    tracker.add(7, start + fees.WINDOW_DAYS * DAY_US, 3)
    assert tracker.trailing(7, start + fees.WINDOW_DAYS * DAY_US) == 3
    assert tracker.trailing(8, start) == 5
    assert tracker.trailing(9, start) == 0
