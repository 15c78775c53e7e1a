"""A load run: sellers, buyers and watchers against a running tokex, then its figures and ``tokex check``.

By default the run starts its own server, ``tokex serve --no-rate-limit`` on a new embedded PostgreSQL in a
temporary TOKEX_HOME (``loadtest.server.Server``; or on ``--database-url``), and makes its admin key with ``tokex admin
create-admin``. With ``--url`` it targets a server that is already running instead, signing its set-up with the
admin key in TOKEX_KEY and TOKEX_SECRET; ``tokex check`` then needs ``--database-url`` to know where to look.

Set-up, over the API: ``--instruments`` compute instruments of one substitution group, of different qualities
(``QUALITIES``), for the buyers' routed orders and packages; each seller an issuer approved for its instrument
and holding minted lots; each buyer a trader with cash. Then the watchers connect and subscribe, the personas
act at ``--rate`` requests a second between them for ``--warmup`` seconds and then ``--duration`` measured
seconds, and the drift of the fair prices goes on meanwhile.

What the generator needs of the machine is reported beside what it measured: CPU per process (server,
PostgreSQL, generator), in cores, over the measured window.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from api.client import Client
from exchange.database import Database
from loadtest import durability
from loadtest.personas import Buyer, Market, Persona, Seller
from loadtest.report import Recorder, summarize
from loadtest.server import Server, cpu_seconds
from loadtest.subscriber import now_us, raise_file_limit
from loadtest.watchers import Feed, Watcher, start_watchers

TARGET_ORDERS_PER_S = 5_000
TARGET_P99_MS = 50.0
CAPACITY = 100_000_000
MINTED = 1_000_000
SELLER_CASH = "1000000"
BUYER_CASH = "100000000"
QUALITIES = (90, 75, 60)
"""Quality scores of the instruments in turn, so that routing by cost, quality or balance choose differently."""


@dataclass
class Accounts:
    symbols: list[str]
    group: str
    """The substitution group of every instrument of the run, for routed orders and packages."""
    sellers: list[tuple[str, str]]
    buyers: list[tuple[str, str]]


@dataclass
class Options:
    """What to run; the defaults are the full run's."""

    url: str | None = None
    """The running server to target; None: start one (``loadtest.server``)."""
    database_url: str | None = None
    sellers: int = 20
    buyers: int = 50
    watchers: int = 500
    duration: float = 60.0
    warmup: float = 5.0
    rate: float = 6_000.0
    """Requests a second that the personas aim at together (orders, cancels and the odd mint)."""
    instruments: int = 2
    seed: int = 1


async def set_up(url: str, admin: tuple[str, str], options: Options) -> Accounts:
    """The instruments, the sellers (issuers holding minted lots) and the buyers (traders with cash)."""
    tag = uuid.uuid4().hex[:6].upper()
    group = f"load-{tag.lower()}"
    symbols = [f"LOAD{tag}-{n + 1}" for n in range(options.instruments)]
    async with Client(url, *admin) as boss:
        for n, symbol in enumerate(symbols):
            await boss.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="deepseek-v3",
                                         substitution_group=group, quality=QUALITIES[n % len(QUALITIES)],
                                         tokens_per_lot=1_000_000)

        async def account(role: str, number: int) -> tuple[str, str]:
            made = await boss.create_account(f"load-{tag.lower()}-{role}-{number}", "issuer" if role == "seller"
                                             else "trader")
            scopes = ["read", "trade", "issue"] if role == "seller" else ["read", "trade"]
            key = await boss.create_key(made["id"], scopes, "load")
            await boss.deposit(made["id"], SELLER_CASH if role == "seller" else BUYER_CASH)
            if role == "seller":
                symbol = symbols[number % len(symbols)]
                await boss.approve_issuer(made["id"], symbol, CAPACITY)
                async with boss.with_key(key["id"], key["secret"]) as own:
                    await own.mint(symbol, MINTED)
            return key["id"], key["secret"]

        sellers = await asyncio.gather(*(account("seller", n) for n in range(options.sellers)))
        buyers = await asyncio.gather(*(account("buyer", n) for n in range(options.buyers)))
    return Accounts(symbols, group, list(sellers), list(buyers))


def check(env: dict[str, str], database_url: str | None) -> dict[str, Any]:
    """Run ``tokex check`` on the server's database; its verdict and output."""
    command = [sys.executable, "-m", "api.cli", "check"]
    if database_url:
        command += ["--database-url", database_url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"verdict": "clean" if done.returncode == 0 else "FAILED", "status": done.returncode,
            "output": lines[-20:]}


