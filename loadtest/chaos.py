"""Fault drills under load (``make chaos``): the server SIGKILLed and restarted, PostgreSQL stopped and started.

    python -m loadtest chaos [--kills 3] [--outages 2] [--outage-seconds 3] [--open-orders 100000] ...

The drills own the database: they start an embedded PostgreSQL in a temporary folder themselves and serve
``tokex serve`` on it (``loadtest.server.Server`` with that DSN), so that they can stop and start either one. Sellers,
buyers and watchers (``loadtest.run.Load``) keep going throughout; the drills come one after the other, in a
random order, each after a random few seconds of load.

- kill: SIGKILL the server, start it again on the same port (until it starts: the killed writer's session
  may hold the database's writer lock for a moment).
- outage: stop PostgreSQL (fast shutdown), wait ``--outage-seconds``, start it again; the server stays up.

For each drill: recovery time (the fault to the first order acknowledged after it), the requests that failed
meanwhile (errors: what a client must get while the exchange cannot commit), orders acknowledged while the
database was down (must be none), and how long until every watcher was connected and subscribed again by itself.

At the end, with the server stopped: ``tokex check``, and ``loadtest.durability``: every order and cancel any
persona was told of is in the database as told, every fill applied once.

Then, unless ``--open-orders 0``: buyers post that many resting bids far below the market, the server is killed
again, and the figures are its restart (kill to serving, and to the first acknowledged order) with that book.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from api.client import Client
from exchange.database.embedded import EmbeddedPostgres
from loadtest import durability
from loadtest.connection import Connection
from loadtest.drill import Crowd, all_watching, wait_for
from loadtest.personas import TICK
from loadtest.run import Load, check, set_up
from loadtest.server import Server
from loadtest.subscriber import raise_file_limit
from loadtest.traders import PLACED, Trader

TARGET_RECOVERY_S = 5.0
DEEP_PRICE = 1_000 * TICK
"""Resting bids of the open-orders drill go from 10.00 CNY down: far below any offer, so none trades."""
RESTART_TIMEOUT = 120.0
START_TIMEOUT = 60.0
ANSWER_TIMEOUT = 30.0
CROWD = Crowd(sellers=6, buyers=14, watchers=50, rate=1_500.0)


@dataclass
class ChaosOptions:
    database_url: str | None = None
    """Serve on this PostgreSQL instead of one of the drills' own; it cannot be stopped, so no outages then."""
    kills: int = 3
    outages: int = 2
    outage_seconds: float = 3.0
    open_orders: int = 100_000
    crowd: Crowd = CROWD
    spacing: float = 6.0
    """Seconds of load before each drill, at most (at least half of it)."""
    seed: int = 1


