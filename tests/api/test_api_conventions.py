"""What trading tools and operators expect of an exchange: its clock, every ticker at once, health, the API page
and Prometheus metrics, on the real server."""

import os
import re
import time
from datetime import datetime

import httpx

from api.client import Client
from tests.support.api_server import Live


async def test_time_is_the_servers_clock_in_ms_and_iso(live: Live):
    async with Client(live.url) as anonymous:
        before = time.time_ns() // 1_000_000
        answer = await anonymous.call("GET", "/v1/time")
        after = time.time_ns() // 1_000_000
    assert before <= answer["epoch_ms"] <= after
    assert answer["iso"].endswith("Z")
    assert datetime.fromisoformat(answer["iso"]).timestamp() * 1000 == answer["epoch_ms"]


async def test_tickers_has_every_instrument_as_its_own_ticker_says(live: Live, market, new_account):
    symbol, issuer = market
    _, buyer = await new_account("trader", cash="100")
    await issuer.place_order(symbol, "sell", price="1.50", qty=5)
    await buyer.place_order(symbol, "buy", price="1.50", qty=2)
    async with Client(live.url) as anonymous:
        tickers = (await anonymous.call("GET", "/v1/tickers"))["items"]
        one = await anonymous.ticker(symbol)
        instruments = await anonymous.instruments()
    assert [t["symbol"] for t in tickers] == sorted(i["symbol"] for i in instruments)
    mine = next(t for t in tickers if t["symbol"] == symbol)
    assert mine == one
    assert (mine["last_price"], mine["volume_24h"], mine["best_ask"]) == ("1.5", 2, "1.5")


async def test_health_says_live_and_ready(live: Live):
    async with Client(live.url) as anonymous:
        health = await anonymous.call("GET", "/v1/health")
    assert health["live"] and health["ready"]
    assert (health["database"], health["sequencer"]) == ("ok", "ok")
    assert health["leader"]["pid"] == os.getpid()  # one process leads itself


async def test_health_is_a_503_while_the_exchange_cannot_take_commands(live: Live):
    sequencer = live.app.state.services.sequencer
    sequencer.down = "the database is unavailable (test)"
    try:
        async with Client(live.url) as anonymous:
            response = await anonymous.request("GET", "/v1/health")
    finally:
        sequencer.down = None
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == "unavailable"
    assert "Not ready" in response.json()["detail"]


async def test_the_api_page_is_served_locally_over_the_openapi_document(live: Live):
    async with httpx.AsyncClient(base_url=live.url) as http:
        page = await http.get("/docs")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(asset.startswith("/docs/assets/") for asset in assets)
        for asset in assets:
            assert (await http.get(asset)).status_code == 200
        assert "/v1/openapi.json" in (await http.get("/docs/assets/docs.js")).text
        document = (await http.get("/v1/openapi.json")).json()
    assert document["servers"] == [{"url": "/", "description": "This server"}]
    assert {"/v1/time", "/v1/tickers", "/v1/health"} <= set(document["paths"])


def metric(text: str, name: str) -> float:
    """The sample ``name`` (with its labels) of a Prometheus text page; 0 if absent, as a counter not yet counted."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_commands_batches_and_the_servers_parts(live: Live, market, new_account):
    symbol, issuer = market
    async with httpx.AsyncClient(base_url=live.url) as http:
        before = (await http.get("/metrics")).text
        await issuer.place_order(symbol, "sell", price="1.50", qty=5)
        refused = await issuer.request("POST", "/v1/orders", json={"symbol": symbol, "side": "sell", "type": "limit",
                                                                   "price": "1.50", "qty": 5000})
        assert refused.status_code == 409
        response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    ok = 'tokex_commands_total{command="place_order",result="ok"}'
    assert metric(after, ok) == metric(before, ok) + 1
    refusal = 'tokex_commands_total{command="place_order",result="insufficient_tokens"}'
    assert metric(after, refusal) == metric(before, refusal) + 1
    assert metric(after, "tokex_batch_commands_count") >= metric(before, "tokex_batch_commands_count") + 2
    assert metric(after, "tokex_batch_commit_seconds_sum") > 0
    assert "tokex_sequencer_queue_depth 0.0" in after
    assert "tokex_feed_connections 0.0" in after
    assert "tokex_feed_slow_consumer_closes_total 0.0" in after
    assert 'tokex_rate_limit_refusals_total{limit="key"} 0.0' in after
    assert metric(after, 'tokex_db_pool_connections{state="max"}') == 10
    assert metric(after, 'tokex_db_pool_connections{state="open"}') >= 1