class Load:
    """The personas and watchers of one run against one server, and what they recorded."""

    def __init__(self, url: str, accounts: Accounts, options: Options) -> None:
        self.url = url
        self.options = options
        self.recorder = Recorder(time.monotonic)
        rng = random.Random(options.seed)
        self.prices = Market(accounts.symbols, random.Random(rng.random()), group=accounts.group)
        self.feed = Feed(url, self.recorder.frame_latency)
        symbols = accounts.symbols
        self.personas: list[Persona] = [
            Seller(url, *key, symbols[n % len(symbols)], self.prices, self.recorder, random.Random(rng.random()))
            for n, key in enumerate(accounts.sellers)]
        self.personas += [
            Buyer(url, *key, symbols[n % len(symbols)], self.prices, self.recorder, random.Random(rng.random()))
            for n, key in enumerate(accounts.buyers)]
        self.symbols = symbols
        self.watchers: list[Watcher] = []

    async def run(self, seconds: float, during=None) -> float:
        """Act for ``warmup`` + ``seconds``, measuring the last ``seconds``; return the measured wall time.

        ``during``, if given, is awaited from the end of the warm-up instead, and the load stops when it is done
        (the fault drills run there).
        """
        self.watchers = await start_watchers(self.feed, self.symbols, self.options.watchers)
        drift = asyncio.create_task(self.prices.drift())
        until = time.monotonic() + self.options.warmup + (seconds if during is None else 1e9)
        rate = self.options.rate / max(1, len(self.personas))
        stop = asyncio.Event()
        acting = [asyncio.create_task(persona.live(rate, until, stop)) for persona in self.personas]
        try:
            await asyncio.sleep(self.options.warmup)
            self.recorder.start(now_us())
            started = time.monotonic()
            if during is not None:
                await during
            else:
                await asyncio.gather(*acting)
            return time.monotonic() - started
        finally:
            stop.set()
            for task in acting:
                task.cancel()
            drift.cancel()
            await asyncio.gather(*acting, drift, return_exceptions=True)

    def close(self) -> dict[str, Any]:
        """Stop the watchers and the connections; what the watchers counted."""
        for watcher in self.watchers:
            watcher.stop()
        for persona in self.personas:
            if persona.connection is not None and persona.connection.transport is not None:
                persona.connection.transport.close()
        feed = self.feed
        return {"count": len(self.watchers), "frames": feed.frames, "messages": feed.messages, "gaps": feed.gaps,
                "bad": feed.bad, "resyncs": feed.resyncs, "cut_off": {str(k): v for k, v in feed.cut_off.items()},
                "errors": feed.errors,
                "unverified": sum(mirror.unverified for mirror in feed.mirrors.values())}


async def verify(database_url: str | None, home: Path | None, recorder: Recorder) -> list[str]:
    """``durability.problems`` on the server's database (the embedded one in ``home`` is attached to)."""
    async with Database(database_url, home=home) as database:
        return await durability.problems(database.dsn, recorder)


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    watch = result["watchers"]
    met = (result["orders_per_s"] >= TARGET_ORDERS_PER_S and result["ack_ms"]["p99"] <= TARGET_P99_MS
           and not result["errors"] and not watch["gaps"] and not watch["bad"] and result["check"]["status"] == 0
           and not result["durability"])
    return {"orders_per_s": TARGET_ORDERS_PER_S, "p99_ms": TARGET_P99_MS, "met": met}


async def run(options: Options) -> dict[str, Any]:
    """One load run from set-up to ``tokex check``; the result as ``report.summarize`` makes it, and more."""
    raise_file_limit()
    server: Server | None = None
    env = dict(os.environ)
    try:
        if options.url:
            url = options.url.rstrip("/")
            admin = os.environ.get("TOKEX_KEY"), os.environ.get("TOKEX_SECRET")
            if not all(admin):
                raise SystemExit("--url needs TOKEX_KEY and TOKEX_SECRET: the id and secret of an admin key")
            processes = {"load generator": [psutil.Process()]}
        else:
            server = Server(options.database_url)
            made = await asyncio.to_thread(server.tokex, "admin", "create-admin", "--name", "load-admin")
            admin = made["key_id"], made["secret"]
            url = await asyncio.to_thread(server.start)
            env = server.env
            assert server.process is not None
            processes = {"server": [psutil.Process(server.process.pid)], "postgres": server.postgres(),
                         "load generator": [psutil.Process()]}
        accounts = await set_up(url, admin, options)
        load = Load(url, accounts, options)
        cpu_before = cpu_seconds(processes)
        seconds = await load.run(options.duration)
        cpu = cpu_seconds(processes)
        cpu.subtract(cpu_before)
        # Let the feed deliver what the last orders published: the next heartbeats check the chains' ends.
        await asyncio.sleep(2)
        watchers = load.close()
        result = summarize(load.recorder, seconds)
        result["watchers"] = watchers
        result["cpu_cores"] = {name: round(used / seconds, 2) for name, used in cpu.items()}
        result["load_average"] = [round(x, 2) for x in os.getloadavg()]
        if server is not None or options.database_url:
            result["check"] = await asyncio.to_thread(check, env, options.database_url)
            result["durability"] = await verify(options.database_url, server.home if server else None, load.recorder)
        else:
            result["check"] = {"verdict": "skipped", "status": None, "output": ["no --database-url"]}
            result["durability"] = ["not checked: no --database-url"]
        result["options"] = asdict(options)
        result["title"] = (f"{options.sellers} sellers, {options.buyers} buyers, {options.watchers} watchers, "
                           f"{options.instruments} instruments, target {options.rate:,.0f} requests/s")
        result["target"] = verdict(result)
        return result
    finally:
        if server is not None:
            status = await asyncio.to_thread(server.stop)
            if status != 0:
                print(f"the server exited with status {status}:\n" + "".join(server.output[-20:]))

