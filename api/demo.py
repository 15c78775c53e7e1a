"""A demo market: instruments, sellers with minted capacity, buyers with cash, and a gentle flow of orders.

``tokex demo`` serves the API (``api.server``) and, once it listens, calls ``starter(...)``'s coroutine, which
seeds the market through the public API and keeps it alive with a simulated flow, also through the public
API, one signed client per simulated account.

The market
----------
Three compute blocks of one substitution group (``chat-general``), 1 lot = 1M tokens, priced in CNY per lot
where telecom token packages put them (400,000 tokens for 1 CNY is 2.50 per 1M; 10M tokens for 9.90 CNY a
month is 0.99 per 1M): DEEPSEEK-V3 around 2.20, GLM-4.5 around 1.80, XINGCHEN around 1.10. Two dataset
tokens, each issued by its data owner: DS-STEEL-QC (steel surface inspection records) and DS-MACHINE-MAINT
(machine-tool maintenance records), one token = 1,000 records; their owners publish structured terms (one
redeemed token: 30 days and 10 downloads) and a sample file.

Accounts: three compute sellers and two dataset issuers who mint and offer, three buyers who bid, take and
redeem what they bought (they consume the tokens). ``demo-seller`` and ``demo-buyer`` are left to the person
trying the demo: the flow never touches them. The keys printed are new at every start (a secret is shown once);
the previous demo keys of these accounts are revoked.

Seeding happens once per database: an existing DEEPSEEK-V3 means the market is there, and a later start only
makes new keys, cancels the simulated accounts' orders of the last run and restarts the flow.

Delivery
--------
Every start also runs a simulated provider per compute instrument (``api.inference.simulated``, a process of its
own on a free port, which the exchange reaches over HTTP as any provider), registers it as the upstream of each
compute seller for that instrument, and gives ``demo-buyer`` an inference key; the first start has it buy and
redeem ``DEMO_REDEEMED`` lots of DEEPSEEK-V3, a quota of 10M tokens, and ``demo-seller`` publish a subscription
offer of DEEPSEEK-V3 tokens ("10M tokens a month for 9.90 CNY", ``exchange.subscriptions``) to which
``demo-buyer`` subscribes, a second quota beside the first. The banner prints the ``OPENAI_BASE_URL``
and ``OPENAI_API_KEY`` that point any OpenAI client at the gateway. The providers stop with the demo.

The flow
--------
About ``rate`` actions a second (Poisson), each on one instrument whose fair price takes a small random walk
within a band: ~40% an offer a few ticks above fair, ~40% a bid a few ticks below, ~15% a market order that
takes the touch, ~5% a redemption. Each account keeps at most ``MAX_OPEN`` orders per instrument, cancelling its
oldest; a seller out of tokens mints more, a buyer out of cash is topped up by the admin. Refusals are part of
the game and are only counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import sys
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

import matching.book
from api.client import ApiError, Client
from api.keys import KeyStore, bearer_token
from api.server import Server
from api.units import from_micro, to_micro
from exchange.broker.commands import RemoteSequencer
from exchange.commands import CreateAccount, Done
from exchange.database.queries import sql
from exchange.sequencer import Sequencer

ACCOUNT_BY_NAME = sql("account_by_name")

log = logging.getLogger(__name__)

TICK = 10_000  # 0.01 CNY
MAX_OPEN = 4
KEY_LABEL = "demo"
REPORT_SECONDS = 60.0
SCOPES = {"admin": ["read", "admin"], "issuer": ["read", "trade", "issue"], "trader": ["read", "trade"]}


@dataclass
class Market:
    """One instrument of the demo and the random walk of its fair price (micro-yuan per lot)."""

    symbol: str
    fair: int
    low: int
    high: int
    lots: tuple[int, int]
    """Size range of a maker order, in lots."""
    listing: dict
    sellers: list[str] = field(default_factory=list)

    def walk(self, rng: random.Random) -> int:
        step = rng.choice((-1, 0, 0, 1)) * TICK * max(1, self.fair // 2_000_000)
        self.fair = min(self.high, max(self.low, self.fair + step))
        return self.fair


def compute(symbol: str, model: str, quality: int, fair: str, low: str, high: str) -> Market:
    return Market(symbol, to_micro(fair, "fair"), to_micro(low, "low"), to_micro(high, "high"), (20, 200), {
        "kind": "compute", "symbol": symbol, "tick": from_micro(TICK), "model": model,
        "substitution_group": "chat-general", "quality": quality, "tokens_per_lot": 1_000_000,
    })


def dataset(symbol: str, issuer: str, description: str, grants: str, fair: str, low: str, high: str) -> Market:
    return Market(symbol, to_micro(fair, "fair"), to_micro(low, "low"), to_micro(high, "high"), (1, 20), {
        "kind": "dataset", "symbol": symbol, "tick": from_micro(TICK), "description": description,
        "license": "Model training and internal analytics by the holder; no redistribution of the records.",
        "grants": grants, "supply_cap": 100_000,
    }, [issuer])


def markets() -> list[Market]:
    return [
        compute("DEEPSEEK-V3", "deepseek-v3", 90, "2.20", "1.90", "2.50"),
        compute("GLM-4.5", "glm-4.5", 88, "1.80", "1.50", "2.20"),
        compute("XINGCHEN", "xingchen", 80, "1.10", "0.95", "1.40"),
        dataset("DS-STEEL-QC", "steel-qc-lab",
                "Surface inspections of hot-rolled steel strip: defect class, position and grade, with the line's "
                "speed, temperature and thickness at the time.", "1,000 inspection records", "12", "10", "15"),
        dataset("DS-MACHINE-MAINT", "machine-tool-service",
                "Maintenance records of CNC machine tools: spindle vibration and temperature before each alarm, "
                "the alarm, and the repair done.", "1,000 maintenance records", "6.5", "5", "8"),
    ]


COMPUTE_SELLERS = ["yunfeng-cloud", "telecom-compute", "lakeside-gpu"]
BUYERS = ["agent-platform", "chat-app", "factory-analytics"]
DEMO_SELLER, DEMO_BUYER, ADMIN = "demo-seller", "demo-buyer", "admin"
BUYER_CASH = "200000"
SELLER_MINT = 20_000
CAPACITY = 1_000_000
DEMO_REDEEMED = 10
DEMO_SUBSCRIPTION_TOKENS, DEMO_SUBSCRIPTION_PRICE = 10_000_000, "9.90"
"""The demo seller's subscription offer, the demo buyer's subscription: a telecom operator's monthly package."""
"""DEEPSEEK-V3 lots the demo buyer redeems at the first start: its quota for the gateway."""
PROVIDER_START_SECONDS = 30.0


