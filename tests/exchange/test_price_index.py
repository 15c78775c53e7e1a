"""The price index by hand: per-1M-token prices, trimming 10% of volume off each end with split trades, rounding,
and a naive model that expands every trade into single tokens."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.price_index import IndexTrade, IndexValue, compute, trimmed_mean, unit_price

CNY = 1_000_000


def test_a_price_per_lot_becomes_a_price_per_million_tokens() -> None:
    assert unit_price(IndexTrade(2 * CNY, 1, 1_000_000)) == 2 * CNY
    assert unit_price(IndexTrade(900_000, 1, 500_000)) == 1_800_000  # half a million tokens for 0.90
    assert unit_price(IndexTrade(5 * CNY, 1, 2_000_000)) == 2_500_000
    assert unit_price(IndexTrade(CNY, 1, 3_000_000)) == Fraction(1_000_000, 3)


def test_trimming_splits_the_trades_at_both_cuts() -> None:
    # Per 1M tokens, sorted: 1.80 x 10M tokens, 2.00 x 10M, 2.10 x 20M, 2.50 x 10M; W = 50M, cut 5M a side.
    # Kept: 5M of the 1.80 trade (split), all of 2.00 and 2.10, 5M of the 2.50 trade (split):
    # (5 x 1.80 + 10 x 2.00 + 20 x 2.10 + 5 x 2.50) / 40 = 83.5 / 40 = 2.0875 CNY per 1M tokens.
    trades = [
        IndexTrade(2 * CNY, 10, 1_000_000),
        IndexTrade(900_000, 20, 500_000),
        IndexTrade(5 * CNY, 5, 2_000_000),
        IndexTrade(2_100_000, 20, 1_000_000),
    ]
    assert compute(trades) == IndexValue(2_087_500, 4, 50_000_000, 20 * CNY + 18 * CNY + 25 * CNY + 42 * CNY)
    assert compute(reversed(trades)).value == 2_087_500


def test_a_trade_heavier_than_the_cut_keeps_only_its_share_inside() -> None:
    # 90M tokens at 1.00 and 10M at 3.00: the low cut takes 10M of the 1.00 trade, the high cut the whole 3.00
    # trade, so the index is 1.00 although the plain VWAP is 1.20.
    trades = [IndexTrade(CNY, 90, 1_000_000), IndexTrade(3 * CNY, 10, 1_000_000)]
    assert compute(trades).value == CNY


def test_one_trade_is_its_own_index() -> None:
    assert compute([IndexTrade(1_850_000, 1, 1_000_000)]).value == 1_850_000


def test_the_published_value_is_rounded_half_to_even_to_the_micro_yuan() -> None:
    assert compute([IndexTrade(CNY, 1, 3_000_000)]).value == 333_333  # 333,333.33...
    assert compute([IndexTrade(2 * CNY, 1, 3_000_000)]).value == 666_667  # 666,666.66...
    assert compute([IndexTrade(1, 1, 2_000_000)]).value == 0  # 0.5 goes to the even 0
    assert compute([IndexTrade(3, 1, 2_000_000)]).value == 2  # 1.5 goes to the even 2


def test_no_trade_is_stale_and_has_no_value() -> None:
    index = compute([])
    assert index == IndexValue(None, 0, 0, 0)
    assert index.stale


def test_trimmed_mean_refuses_no_weight() -> None:
    with pytest.raises(ValueError, match="positive total weight"):
        trimmed_mean([])


def naive_index(trades: list[IndexTrade]) -> Fraction:
    """One price per token, sorted; drop a tenth of the tokens at each end; average the rest."""
    tokens = sorted(p for t in trades for p in [unit_price(t)] * (t.qty * t.tokens_per_lot))
    cut = len(tokens) // 10
    kept = tokens[cut:len(tokens) - cut]
    return sum(kept, Fraction(0)) / len(kept)


trade = st.builds(IndexTrade, st.integers(1, 10**7), st.integers(1, 6), st.sampled_from([1, 2, 5]))


@given(st.lists(trade, min_size=1, max_size=8).filter(lambda ts: sum(t.qty * t.tokens_per_lot for t in ts) % 10 == 0))
def test_the_index_is_the_mean_of_the_middle_80_percent_of_tokens(trades: list[IndexTrade]) -> None:
    exact = naive_index(trades)
    assert trimmed_mean((unit_price(t), t.qty * t.tokens_per_lot) for t in trades) == exact
    assert compute(trades).value == round(exact)


@given(st.lists(trade, min_size=1, max_size=8), st.randoms())
def test_the_index_lies_within_the_prices_and_ignores_the_order(trades: list[IndexTrade], rng) -> None:
    value = compute(trades).value
    prices = [unit_price(t) for t in trades]
    assert round(min(prices)) <= value <= round(max(prices))
    shuffled = trades[:]
    rng.shuffle(shuffled)
    assert compute(shuffled).value == value