class Drills:
    """One server on one embedded PostgreSQL, under load, and the faults done to them."""

    def __init__(self, options: ChaosOptions, database: EmbeddedPostgres | None, dsn: str) -> None:
        self.options = options
        self.database = database
        self.server = Server(dsn)
        self.port = 0
        self.load: Load | None = None
        self.rng = random.Random(options.seed)
        self.done: list[dict[str, Any]] = []

    async def restart(self) -> float:
        """Start the server on its port until it serves; the monotonic time it did."""
        deadline = time.monotonic() + RESTART_TIMEOUT
        while True:
            try:
                await asyncio.wait_for(asyncio.to_thread(self.server.start, self.port), START_TIMEOUT)
                return time.monotonic()
            except (RuntimeError, TimeoutError):
                # Failed (the writer lock still held by the killed server's session), or hung: kill it (which
                # also ends the thread reading its output) and try again.
                if self.server.process is not None and self.server.process.poll() is None:
                    self.server.process.kill()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def first_ack_after(self, moment: float, timeout: float = RESTART_TIMEOUT) -> float:
        assert self.load is not None
        recorder = self.load.recorder
        if not await wait_for(lambda: recorder.last_ack > moment, timeout, 0.005):
            raise TimeoutError(f"no order was acknowledged within {timeout:g} s")
        return recorder.last_ack

    async def all_watching(self) -> float | None:
        assert self.load is not None
        return await all_watching(self.load.watchers)

    def counts(self) -> tuple[int, int]:
        assert self.load is not None
        recorder = self.load.recorder
        return sum(recorder.orders.values()), sum(recorder.errors.values())

    async def kill(self) -> dict[str, Any]:
        assert self.server.process is not None
        orders, errors = self.counts()
        fault = time.monotonic()
        self.server.process.kill()
        await asyncio.to_thread(self.server.process.wait)
        dead = time.monotonic()
        serving = await self.restart()
        acked = await self.first_ack_after(dead)
        watching = await self.all_watching()
        _, errors_after = self.counts()
        return {"drill": "kill", "recovery_s": round(acked - fault, 3), "serving_s": round(serving - fault, 3),
                "errors_meanwhile": errors_after - errors, "orders_before": orders,
                "watchers_back_s": round(watching - fault, 3) if watching else None}

    async def outage(self) -> dict[str, Any]:
        assert self.database is not None, "an outage needs the drills' own PostgreSQL"
        orders, errors = self.counts()
        fault = time.monotonic()
        await self.database.stop_async()
        # An answer already on its way when the database went is not a false success: allow it a moment.
        await asyncio.sleep(0.5)
        orders_down, _ = self.counts()
        await asyncio.sleep(max(0.0, self.options.outage_seconds - 0.5))
        orders_still_down, _ = self.counts()
        await self.database.start_async()
        back = time.monotonic()
        acked = await self.first_ack_after(back)
        watching = await self.all_watching()
        _, errors_after = self.counts()
        return {"drill": "outage", "down_s": round(back - fault, 3), "recovery_s": round(acked - back, 3),
                "errors_meanwhile": errors_after - errors, "orders_before": orders,
                "acked_while_down": orders_still_down - orders_down,
                "watchers_back_s": round(watching - fault, 3) if watching else None}

    async def drills(self) -> None:
        """The kills and outages in a random order, each after a random while of load; into ``done``."""
        plan = ["kill"] * self.options.kills + ["outage"] * self.options.outages
        self.rng.shuffle(plan)
        for name in plan:
            await asyncio.sleep(self.rng.uniform(self.options.spacing / 2, self.options.spacing))
            outcome = await (self.kill() if name == "kill" else self.outage())
            print(f"  {outcome}", flush=True)
            self.done.append(outcome)
        await asyncio.sleep(self.options.spacing / 2)

    async def open_orders(self, url: str, buyers: list[tuple[str, str]], symbol: str) -> dict[str, Any]:
        """Rest ``open_orders`` bids from the buyers, SIGKILL the server, and time its restart."""
        host, port = url.removeprefix("http://").rsplit(":", 1)
        loop = asyncio.get_running_loop()
        count = self.options.open_orders
        started = time.monotonic()

        async def post(key: tuple[str, str], share: int, number: int) -> None:
            _, connection = await loop.create_connection(Connection, host, int(port))
            trader = Trader(f"{host}:{port}", *key, symbol, random.Random(number))
            try:
                for n in range(share):
                    request = trader.order("buy", DEEP_PRICE - (n % 500) * TICK, 1)
                    status, body = await asyncio.wait_for(connection.send(request), ANSWER_TIMEOUT)
                    if status != 201:
                        raise RuntimeError(f"a resting bid was refused: {status} {body[:200]!r}")
            finally:
                connection.transport.close()

        shares = [count // len(buyers) + (n < count % len(buyers)) for n in range(len(buyers))]
        await asyncio.gather(*(post(key, share, n) for n, (key, share) in enumerate(zip(buyers, shares, strict=True))))
        posted = time.monotonic() - started
        assert self.server.process is not None
        fault = time.monotonic()
        self.server.process.kill()
        await asyncio.to_thread(self.server.process.wait)
        serving = await self.restart()
        _, connection = await loop.create_connection(Connection, host, int(port))
        trader = Trader(f"{host}:{port}", *buyers[0], symbol, random.Random(0))
        try:
            status, body = await asyncio.wait_for(connection.send(trader.order("buy", DEEP_PRICE, 1)), ANSWER_TIMEOUT)
            acked = time.monotonic()
        finally:
            connection.transport.close()
        async with Client(url) as public:
            book = await public.book(symbol, depth=1000)
        # Every resting bid is back in the rebuilt book (each is 1 lot, at or below DEEP_PRICE).
        rebuilt = sum(level["qty"] for level in book["bids"] if Decimal(level["price"]) * 1_000_000 <= DEEP_PRICE)
        first = PLACED.decode(body).status if status == 201 else body[:100].decode(errors="replace")
        return {"drill": "kill with open orders", "open_orders": count, "posted_in_s": round(posted, 1),
                "serving_s": round(serving - fault, 3), "recovery_s": round(acked - fault, 3),
                "first_order": f"{status} {first}", "rebuilt_open_orders": rebuilt,
                "target_s": TARGET_RECOVERY_S}


async def chaos(options: ChaosOptions) -> dict[str, Any]:
    """Every drill of ``options``; their figures, ``tokex check`` and the durability check."""
    raise_file_limit()
    home: Path | None = None
    database: EmbeddedPostgres | None = None
    if options.database_url:
        dsn = options.database_url
    else:
        home = Path(tempfile.mkdtemp(prefix="tokex-chaos-"))
        # The embedded server's user must be able to enter the folder when we run as root.
        home.chmod(0o755)
        database = EmbeddedPostgres(home)
        dsn = await database.start_async()
    drills = Drills(options, database, dsn)
    server = drills.server
    try:
        made = await asyncio.to_thread(server.tokex, "admin", "create-admin", "--name", "chaos-admin")
        url = await asyncio.to_thread(server.start)
        drills.port = int(url.rsplit(":", 1)[1])
        load_options = options.crowd.options(dsn, options.seed)
        accounts = await set_up(url, (made["key_id"], made["secret"]), load_options)
        load = drills.load = Load(url, accounts, load_options)
        seconds = await load.run(0, drills.drills())
        outcomes = drills.done
        watchers = load.close()
        if options.open_orders:
            outcomes.append(await drills.open_orders(url, accounts.buyers, accounts.symbols[0]))
        status = await asyncio.to_thread(server.stop)
        return {"drills": outcomes, "seconds": round(seconds, 1), "server_exit": status, "watchers": watchers,
                "errors": dict(load.recorder.errors.most_common()),
                "check": await asyncio.to_thread(check, server.env, dsn),
                "durability": await durability.problems(dsn, load.recorder), "options": asdict(options)}
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        if database is not None:
            await database.stop_async()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)


