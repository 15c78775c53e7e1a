"""The market-watch page at ``/`` in a real headless browser: Debian's chromium driven by Playwright (never a
downloaded browser). Screenshots are kept in var/artifacts/."""

import asyncio
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


async def test_the_page_shows_the_market_and_follows_the_feed(live):
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

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
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
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
        await expect(page.locator("#symbol")).to_have_text(compute.symbol)
        await expect(page.locator("#trades tr")).to_have_count(2)  # the hand-outs of open_market
        # The price index panel: one entry per substitution group, filled from the index channel once computed.
        panel = page.locator('#indices li[data-group="chat-general"]')
        await expect(panel.locator(".meta")).to_have_text("not computed yet")
        at = await compute_index(live)
        await expect(panel).to_have_attribute("data-at", iso(at))
        await expect(panel.locator(".value")).to_have_text("1")  # the hand-outs, 4,000 lots of 1M tokens at 1 CNY
        await expect(panel).to_have_attribute("data-stale", "false")
        await page.screenshot(path=ARTIFACTS / "market-watch-book.png", full_page=True)

        # A trade shows on the tape, the ladder and the chart.
        await buyer.place_order(compute.symbol, "buy", price="2.1", qty=3)
        await expect(page.locator("#trades tr").first).to_contain_text("2.1")
        await expect(page.locator('#asks tr[data-price="2.1"] td').nth(1)).to_have_text("2")
        await expect(page.locator("#last")).to_have_text("2.1")
        await expect(page.locator("#candles")).to_have_attribute("data-traded", "1")
        await page.screenshot(path=ARTIFACTS / "market-watch-trade.png", full_page=True)

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
        await expect(page.locator("#about")).to_contain_text("1,000 records")
        await page.locator('.intervals button[data-interval="1h"]').click()
        await expect(page.locator("#candles")).to_have_attribute("data-bins", "60")
        await page.screenshot(path=ARTIFACTS / "market-watch-resynced.png", full_page=True)
        await asyncio.sleep(0.2)
        await browser.close()

    assert problems == []
    outside = [url for url in requests if not url.startswith((live.url, ws_url(live)))]
    assert outside == [], "the page fetched something from elsewhere"
    await rest.aclose()
