"""Fee tiers as users see them, checked against what the exchange then charges."""

import pytest

from api.client import ApiError, Client
from tests.support.api_server import Live, unique


async def test_an_instrument_shows_its_rates_in_every_tier(admin: Client, live: Live) -> None:
    symbol = unique("FEE").upper()
    await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="m", substitution_group="g",
                                  quality=50, tokens_per_lot=1_000_000, maker_fee_bps=5, taker_fee_bps=15)
    public = Client(live.url)
    schedule = await public.instrument_fees(symbol)
    assert schedule == {"symbol": symbol, "maker_fee_bps": 5, "taker_fee_bps": 15, "tiers": [
        {"tier": 1, "min_volume_30d": "0", "percent": 100, "maker_ppm": 500, "taker_ppm": 1500,
         "maker_rate": "0.0005", "taker_rate": "0.0015"},
        {"tier": 2, "min_volume_30d": "1000000", "percent": 80, "maker_ppm": 400, "taker_ppm": 1200,
         "maker_rate": "0.0004", "taker_rate": "0.0012"},
        {"tier": 3, "min_volume_30d": "10000000", "percent": 60, "maker_ppm": 300, "taker_ppm": 900,
         "maker_rate": "0.0003", "taker_rate": "0.0009"},
        {"tier": 4, "min_volume_30d": "100000000", "percent": 40, "maker_ppm": 200, "taker_ppm": 600,
         "maker_rate": "0.0002", "taker_rate": "0.0006"},
    ]}
    with pytest.raises(ApiError) as refused:
        await public.instrument_fees("NOPE")
    assert (refused.value.status, refused.value.code) == (404, "unknown_instrument")
    await public.aclose()


async def test_an_account_sees_its_tier_volume_and_the_next_tier_and_pays_it(admin: Client, new_account) -> None:
    symbol = unique("TIER").upper()
    await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="m", substitution_group="g",
                                  quality=50, tokens_per_lot=1_000_000)  # 10 and 20 bps
    seller_account, seller = await new_account("issuer", cash="1000")
    await admin.approve_issuer(seller_account["id"], symbol, 10_000)
    await seller.mint(symbol, 2_000)
    _, buyer = await new_account("trader", cash="1100000")

    fresh = await buyer.fees()
    assert {k: fresh[k] for k in ("tier", "percent", "volume_30d", "window_days")} == \
        {"tier": 1, "percent": 100, "volume_30d": "0", "window_days": 30}
    assert fresh["next_tier"] == {"tier": 2, "min_volume_30d": "1000000", "percent": 80, "volume_needed": "1000000"}
    assert [tier["percent"] for tier in fresh["tiers"]] == [100, 80, 60, 40]

    await seller.place_order(symbol, "sell", price="999.99", qty=1_000)
    first = await buyer.place_order(symbol, "buy", price="999.99", qty=1_000)
    assert first["fee"] == "1999.98"  # 20 bps at tier 1
    one_short = await buyer.fees()
    assert (one_short["tier"], one_short["volume_30d"], one_short["next_tier"]["volume_needed"]) == (1, "999990", "10")

    await seller.place_order(symbol, "sell", price="10", qty=1)
    await buyer.place_order(symbol, "buy", price="10", qty=1)  # taker at tier 1 still: the tier is fixed on accept
    reached = await buyer.fees()
    assert (reached["tier"], reached["percent"], reached["volume_30d"]) == (2, 80, "1000000")
    assert reached["next_tier"] == {"tier": 3, "min_volume_30d": "10000000", "percent": 60,
                                    "volume_needed": "9000000"}
    # The next order pays the tier's rate: 20 bps x 80% = 16 bps of 100 CNY.
    await seller.place_order(symbol, "sell", price="100", qty=1)
    taken = await buyer.place_order(symbol, "buy", price="100", qty=1)
    assert taken["fee"] == "0.16"
    assert (await seller.fees())["tier"] == 2, "maker volume counts too"

    async with Client(admin.base_url) as unsigned:
        with pytest.raises(ApiError) as refused:
            await unsigned.fees()
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
