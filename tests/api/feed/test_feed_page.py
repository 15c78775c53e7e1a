"""The market-watch page at ``/`` in a real headless browser: Debian's chromium driven by Playwright (never a
downloaded browser), at 1400 and at 400 px wide, and as ``chromium --headless`` takes a picture on virtual time.
Screenshots are kept in var/artifacts/ and their paths printed."""

import asyncio
import re
from datetime import datetime
from pathlib import Path

import pytest

from api.client import Client
from tests.support.feed import open_market, ws_url
from tests.support.index_clock import compute_index, iso

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "artifacts"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="the page test needs Debian's chromium at /usr/bin/chromium: run `apt-get install -y chromium` as root "
           "(.ci/run does), then run the tests again")]
async_api = pytest.importorskip("playwright.async_api", reason="install the test extras: pip install -e '.[test]'")

# Every price the page writes, in the ladder, the tape, the ticker, the spread row and the instrument list; those
# not written with exactly `decimals` decimals.
OFF_TICK = """decimals => {
    const texts = [...document.querySelectorAll('#asks td:first-child, #bids td:first-child, #trades td:first-child,'
        + ' #last, #high, #low, #book-last, .instruments .price')].map(element => element.textContent);
    const tick = new RegExp(`^\\\\d+\\\\.\\\\d{${decimals}}$`);
    return {count: texts.length, off: texts.filter(text => text !== '\u2014' && !tick.test(text))};
}"""

# The chart's bars that have trades, and for each whether the pane shows the bar's colour where its close is.
DRAWN = """() => {
    const {chart, candles} = window.tokex.chart;
    const pane = [...document.querySelectorAll('#candles canvas')]
        .sort((a, b) => b.width * b.height - a.width * a.height)[0];
    const ratio = pane.width / pane.clientWidth;
    const context = pane.getContext('2d');
    return candles.data().filter(bar => bar.open !== undefined).map(bar => {
        const x = chart.timeScale().timeToCoordinate(bar.time);
        const y = candles.priceToCoordinate(bar.close);
        const colour = bar.close >= bar.open ? [22, 199, 132] : [234, 57, 67];
        let drawn = false;
        for (let dy = -1; x !== null && y !== null && dy <= 1; dy++) {
            const [r, g, b] = context.getImageData(Math.round(x * ratio), Math.round((y + dy) * ratio), 1, 1).data;
            drawn ||= r === colour[0] && g === colour[1] && b === colour[2];
        }
        return {time: bar.time, open: bar.open, high: bar.high, low: bar.low, close: bar.close, drawn};
    });
}"""

# What sticks out sideways at the current width: the page, and any ticker cell or table cell cut off.
OVERFLOW = """() => ({
    page: document.documentElement.scrollWidth - window.innerWidth,
    cells: [...document.querySelectorAll('.ticker div, #ladder td, #trades td, .instruments button')]
        .filter(element => element.scrollWidth > element.clientWidth
                           || element.getBoundingClientRect().right > window.innerWidth)
        .map(element => element.textContent),
})"""


def rest_bars(candles: dict) -> list[dict]:
    """The traded bins of a REST candles answer as the chart holds them."""
    return [{"time": int(datetime.fromisoformat(c["start"]).timestamp()), "open": float(c["open"]),
             "high": float(c["high"]), "low": float(c["low"]), "close": float(c["close"])}
            for c in candles["items"] if c["volume"]]


async def chart_bars(page) -> list[dict]:
    """The chart's traded bars, once the pane has drawn them; the last-price line (the colour of the last bar)
    is hidden so that only the bars are looked at."""
    await page.evaluate("window.tokex.chart.candles.applyOptions({priceLineVisible: false})")
    await page.wait_for_function(f"(bars => bars.length > 0 && bars.every(bar => bar.drawn))(({DRAWN})())")
    return [{key: bar[key] for key in ("time", "open", "high", "low", "close")} for bar in await page.evaluate(DRAWN)]


def show(capsys, *paths: Path) -> None:
    with capsys.disabled():
        print("\nscreenshots: " + " ".join(str(path) for path in paths))


