"""Fault drills against a cluster under load (``make chaos-cluster``): the leading engine SIGKILLed again and again,
a gateway SIGKILLed, NATS restarted.

    python -m loadtest.chaos_cluster [--kills 10] [--gateway-kills 1] [--nats-restarts 1] [--spacing 4]
                                     [--gateways 2] [--sellers 4] [--buyers 8] [--watchers 40] [--rate 300]

The drills own what they break: an embedded PostgreSQL and an embedded NATS (on a fixed port, so that it comes back
where the cluster looks for it) in a temporary folder, handed to ``tokex cluster --gateways N --standby`` as
DATABASE_URL and NATS_URL (``loadtest.cluster``). The sellers, buyers and watchers of ``loadtest.run.Load`` act
throughout, and a prober places 1-lot bids far below the market, one signed request at a time, so that what was
applied can be counted exactly. The drills come one after the other in a random order, each after a random few
seconds of load:

- leader: SIGKILL the engine that leads (``GET /v1/health``); figures: the kill to the next committed command (the
  first prober order sent after the kill and answered 201), and the kill to the standby leading as the gateways
  see it (its heartbeat). The supervisor restarts nothing,
  so the drill starts a new standby (``tokex engine``) after each kill.
- gateway: SIGKILL the gateway holding the most connections; its watchers reconnect to the shared port, land on
  another gateway and resync (a gap is always detected by the watchers' chains and checksums, never silent); a new
  gateway is started.
- nats: stop the NATS server (SIGTERM), leave it down ``--nats-down-seconds``, start it again on its port; nothing
  is restarted by hand: engines and gateways reconnect by themselves.

After each drill the invariants of ``tokex check`` are checked on the live database (they read one snapshot). At the
end, with the load stopped: ``tokex check`` itself, ``loadtest.durability`` (everything acknowledged is in the
database as answered, each fill applied once) and the prober's count: its orders in the database are exactly those
it was answered 201 for (an order applied twice, or applied though answered with an error, would show).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from api.client import Client
from exchange import invariants
from loadtest import durability
from loadtest.cluster import Backing, Cluster
from loadtest.connection import Connection
from loadtest.drill import Crowd, all_watching, wait_for
from loadtest.personas import TICK
from loadtest.run import Load, check, set_up
from loadtest.subscriber import raise_file_limit
from loadtest.traders import PLACED, Trader

TARGET_P50_S = 2.0
TARGET_MAX_S = 5.0
ANSWER_TIMEOUT = 30.0
PROBE_PRICE = TICK
"""The prober's bids, 0.01 CNY: no persona sells that low, so they rest and never trade."""
PROBE_PAUSE = 0.02
CROWD = Crowd(sellers=4, buyers=8, watchers=40, rate=300.0)
PROBER_ORDERS = "SELECT count(*) FROM book_order WHERE account_id = $1"


@dataclass
class Prober:
    """One trader placing resting 1-lot bids, one signed request at a time; what it was told."""

    url: str
    key: tuple[str, str]
    symbol: str
    account_id: int
    acked: int = 0
    errors: int = 0
    sent: int = 0
    stopping: bool = False
    last_acked: tuple[float, float] = (0.0, 0.0)
    """(sent, answered) of the latest request answered 201, monotonic seconds."""

    async def run(self) -> None:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        loop = asyncio.get_running_loop()
        trader = Trader(f"{host}:{port}", *self.key, self.symbol, random.Random(0))
        connection: Connection | None = None
        while not self.stopping:
            try:
                if connection is None:
                    _, connection = await loop.create_connection(Connection, host, int(port))
                self.sent += 1
                sent = time.monotonic()
                status, body = await asyncio.wait_for(connection.send(trader.order("buy", PROBE_PRICE, 1)),
                                                      ANSWER_TIMEOUT)
            except (OSError, ConnectionError, TimeoutError):
                self.errors += 1
                if connection is not None and connection.transport is not None:
                    connection.transport.close()
                connection = None
                await asyncio.sleep(0.1)
                continue
            if status == 201 and PLACED.decode(body).status == "open":
                self.acked += 1
                self.last_acked = sent, time.monotonic()
            else:
                self.errors += 1
                await asyncio.sleep(0.1)
            await asyncio.sleep(PROBE_PAUSE)
        if connection is not None and connection.transport is not None:
            connection.transport.close()


@dataclass
class ClusterChaosOptions:
    crowd: Crowd = CROWD
    kills: int = 10
    gateway_kills: int = 1
    nats_restarts: int = 1
    nats_down_seconds: float = 2.0
    spacing: float = 4.0
    """Seconds of load before each drill, at most (at least half of it)."""
    gateways: int = 2
    seed: int = 1


def connections(pid: int) -> int:
    """The TCP connections process ``pid`` has open (0 once it is gone)."""
    with contextlib.suppress(psutil.Error):
        return len(psutil.Process(pid).net_connections(kind="tcp"))
    return 0


