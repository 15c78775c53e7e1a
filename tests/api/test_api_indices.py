"""The token price index over HTTP: trades through the API, the minute job run on the server with a stepped clock,
and the values and history read back."""

import asyncio
from datetime import datetime, timedelta

import pytest

from api.client import ApiError, Client
from exchange.indexer import MINUTE
from tests.support.api_server import Live, unique
from tests.support.index_clock import compute_index, iso, on_server
from tests.support.pages import every_item


async def group_market(admin: Client, new_account, group: str) -> tuple[Client, Client, list[str]]:
    """Two instruments of ``group``, of 1M and 2M tokens per lot; an issuer holding both and a funded trader."""
    account, issuer = await new_account("issuer", cash="1000")
    _, trader = await new_account("trader", cash="100000")
    symbols = []
    for tokens_per_lot in (1_000_000, 2_000_000):
        symbol = unique("IX").upper()
        await admin.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="m", substitution_group=group,
                                      quality=70, tokens_per_lot=tokens_per_lot)
        await admin.approve_issuer(account["id"], symbol, 10_000)
        await issuer.mint(symbol, 1_000)
        symbols.append(symbol)
    return issuer, trader, symbols


async def trade(seller: Client, buyer: Client, symbol: str, price: str, qty: int) -> None:
    await seller.place_order(symbol, "sell", price=price, qty=qty)
    await buyer.place_order(symbol, "buy", price=price, qty=qty)


async def test_the_index_of_a_group_is_listed_with_its_history(live: Live, admin: Client, new_account) -> None:
    group = unique("chat")
    issuer, trader, (one_m, two_m) = await group_market(admin, new_account, group)
    # Per 1M tokens: 1.00 x 8M tokens, 1.10 x 10M (2.20 a 2M lot), 3.00 x 2M; W = 20M, 2M cut a side:
    # (6 x 1.00 + 10 x 1.10) / 16 = 17 / 16 = 1.0625, the 3.00 outlier trimmed away.
    await trade(issuer, trader, one_m, "1", 8)
    await trade(issuer, trader, two_m, "2.2", 5)
    await trade(issuer, trader, one_m, "3", 2)
    at = await compute_index(live)

    public = Client(live.url)
    index = (await public.indices())[group]
    assert index == {"group": group, "at": at.isoformat().replace("+00:00", "Z"), "value": "1.0625", "stale": False,
                     "trades": 3, "volume_tokens": 20_000_000, "notional": "25", "computed_at": index["computed_at"]}

    # Three more minutes: newest first by default, paged by cursor; oldest first on request.
    at = await compute_index(live, minutes=3)
    first = await public.index_history(group, limit=2)
    assert [item["start"] for item in first["items"]] == [iso(at), iso(at - MINUTE)]
    assert all(item["index"]["value"] == "1.0625" for item in first["items"])
    second = await public.index_history(group, limit=2, cursor=first["next_cursor"])
    assert [item["start"] for item in second["items"]] == [iso(at - 2 * MINUTE), iso(at - 3 * MINUTE)]
    rest = await public.index_history(group, limit=500, start=iso(at - 62 * MINUTE), cursor=second["next_cursor"])
    assert rest["next_cursor"] is None and {item["index"]["value"] for item in rest["items"]} == {"1.0625"}
    assert len(rest["items"]) == 59, "the first run caught up an hour, the second three minutes"
    ascending = await public.index_history(group, order="asc", start=iso(at - 3 * MINUTE), limit=3)
    assert [item["start"] for item in ascending["items"]] == [iso(at - n * MINUTE) for n in (3, 2, 1)]
    following = await public.index_history(group, order="asc", start=iso(at - 3 * MINUTE),
                                           cursor=ascending["next_cursor"])
    assert [item["start"] for item in following["items"]] == [iso(at)]

    # An hourly bin holds the value of the last minute computed in it.
    hourly = await public.index_history(group, interval="1h", limit=1)
    assert hourly["items"][0]["start"] == iso(at.replace(minute=0))
    assert hourly["items"][0]["index"]["at"] == iso(at)
    await public.aclose()


async def test_a_group_without_trades_is_stale_not_extrapolated(live: Live, admin: Client) -> None:
    group = unique("quiet")
    await admin.create_instrument(kind="compute", symbol=unique("Q").upper(), tick="0.01", model="m",
                                  substitution_group=group, quality=70, tokens_per_lot=1_000_000)
    await compute_index(live)
    index = (await admin.indices())[group]
    assert (index["stale"], index["value"], index["trades"], index["volume_tokens"]) == (True, None, 0, 0)


async def test_history_refusals(live: Live, admin: Client) -> None:
    with pytest.raises(ApiError) as refused:
        await admin.index_history("no-such-group")
    assert (refused.value.status, refused.value.code, refused.value.field) == (404, "unknown_group", "group")
    group = unique("g")
    await admin.create_instrument(kind="compute", symbol=unique("G").upper(), tick="0.01", model="m",
                                  substitution_group=group, quality=70, tokens_per_lot=1_000_000)
    for query, code, field in (
        ({"cursor": "99999999999"}, "invalid_cursor", "cursor"),  # not a whole minute
        ({"cursor": "60", "interval": "5m"}, "invalid_cursor", "cursor"),
        ({"cursor": "x"}, "invalid_field", "cursor"),
        ({"interval": "2m"}, "invalid_field", "interval"),
        ({"start": "2026-11-28T10:00:00Z", "end": "2026-11-28T09:00:00Z"}, "out_of_range", "end"),
    ):
        with pytest.raises(ApiError) as refused:
            await admin.index_history(group, **query)
        assert (refused.value.status, refused.value.code, refused.value.field) == (422, code, field), query


async def test_the_server_runs_the_minute_job(live: Live) -> None:
    async def tasks() -> set[str]:
        return {task.get_name() for task in asyncio.all_tasks()}

    assert "price-index" in await on_server(live, tasks())


async def test_every_interval_pages_to_the_last_minute_of_each_bin(live: Live, admin: Client, new_account) -> None:
    group = unique("bins")
    issuer, trader, (one_m, _) = await group_market(admin, new_account, group)
    await trade(issuer, trader, one_m, "1.5", 3)
    await compute_index(live, minutes=1)
    # 70 minutes on, the job catches up the last hour only: ten minutes stay missing, and no bin is invented.
    at = await compute_index(live, minutes=70)
    minutes = (await admin.index_history(group, limit=1000))["items"]
    assert [m["start"] for m in minutes] == sorted((m["start"] for m in minutes), reverse=True)
    assert minutes[0]["start"] == iso(at)
    for interval, seconds in (("5m", 300), ("1h", 3600), ("1d", 86400)):
        expected: dict[str, dict] = {}
        for item in reversed(minutes):  # oldest first: the last one written to a bin is its newest minute
            moment = datetime.fromisoformat(item["start"])
            start = moment - timedelta(seconds=int(moment.timestamp()) % seconds)
            expected[iso(start)] = item["index"]
        for order in ("asc", "desc"):
            items = await every_item(lambda **query: admin.index_history(group, **query),
                                     interval=interval, order=order, limit=4)
            pages = [(item["start"], item["index"]) for item in items]
            wanted = sorted(expected.items(), reverse=order == "desc")
            assert pages == wanted, (interval, order)