@dataclass
class Account:
    name: str
    role: str
    id: int
    client: Client
    key_id: str = ""
    secret: str = ""


class SimulatedProviders:
    """The demo's simulated providers: one process per compute instrument, on a free port each."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []
        self.urls: dict[str, str] = {}
        """Symbol -> the OpenAI base URL of its simulated provider."""

    async def start(self, markets: list[Market]) -> None:
        for market in markets:
            if market.listing["kind"] != "compute":
                continue
            port = free_port()
            self.processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "api.inference.simulated", "--port", str(port), "--model",
                market.listing["model"]))
            self.urls[market.symbol] = f"http://127.0.0.1:{port}/v1"
        async with httpx.AsyncClient(timeout=1) as client:
            for url in self.urls.values():
                await ready(client, url)

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                await process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def ready(client: httpx.AsyncClient, url: str) -> None:
    """Wait until the provider at ``url`` answers."""
    deadline = asyncio.get_running_loop().time() + PROVIDER_START_SECONDS
    while True:
        try:
            (await client.get(url + "/models")).raise_for_status()
            return
        except httpx.HTTPError:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the simulated provider at {url} did not start") from None
            await asyncio.sleep(0.1)


@dataclass
class Demo:
    """The seeded market and its flow, on a running server."""

    pool: asyncpg.Pool
    sequencer: Sequencer | RemoteSequencer
    """Creates the admin account, the one thing not done through the API."""
    keys: KeyStore
    url: str
    rate: float
    rng: random.Random
    markets: list[Market] = field(default_factory=markets, init=False)
    accounts: dict[str, Account] = field(default_factory=dict, init=False)
    open: dict[tuple[str, str], deque[int]] = field(default_factory=dict, init=False)
    counts: Counter[str] = field(default_factory=Counter, init=False)
    providers: SimulatedProviders = field(default_factory=SimulatedProviders, init=False)
    inference_token: str = field(default="", init=False)
    """The demo buyer's inference key, as a bearer token."""

    # -- seeding ---------------------------------------------------------------------------------------------

    async def seed(self) -> None:
        admin = await self.account(ADMIN, "admin")
        listed = {item["symbol"] for item in await admin.client.instruments()}
        fresh = self.markets[0].symbol not in listed
        compute_symbols = [m.symbol for m in self.markets if m.listing["kind"] == "compute"]
        for market in self.markets:
            if market.listing["kind"] == "compute":
                market.sellers = list(COMPUTE_SELLERS)
        for name in COMPUTE_SELLERS:
            await self.account(name, "issuer")
        for market in self.markets:
            if market.listing["kind"] == "dataset":
                await self.account(market.sellers[0], "issuer")
        for name in BUYERS:
            await self.account(name, "trader")
        await self.account(DEMO_SELLER, "issuer")
        await self.account(DEMO_BUYER, "trader")
        if not fresh:
            # A restart: the flow's orders of the last run rest at stale prices and nobody tracks them any more.
            for market in self.markets:
                for name in [*market.sellers, *BUYERS]:
                    await self.accounts[name].client.cancel_all(market.symbol)
            await self.serve_inference(fresh)
            return
        for market in self.markets:
            listing = dict(market.listing)
            if listing["kind"] == "dataset":
                listing["issuer_id"] = self.accounts[market.sellers[0]].id
            if market.symbol not in listed:
                await admin.client.create_instrument(**listing)
            for name in market.sellers:
                await self.mint(name, market.symbol, SELLER_MINT if market.listing["kind"] == "compute" else 5_000)
        for market in self.markets:
            if market.listing["kind"] == "dataset":
                await self.publish_dataset(market)
        for symbol in compute_symbols:
            await self.mint(DEMO_SELLER, symbol, 1_000)
        for name in BUYERS:
            await admin.client.deposit(self.accounts[name].id, BUYER_CASH)
        await admin.client.deposit(self.accounts[DEMO_BUYER].id, "10000")
        for market in self.markets:
            await self.ladder(market)
        await self.serve_inference(fresh)

    async def serve_inference(self, fresh: bool) -> None:
        """Simulated providers for the compute instruments, registered for every compute seller; the demo buyer's
        quota (at the first start) and inference key."""
        await self.providers.start(self.markets)
        for market in self.markets:
            url = self.providers.urls.get(market.symbol)
            if url is not None:
                for name in market.sellers:
                    await self.accounts[name].client.register_provider(market.symbol, url, market.listing["model"])
        buyer = self.accounts[DEMO_BUYER]
        if fresh:
            symbol = self.markets[0].symbol
            await buyer.client.place_order(symbol, "buy", type="market", qty=DEMO_REDEEMED)
            await buyer.client.redeem(symbol, DEMO_REDEEMED)
            offer = await self.accounts[DEMO_SELLER].client.publish_subscription_offer(
                symbol, DEMO_SUBSCRIPTION_TOKENS, "month", DEMO_SUBSCRIPTION_PRICE)
            await buyer.client.subscribe(offer["id"])
        key, secret = await self.keys.create(buyer.id, ["inference"], KEY_LABEL)
        self.inference_token = bearer_token(key.id, secret)

    async def publish_dataset(self, market: Market) -> None:
        """The dataset's license as structured terms, and a sample of its records as its first file."""
        issuer = self.accounts[market.sellers[0]].client
        await issuer.publish_terms(market.symbol, permitted_use=["model_training", "internal"], redistribution=False,
                                   attribution=f"{market.sellers[0]}, {market.symbol}", days_per_token=30,
                                   downloads_per_token=10, text=market.listing["license"])
        rows = "\n".join(f"{n},{self.rng.randrange(1_000_000)},{self.rng.choice('ABCD')}" for n in range(1_000))
        await issuer.upload_file(market.symbol, "sample.csv", f"record,reading,grade\n{rows}\n".encode())

    async def account(self, name: str, role: str) -> Account:
        """The account ``name`` (created if missing) with a new demo key; its older demo keys are revoked."""
        async with self.pool.acquire() as conn:
            account_id = await conn.fetchval(ACCOUNT_BY_NAME, name)
        if account_id is None:
            if role == "admin":
                done = await self.sequencer.submit(CreateAccount(name, role))
                assert isinstance(done, Done) and done.id is not None, done
                account_id = done.id
            else:
                account_id = (await self.accounts[ADMIN].client.create_account(name, role))["id"]
        keys = self.keys
        for row in await keys.list(account_id):
            if row.label == KEY_LABEL and row.revoked_at is None:
                await keys.revoke(row.id)
        key, secret = await keys.create(account_id, SCOPES[role], KEY_LABEL)
        account = Account(name, role, account_id, Client(self.url, key.id, secret), key.id, secret)
        self.accounts[name] = account
        return account

    async def mint(self, name: str, symbol: str, qty: int) -> None:
        admin = self.accounts[ADMIN].client
        account = self.accounts[name]
        with contextlib.suppress(ApiError):
            await admin.approve_issuer(account.id, symbol, CAPACITY)
        await account.client.mint(symbol, qty)

    async def ladder(self, market: Market) -> None:
        """A few levels each side, then one trade so the ticker has a last price."""
        low, high = market.lots
        for level in range(1, 5):
            for name in market.sellers:
                await self.place(name, market.symbol, "sell", market.fair + level * 2 * TICK,
                                 self.rng.randint(low, high))
            for name in BUYERS:
                await self.place(name, market.symbol, "buy", market.fair - level * 2 * TICK,
                                 self.rng.randint(low, high) // 2 or 1)
        await self.take(BUYERS[0], market.symbol, "buy", max(1, low // 2))

    # -- the flow --------------------------------------------------------------------------------------------

    async def flow(self) -> None:
        if self.rate <= 0:
            return
        reported = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.rng.expovariate(self.rate))
            try:
                await self.step()
            except ApiError as exc:
                self.counts[f"refused {exc.code}"] += 1
            except httpx.HTTPError as exc:
                log.warning("demo flow: %s; pausing", exc)
                await asyncio.sleep(1.0)
            now = asyncio.get_running_loop().time()
            if now - reported >= REPORT_SECONDS:
                reported = now
                log.info("demo flow, last %.0f s: %s", REPORT_SECONDS,
                         ", ".join(f"{what} {n}" for what, n in self.counts.most_common()))
                self.counts.clear()

    async def step(self) -> None:
        rng = self.rng
        market = rng.choices(self.markets, weights=[3, 3, 3, 1, 1])[0]
        fair = market.walk(rng)
        low, high = market.lots
        roll = rng.random()
        if roll < 0.40:
            price = fair + rng.randint(1, 6) * TICK
            await self.place(rng.choice(market.sellers), market.symbol, "sell", price, rng.randint(low, high))
        elif roll < 0.80:
            price = max(TICK, fair - rng.randint(1, 6) * TICK)
            await self.place(rng.choice(BUYERS), market.symbol, "buy", price, max(1, rng.randint(low, high) // 2))
        elif roll < 0.95:
            if rng.random() < 0.7:
                await self.take(rng.choice(BUYERS), market.symbol, "buy", max(1, rng.randint(low, high) // 4))
            else:
                await self.take(rng.choice(market.sellers), market.symbol, "sell", max(1, rng.randint(low, high) // 4))
        else:
            await self.redeem(rng.choice(BUYERS), market)

    async def place(self, name: str, symbol: str, side: str, price: int, qty: int) -> None:
        account = self.accounts[name]
        try:
            order = await account.client.place_order(symbol, side, price=from_micro(price), qty=qty)
        except ApiError as exc:
            if exc.code == "insufficient_tokens" and account.role == "issuer":
                await account.client.mint(symbol, SELLER_MINT // 4 if qty > 20 else 1_000)
                self.counts["mints"] += 1
            elif exc.code == "insufficient_funds":
                await self.accounts[ADMIN].client.deposit(account.id, BUYER_CASH)
                self.counts["top-ups"] += 1
            raise
        self.counts["orders"] += 1
        if order["fills"]:
            self.counts["orders that traded"] += 1
        if order["status"] == "open":
            mine = self.open.setdefault((name, symbol), deque())
            mine.append(order["id"])
            while len(mine) > MAX_OPEN:
                with contextlib.suppress(ApiError):  # it may have filled meanwhile
                    await account.client.cancel_order(mine.popleft())
                    self.counts["cancels"] += 1

    async def take(self, name: str, symbol: str, side: str, qty: int) -> None:
        order = await self.accounts[name].client.place_order(symbol, side, type="market", qty=qty)
        self.counts["market orders"] += 1
        if order["fills"]:
            self.counts["orders that traded"] += 1

    async def redeem(self, name: str, market: Market) -> None:
        account = self.accounts[name]
        symbol = market.symbol
        held = int((await account.client.balances()).get(symbol, {}).get("available", "0"))
        if held > 1:
            # Redeeming dataset tokens accepts their terms: the flow reads the version it accepts.
            dataset = market.listing["kind"] == "dataset"
            version = (await account.client.terms(symbol))["version"] if dataset else None
            await account.client.redeem(symbol, max(1, held // 3), terms_version=version)
            self.counts["redemptions"] += 1

    async def close(self) -> None:
        for account in self.accounts.values():
            await account.client.aclose()
        await self.providers.stop()

    # -- what the person trying it needs ---------------------------------------------------------------------

    def banner(self) -> str:
        symbols = ", ".join(m.symbol for m in self.markets)
        lines = [
            f"tokex demo: a live market on {self.url}",
            f"  instruments: {symbols} (compute in CNY per 1M tokens)",
            f"  simulated flow: about {self.rate:g} actions a second by {len(COMPUTE_SELLERS) + 2 + len(BUYERS)} "
            "accounts; SIGTERM or Ctrl-C stops the demo",
            f"  order book: {book_build()}",
            "  demo keys, new at every start (the secrets are shown only here):",
        ]
        described = {
            DEMO_SELLER: "seller: an issuer, minted 1,000 lots of each compute block at the first start",
            DEMO_BUYER: f"buyer: a trader, funded with 10,000 CNY and holding a quota of {DEMO_REDEEMED}M "
                        f"{self.markets[0].symbol} tokens (redeemed lots) and a subscription to 10M more a month "
                        "at the first start",
            ADMIN: f"admin: accounts, keys, cash, instruments ({tokex_command()} admin --server {self.url} ...)",
        }
        for name, text in described.items():
            account = self.accounts[name]
            lines.append(f"    {name} (account {account.id}), {text}")
            lines.append(f"      export TOKEX_KEY={account.key_id} TOKEX_SECRET={account.secret}")
            if name == DEMO_BUYER:
                lines.append(f"      export OPENAI_BASE_URL={self.url}/inference/v1 "
                             f"OPENAI_API_KEY={self.inference_token}")
        providers = ", ".join(f"{symbol} {url}" for symbol, url in self.providers.urls.items())
        lines.append(f"  simulated providers (OpenAI-compatible, deterministic replies): {providers}")
        lines.append("  call one, with the OPENAI_ line pasted (or point any OpenAI client there): "
                     "curl -s $OPENAI_BASE_URL/chat/completions -H \"Authorization: Bearer $OPENAI_API_KEY\" "
                     "-H 'Content-Type: application/json' "
                     "-d '{\"model\": \"DEEPSEEK-V3\", \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}'")
        lines.append(f"  watch it in a browser: {self.url}/")
        lines.append(f"  try: curl -s {self.url}/v1/instruments/DEEPSEEK-V3/book")
        return "\n".join(lines)


def book_build() -> str:
    """Which order book serves: ``make run`` installs it as plain Python, since compiling it is most of a first
    install and the demo's flow does not need its speed; ``make compile`` (or ``make test``, ``make bench``) builds
    the compiled one, which every later start runs."""
    if matching.book.__file__.endswith(".py"):
        return "plain Python; `make compile` builds the compiled one, which the next start runs"
    return "compiled (matching/*.so)"


def tokex_command() -> str:
    """This ``tokex`` as the person can type it: ``tokex`` when it is the one on PATH, else its path, relative to the
    current folder when it is inside it (``.venv/bin/tokex`` after ``make run``)."""
    path = Path(sys.argv[0]).resolve()
    on_path = shutil.which("tokex")
    if path.name != "tokex" or (on_path is not None and Path(on_path).resolve() == path):
        return "tokex"
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def starter(rate: float = 3.0, seed: int | None = None) -> Callable[[Server, str], Awaitable[None]]:
    """The ``on_started`` hook of ``api.server.serve`` that seeds the demo and runs its flow beside the server."""

    async def start(server: Server, url: str) -> None:
        services = server.config.app.state.services
        demo = Demo(services.pool, services.sequencer, services.keys, url, rate, random.Random(seed))
        try:
            await demo.seed()
        except BaseException:
            await demo.close()
            raise
        print(demo.banner(), flush=True)

        async def run() -> None:
            try:
                await demo.flow()
                await asyncio.Event().wait()  # the providers serve until the demo stops
            finally:
                await demo.close()

        server.run_beside(run(), "demo flow")

    return start