class Drills:
    """A cluster on its own PostgreSQL and NATS, under load, and the faults done to it."""

    def __init__(self, options: ClusterChaosOptions, backing: Backing, cluster: Cluster) -> None:
        self.options = options
        self.backing = backing
        self.cluster = cluster
        self.load: Load | None = None
        self.prober: Prober | None = None
        self.rng = random.Random(options.seed)
        self.done: list[dict[str, Any]] = []

    async def first_commit_after(self, moment: float, timeout: float = 60.0) -> float:
        """When the prober was first answered 201 for a request it sent after ``moment``: a command committed after
        it (an answer to a request sent before could be for a command committed before)."""
        prober = self.prober
        assert prober is not None
        if not await wait_for(lambda: prober.last_acked[0] > moment, timeout, 0.005):
            raise TimeoutError(f"no order was acknowledged within {timeout:g} s")
        return prober.last_acked[1]

    async def all_watching(self) -> float | None:
        assert self.load is not None
        return await all_watching(self.load.watchers)

    def errors(self) -> int:
        assert self.load is not None
        return sum(self.load.recorder.errors.values())

    async def check(self) -> str:
        """What ``tokex check`` checks (``exchange.invariants``), in this process: the command's start-up alone
        takes seconds on a busy machine, and the drills run it after every fault."""
        conn = await asyncpg.connect(self.backing.dsn)
        try:
            found = await invariants.problems(conn)
        finally:
            await conn.close()
        return "clean" if not found else "FAILED: " + " | ".join(found[:3])

    async def leader(self) -> dict[str, Any]:
        dead = self.cluster.leader()
        assert dead is not None, "no engine leads"
        errors = self.errors()
        fault = time.monotonic()
        os.kill(dead, signal.SIGKILL)
        acked = await self.first_commit_after(fault)
        await asyncio.to_thread(self.cluster.new_leader, dead)
        leading = time.monotonic()
        await asyncio.to_thread(self.cluster.start_role, "engine")
        return {"drill": "leader", "kill_to_commit_s": round(acked - fault, 3),
                "kill_to_leader_s": round(leading - fault, 3), "errors_meanwhile": self.errors() - errors,
                "check": await self.check()}

    async def gateway(self) -> dict[str, Any]:
        # The gateway that holds the most connections (the watchers' among them), so that some have to move.
        victim = max(self.cluster.pids()["gateway"], key=connections)
        errors = self.errors()
        fault = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        acked = await self.first_commit_after(fault)
        watching = await self.all_watching()
        await asyncio.to_thread(self.cluster.start_role, "gateway")
        return {"drill": "gateway", "kill_to_commit_s": round(acked - fault, 3),
                "watchers_back_s": round(watching - fault, 3) if watching else None,
                "errors_meanwhile": self.errors() - errors, "check": await self.check()}

    async def nats(self) -> dict[str, Any]:
        assert self.backing.nats is not None
        errors = self.errors()
        fault = time.monotonic()
        await self.backing.nats.stop_async()
        await asyncio.sleep(self.options.nats_down_seconds)
        await self.backing.nats.start_async()
        back = time.monotonic()
        acked = await self.first_commit_after(back)
        watching = await self.all_watching()
        return {"drill": "nats", "down_s": round(back - fault, 3), "back_to_commit_s": round(acked - back, 3),
                "watchers_back_s": round(watching - fault, 3) if watching else None,
                "errors_meanwhile": self.errors() - errors, "check": await self.check()}

    async def drills(self) -> None:
        plan = (["leader"] * self.options.kills + ["gateway"] * self.options.gateway_kills
                + ["nats"] * self.options.nats_restarts)
        self.rng.shuffle(plan)
        assert self.load is not None
        feed = self.load.feed
        for name in plan:
            await asyncio.sleep(self.rng.uniform(self.options.spacing / 2, self.options.spacing))
            gaps, bad, resyncs = feed.gaps, feed.bad, feed.resyncs
            outcome = await getattr(self, name)()
            # A gap is fine when it is detected (the watcher resyncs); a wrong checksum would be a silent one.
            outcome.update(gaps_detected=feed.gaps - gaps, bad=feed.bad - bad, resyncs=feed.resyncs - resyncs)
            print(f"  {outcome}", flush=True)
            self.done.append(outcome)
        await asyncio.sleep(self.options.spacing / 2)


async def make_prober(url: str, admin: tuple[str, str], symbol: str) -> Prober:
    async with Client(url, *admin) as boss:
        made = await boss.create_account(f"chaos-prober-{random.getrandbits(32):08x}", "trader")
        await boss.deposit(made["id"], "1000000")
        key = await boss.create_key(made["id"], ["read", "trade"], "prober")
    return Prober(url, (key["id"], key["secret"]), symbol, made["id"])