def chaos_passed(result: dict[str, Any]) -> bool:
    """Every drill recovered, nothing was acknowledged while the database was down, the books are sound."""
    drills = result["drills"]
    return (result["check"]["status"] == 0 and not result["durability"] and not result["watchers"]["bad"]
            and all(d.get("acked_while_down", 0) == 0 and d.get("watchers_back_s", 0) is not None
                    and d.get("errors_meanwhile", 1) > 0 for d in drills)
            and all(d["recovery_s"] <= TARGET_RECOVERY_S and d["rebuilt_open_orders"] >= d["open_orders"] + 1
                    for d in drills if d["drill"] == "kill with open orders"))


def chaos_table(result: dict[str, Any]) -> str:
    lines = [f"{'drill':<22} {'recovery s':>10} {'serving s':>9} {'down s':>7} {'errors':>7} {'acked down':>10} "
             f"{'watchers back s':>15}"]
    for d in result["drills"]:
        lines.append(f"{d['drill']:<22} {d['recovery_s']:>10.3f} {d.get('serving_s', ''):>9} {d.get('down_s', ''):>7} "
                     f"{d.get('errors_meanwhile', ''):>7} {d.get('acked_while_down', ''):>10} "
                     f"{d.get('watchers_back_s') or '':>15}")
    watch = result["watchers"]
    lines += [f"watchers: {watch['count']}, feed gaps {watch['gaps']}, bad messages {watch['bad']}, resyncs "
              f"{watch['resyncs']} (a reconnection after a kill is one)",
              "errors (expected while down): " + (", ".join(f"{k} {v}" for k, v in result["errors"].items()) or "none"),
              f"tokex check: {result['check']['verdict']}; answers contradicted by the database: "
              f"{len(result['durability'])}", *result["durability"][:10],
              f"drills {'passed' if chaos_passed(result) else 'FAILED'}"]
    return "\n".join(lines)