async def test_the_page_shows_the_market_and_follows_the_feed(live, capsys):
    compute = await open_market(live, traders=2)
    dataset = await open_market(live, traders=1, kind="dataset")
    seller, buyer = compute.traders
    for price, qty in (("2.3", 7), ("2.1", 5), ("2.2", 9)):
        await seller.place_order(compute.symbol, "sell", price=price, qty=qty)
    for price, qty in (("1.9", 4), ("1.8", 12)):
        await buyer.place_order(compute.symbol, "buy", price=price, qty=qty)
    await buyer.place_order(dataset.symbol, "buy", price="0.5", qty=3)
    rest = Client(live.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wide, narrow = ARTIFACTS / "market-watch-1400.png", ARTIFACTS / "market-watch-400.png"

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1400, "height": 900})
        requests: list[str] = []
        problems: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        expect = async_api.expect

        await page.goto(f"{live.url}/#{compute.symbol}")
        await expect(page.locator(f'#compute button[data-symbol="{compute.symbol}"]')).to_be_visible()
        await expect(page.locator(f'#dataset button[data-symbol="{dataset.symbol}"]')).to_be_visible()
        book = await rest.book(compute.symbol)
        await expect(page.locator("#ladder")).to_have_attribute("data-seq", str(book["seq"]))
        await expect(page.locator("#asks tr")).to_have_count(3)
        await expect(page.locator("#asks tr").last).to_have_attribute("data-price", "2.1")  # best ask by the spread
        await expect(page.locator("#bids tr").first).to_have_attribute("data-price", "1.9")
        # Prices padded to the tick (0.01), cumulative lots, and the spread row's last price, mid and spread.
        await expect(page.locator("#asks tr").last.locator("td")).to_have_text(["2.10", "5", "5"])
        await expect(page.locator("#asks tr").first.locator("td")).to_have_text(["2.30", "7", "21"])
        await expect(page.locator("#bids tr").last.locator("td")).to_have_text(["1.80", "12", "16"])
        await expect(page.locator("#book-last")).to_have_text("1.00")  # the hand-outs of open_market
        await expect(page.locator("#mid")).to_have_text("mid 2.00 · spread 0.20 (10.00%)")
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        await expect(page.locator("#symbol")).to_have_text(compute.symbol)
        await expect(page.locator("#trades tr")).to_have_count(2)
        await expect(page.locator("#trades tr").first.locator("td").first).to_have_text("1.00")
        await expect(page.locator(f'#dataset button[data-symbol="{dataset.symbol}"] .price')).to_have_text("1.00")
        await expect(page.locator(f'#compute button[data-symbol="{compute.symbol}"] .volume')).to_have_text(
            "4,000 lots 24h")
        # The candle chart holds the REST history's traded bins and draws them.
        history = await rest.call("GET", f"/v1/instruments/{compute.symbol}/candles",
                                  params={"interval": "1m", "limit": 300})
        await expect(page.locator("#candles")).to_have_attribute("data-bins", "300")
        assert rest_bars(history) and await chart_bars(page) == rest_bars(history)
        # The price index panel: one entry per substitution group, filled from the index channel once computed
        # (the server's own minute job may have computed one already, from the wall clock: stale when the test's
        # trades are not in the 24 h before it).
        panel = page.locator('#indices li[data-group="chat-general"]')
        await expect(panel.locator(".meta")).to_have_text(
            re.compile("not computed yet|tokens in 24 h|no trades in the 24 h to"))
        at = await compute_index(live)
        await expect(panel).to_have_attribute("data-at", iso(at))
        await expect(panel.locator(".value")).to_have_text("1.0000")  # 4,000 lots of 1M tokens at 1 CNY
        await expect(panel.locator(".meta")).to_contain_text("trades · 4.0B tokens in 24 h")
        await expect(panel).to_have_attribute("data-stale", "false")
        await expect(panel.locator(".history")).to_have_attribute("data-points", re.compile(r"^[1-9]"))

        # A trade shows on the tape, the ladder, the ticker and the chart.
        await buyer.place_order(compute.symbol, "buy", price="2.1", qty=3)
        await expect(page.locator("#trades tr").first.locator("td")).to_have_text(["2.10", "3", re.compile(":")])
        await expect(page.locator('#asks tr[data-price="2.1"] td').nth(1)).to_have_text("2")
        await expect(page.locator("#last")).to_have_text("2.10")
        await expect(page.locator("#book-last")).to_have_text("2.10")
        await expect(page.locator("#change")).to_have_text("+1.10 (+110.00%)")
        await expect(page.locator("#ohlc")).to_contain_text("C 2.10")
        assert [bar["close"] for bar in await chart_bars(page)][-1] == 2.1
        aligned = await page.evaluate(OFF_TICK, 2)
        assert aligned["count"] >= 12 and aligned["off"] == [], aligned
        await page.screenshot(path=wide)
        assert (await page.evaluate(OVERFLOW)) == {"page": 0, "cells": []}
        # The panels reach the bottom of the window: no empty band below them.
        bottom = await page.evaluate("Math.max(...[...document.querySelectorAll('main > *')]"
                                     ".map(panel => panel.getBoundingClientRect().bottom))")
        assert bottom > 900 - 40

        # A phone: one column, nothing wider than the screen, the chart still a chart.
        await page.set_viewport_size({"width": 400, "height": 900})
        await expect(page.locator("#candles")).to_have_attribute("data-traded", re.compile(r"[1-9]"))
        await page.wait_for_function("window.tokex.chart.chart.timeScale().width() > 250")
        assert (await page.evaluate(OVERFLOW)) == {"page": 0, "cells": []}
        box = await page.locator("#candles").bounding_box()
        assert box["width"] >= 340 and box["height"] >= 280
        ladder = await page.locator("#ladder").bounding_box()
        assert ladder["width"] >= 340
        assert (await page.evaluate(OFF_TICK, 2))["off"] == []
        await page.screenshot(path=narrow, full_page=True)
        await page.set_viewport_size({"width": 1400, "height": 900})

        # A gap in the sequence, or a book that no longer matches its checksum, makes the page resync by itself.
        await page.evaluate("window.tokex.book.seq -= 1")
        await seller.place_order(compute.symbol, "sell", price="2.4", qty=1)
        await expect(page.locator('#asks tr[data-price="2.4"]')).to_have_count(1)
        await page.evaluate("window.tokex.book.bids.set('1.9', 999)")
        await buyer.place_order(compute.symbol, "buy", price="1.7", qty=1)
        await expect(page.locator('#bids tr[data-price="1.7"]')).to_have_count(1)
        await expect(page.locator('#bids tr[data-price="1.9"] td').nth(1)).to_have_text("4")
        assert await page.evaluate("window.tokex.resyncs") == 2

        # The server drops the connection; while it is away the book moves; the page reconnects and catches up.
        hub = live.app.state.feed
        live.loop.call_soon_threadsafe(lambda: [c.close(1012, "restarting") for c in list(hub.connections)])
        await buyer.place_order(compute.symbol, "buy", price="1.95", qty=6)
        await expect(page.locator('#bids tr[data-price="1.95"]')).to_have_count(1)
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        assert await page.evaluate("window.tokex.reconnects") >= 1
        book = await rest.book(compute.symbol)
        await expect(page.locator("#ladder")).to_have_attribute("data-seq", str(book["seq"]))
        ladder = await page.evaluate("""() => [...document.querySelectorAll('#asks tr, #bids tr')]
            .map(row => [row.dataset.price, Number(row.cells[1].textContent)])""")
        assert ladder == [[level["price"], level["qty"]] for level in reversed(book["asks"])] + \
            [[level["price"], level["qty"]] for level in book["bids"]]

        # Another instrument, and another interval.
        await page.locator(f'#dataset button[data-symbol="{dataset.symbol}"]').click()
        await expect(page.locator("#bids tr")).to_have_count(1)
        await expect(page.locator("#bids tr td").first).to_have_text("0.50")
        await expect(page.locator("#about")).to_contain_text("1,000 records")
        await page.locator('.intervals button[data-interval="1h"]').click()
        await expect(page.locator("#candles")).to_have_attribute("data-bins", "300")
        await expect(page.locator("#candles")).to_have_attribute("data-traded", "1")
        await asyncio.sleep(0.2)
        await browser.close()

    assert problems == []
    outside = [url for url in requests if not url.startswith((live.url, ws_url(live)))]
    assert outside == [], "the page fetched something from elsewhere"
    await rest.aclose()
    show(capsys, wide, narrow)


async def test_a_headless_screenshot_on_virtual_time_shows_the_live_market(live, capsys, tmp_path):
    """``chromium --headless --screenshot --virtual-time-budget``: virtual time runs ahead as soon as no HTTP
    request is pending, so the page must be drawn from REST and its socket opened while those requests run."""
    market = await open_market(live, traders=1)
    await market.traders[0].place_order(market.symbol, "buy", price="0.9", qty=5)
    url = f"{live.url}/#{market.symbol}"
    picture = ARTIFACTS / "market-watch-virtual-time.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def chromium(*options: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(CHROMIUM), *ARGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
            "--virtual-time-budget=8000", *options, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0
        return out.decode()

    page = await chromium("--dump-dom")
    assert re.search(r'id="status"[^>]*data-state="live"', page), "the picture would show a page still connecting"
    assert re.search(r'<tr data-price="0.9"[^>]*><td>0.90</td><td>5</td>', page)
    assert re.search(r'id="candles"[^>]*data-traded="1"', page)
    await chromium(f"--screenshot={picture}")
    assert picture.stat().st_size > 10_000
    show(capsys, picture)
    for client in (market.issuer, *market.traders):
        await client.aclose()