async def chaos_cluster(options: ClusterChaosOptions, backing: Backing | None = None,
                        cluster: Cluster | None = None) -> dict[str, Any]:
    """Every drill of ``options`` against ``cluster`` on ``backing`` (by default, ones of its own); the figures,
    ``tokex check`` and the durability checks."""
    raise_file_limit()
    owned = backing is None
    backing = backing or await Backing().start()
    cluster = cluster or Cluster(backing.dsn, backing.nats_url, gateways=options.gateways, standby=True)
    drills = Drills(options, backing, cluster)
    try:
        made = await asyncio.to_thread(cluster.tokex, "admin", "create-admin", "--name", "chaos-admin")
        admin = made["key_id"], made["secret"]
        url = await asyncio.to_thread(cluster.start)
        load_options = options.crowd.options(backing.dsn, options.seed)
        accounts = await set_up(url, admin, load_options)
        prober = drills.prober = await make_prober(cluster.urls[-1], admin, accounts.symbols[0])
        probing = asyncio.create_task(prober.run())
        load = drills.load = Load(url, accounts, load_options)
        seconds = await load.run(0, drills.drills())
        prober.stopping = True
        await probing
        watchers = load.close()
        conn = await asyncpg.connect(backing.dsn)
        try:
            probes_applied = await conn.fetchval(PROBER_ORDERS, prober.account_id)
        finally:
            await conn.close()
        status = await asyncio.to_thread(cluster.stop)
        return {"drills": drills.done, "seconds": round(seconds, 1), "cluster_exit": status, "watchers": watchers,
                "errors": dict(load.recorder.errors.most_common()),
                "probes": {"sent": prober.sent, "acknowledged": prober.acked, "errors": prober.errors,
                           "in_database": probes_applied},
                "check": await asyncio.to_thread(check, cluster.env, backing.dsn),
                "durability": await durability.problems(backing.dsn, load.recorder), "options": asdict(options)}
    finally:
        await asyncio.to_thread(cluster.stop)
        if owned:
            await backing.stop()


def leader_figures(result: dict[str, Any]) -> dict[str, float]:
    times = [d["kill_to_commit_s"] for d in result["drills"] if d["drill"] == "leader"]
    return {"p50_s": statistics.median(times), "max_s": max(times)} if times else {}


def passed(result: dict[str, Any]) -> bool:
    """Nothing acknowledged lost, nothing applied twice, every failover in time, the books sound throughout."""
    figures = leader_figures(result)
    probes = result["probes"]
    return (result["check"]["status"] == 0 and not result["durability"] and not result["watchers"]["bad"]
            and probes["in_database"] == probes["acknowledged"]
            and all(d["check"] == "clean" and d.get("watchers_back_s", 0) is not None and not d.get("bad")
                    for d in result["drills"])
            and (not figures or (figures["p50_s"] <= TARGET_P50_S and figures["max_s"] <= TARGET_MAX_S)))


def table(result: dict[str, Any]) -> str:
    lines = [f"{'drill':<8} {'to commit s':>11} {'to leader s':>11} {'watchers back s':>15} {'errors':>7} "
             f"{'gaps':>5} {'bad':>4} {'resyncs':>7} check"]
    for d in result["drills"]:
        to_commit = d.get("kill_to_commit_s", d.get("back_to_commit_s"))
        lines.append(f"{d['drill']:<8} {to_commit:>11.3f} {d.get('kill_to_leader_s', ''):>11} "
                     f"{d.get('watchers_back_s') or '':>15} {d['errors_meanwhile']:>7} {d['gaps_detected']:>5} "
                     f"{d['bad']:>4} {d['resyncs']:>7} {d['check']}")
    figures = leader_figures(result)
    watch, probes = result["watchers"], result["probes"]
    if figures:
        lines.append(f"leader kills: kill to the next committed order p50 {figures['p50_s']:.2f} s (target <= "
                     f"{TARGET_P50_S:g}), max {figures['max_s']:.2f} s (target <= {TARGET_MAX_S:g})")
    lines += [f"watchers: {watch['count']}, gaps detected {watch['gaps']}, bad messages {watch['bad']}, resyncs "
              f"{watch['resyncs']}",
              f"prober: {probes['sent']} sent, {probes['acknowledged']} acknowledged, {probes['errors']} errors, "
              f"{probes['in_database']} in the database (must equal the acknowledged)",
              "errors (expected during faults): " + (", ".join(f"{k} {v}" for k, v in result["errors"].items())
                                                     or "none"),
              f"tokex check: {result['check']['verdict']}; answers contradicted by the database: "
              f"{len(result['durability'])}", *result["durability"][:10],
              f"drills {'passed' if passed(result) else 'FAILED'}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[ClusterChaosOptions, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = ClusterChaosOptions()
    for name, value in asdict(defaults).items():
        if name != "crowd":
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    defaults.crowd.add_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("var/chaos-cluster"), help="folder for result.json")
    args = parser.parse_args(argv)
    drills = {name: getattr(args, name) for name in asdict(defaults) if name != "crowd"}
    return ClusterChaosOptions(crowd=Crowd.from_arguments(args), **drills), args.out


def main(argv: list[str] | None = None) -> int:
    options, out = parse_args(argv)
    result = asyncio.run(chaos_cluster(options))
    print(table(result))
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'result.json'}")
    return 0 if passed(result) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
