"""Fees as users see them: the fee schedule of an instrument, and an account's tier and what the next one needs.

Both come from ``exchange.fees``, the model the engine charges by: an account's tier is chosen by its trailing
notional traded (as maker or taker, on every instrument) over the ``WINDOW_DAYS`` UTC days up to and including
today, and scales the instrument's base maker and taker rates by the tier's percentage. The volume here is
summed from the committed fills exactly as the engine's ``VolumeTracker`` sums it. A new order takes the rates
of the tier at the time it is accepted and keeps them.

Rates are given as integers in parts per million of notional (``maker_ppm``), and as the same fraction of
notional in a decimal string (``maker_rate``: "0.0008" is 8 bps).
"""

import time
from datetime import UTC, datetime
from typing import Annotated

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints
from api.problems import Problem
from api.units import from_micro
from exchange.database.queries import sql
from exchange.fees import DAY_US, FEE_TIERS, WINDOW_DAYS, VolumeTracker, rate_ppm, tier_percent

fees = Endpoints("fees")

TierNumber = Annotated[int, Meta(ge=1, description="1 is the tier of no volume; higher tiers pay less.")]


class FeeTier(Struct):
    tier: TierNumber
    min_volume_30d: Annotated[str, Meta(description="CNY of trailing notional from which the tier applies.")]
    percent: Annotated[int, Meta(description="Percent of the instrument's base rates paid in this tier.")]


class NextTier(FeeTier):
    volume_needed: Annotated[str, Meta(description="CNY more of trailing notional to reach this tier.")]


class AccountFees(Struct):
    account_id: int
    tier: TierNumber
    percent: Annotated[int, Meta(description="Percent of each instrument's base rates that new orders pay.")]
    volume_30d: Annotated[str, Meta(description="CNY traded as maker or taker over the 30 UTC days up to and "
                                                "including today.")]
    window_days: int
    next_tier: Annotated[NextTier | None, Meta(description="Null in the top tier.")]
    tiers: list[FeeTier]


class TierRates(FeeTier):
    maker_ppm: Annotated[int, Meta(description="Parts per million of notional.")]
    taker_ppm: Annotated[int, Meta(description="Parts per million of notional.")]
    maker_rate: Annotated[str, Meta(description="maker_ppm as a fraction of notional.")]
    taker_rate: Annotated[str, Meta(description="taker_ppm as a fraction of notional.")]


class InstrumentFees(Struct):
    symbol: str
    maker_fee_bps: Annotated[int, Meta(description="The base maker rate, in basis points (tier 1).")]
    taker_fee_bps: Annotated[int, Meta(description="The base taker rate, in basis points (tier 1).")]
    tiers: list[TierRates]


DAILY_VOLUME = sql("daily_volume")
INSTRUMENT_RATES = sql("instrument_fee_rates")


def schedule() -> list[FeeTier]:
    return [FeeTier(number, from_micro(threshold), percent)
            for number, (threshold, percent) in enumerate(FEE_TIERS, 1)]


@fees.route("GET", "/v1/accounts/me/fees", summary="Own fee tier", scope="read", response=AccountFees)
async def account_fees(call: Call) -> AccountFees:
    """The key's account: its fee tier, trailing 30-day volume, and the volume the next tier needs."""
    now = time.time_ns() // 1000
    since = datetime.fromtimestamp((now // DAY_US - WINDOW_DAYS + 1) * DAY_US // 1_000_000, UTC)
    async with call.services.read_connection() as conn:
        days = await conn.fetch(DAILY_VOLUME, call.account_id, since)
    tracker = VolumeTracker()
    for _, day, notional in days:
        tracker.add(call.account_id, day, notional)
    volume = tracker.trailing(call.account_id, now)
    percent = tier_percent(volume)
    tiers = schedule()
    current = max(number for number, (threshold, _) in enumerate(FEE_TIERS, 1) if volume >= threshold)
    following = None
    if current < len(FEE_TIERS):
        threshold, next_percent = FEE_TIERS[current]
        following = NextTier(current + 1, from_micro(threshold), next_percent, from_micro(threshold - volume))
    return AccountFees(call.account_id, current, percent, from_micro(volume), WINDOW_DAYS, following, tiers)


@fees.route("GET", "/v1/instruments/{symbol}/fees", summary="Fee schedule", response=InstrumentFees,
            errors=("unknown_instrument",), params=schemas.SYMBOL_PARAM)
async def instrument_fees(call: Call) -> InstrumentFees:
    """The instrument's maker and taker rates in each fee tier."""
    symbol = call.params["symbol"]
    async with call.services.read_connection() as conn:
        row = await conn.fetchrow(INSTRUMENT_RATES, symbol)
    if row is None:
        raise Problem("unknown_instrument", field="symbol")
    maker_bps, taker_bps = row
    tiers = []
    for tier in schedule():
        maker, taker = rate_ppm(maker_bps, tier.percent), rate_ppm(taker_bps, tier.percent)
        tiers.append(TierRates(tier.tier, tier.min_volume_30d, tier.percent, maker, taker, from_micro(maker),
                               from_micro(taker)))
    return InstrumentFees(symbol, maker_bps, taker_bps, tiers)
