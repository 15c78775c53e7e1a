"""The exchange as a cluster against one process, in one run on this machine (``make bench-cluster``).

    python -m loadtest.bench_cluster [--duration 15] [--warmup 3] [--connections 64] [--watchers 500]
        [--gateways 2] [--feed-watchers 5000] [--feed-rate 100] [--only orders,engine,feed]

orders
    Signed durable orders over HTTP while ``--watchers`` watch the feed: first ``tokex serve`` (one process), then
    ``tokex cluster --gateways N``, with the same connections and mix as ``loadtest.bench_api`` (W2-like: limits
    near and far, cancels, market orders). Each runs on a new embedded PostgreSQL; the cluster also on a NATS of
    its own (``exchange.broker.embedded``), handed to it as NATS_URL. Printed: acknowledged orders/s, p50, p99,
    and the CPU each role spent per order: gateway(s), engine, NATS, PostgreSQL and this generator, read by
    psutil from ``/proc/<pid>/stat`` before and after the measured window for every pid that the cluster's pid
    files (``$TOKEX_HOME/run/<role>-<n>.pid``) name. From those figures, a capacity table for a 16-core host:
    how far gateways can be added before the engine's one core is full.
engine
    The engine's CPU per command, in process against through NATS, with the same mix of commands
    (``CommandMix``) from ``--submitters`` submitters waiting each for its answer: first a ``Sequencer`` in
    this process that hands each committed batch to a ``MarketData`` view, as ``tokex serve`` does (no feed
    subscribers; its process CPU time over the commands acknowledged; the submitters' own share is in it), then
    a ``tokex engine`` fed by this process over NATS through ``RemoteSequencer`` (the engine process's CPU
    time over the commands), which publishes each batch's market data and account events to NATS instead.
    Target: at most 1.33 times. Both lines also give the mean commands per batch: the engine's per-batch costs
    weigh the same on both sides only at similar batches.
feed
    On the cluster of the orders part, once that is done: ``--feed-watchers`` watchers spread by the kernel over
    its gateways (they share one port), every public channel of one instrument, while ``--feed-rate`` orders a
    second flow: time from each message's ``ts`` to its receipt (p50, p99: the frame's arrival in the watcher's
    socket, as the kernel stamps it; and apart, when this process read it, which on a busy machine includes its
    own wait for a core: ``loadtest.watchers`` under Timing) and gaps (0 expected; ``loadtest.watchers`` checks
    every chain and checksum), and the CPU the gateways, the engine and the watchers
    (this process) spent per frame received, which on a shared 2-core machine bounds how often each watcher can
    be sent a frame.

Figures are from one run of each; on a shared 2-core machine, run it when the machine is otherwise quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from api.marketdata import MarketData
from exchange.broker.commands import RemoteSequencer
from exchange.broker.connection import connect
from exchange.commands import CancelOrder, OrderView, PlaceOrder
from exchange.database.migrations import migrate
from exchange.sequencer import Sequencer, Unavailable
from loadtest import bench_api
from loadtest.cluster import Backing, Cluster
from loadtest.connection import Connection
from loadtest.exchange_worker import MID, SYMBOL, TICK, prepare
from loadtest.server import Server, cpu_seconds
from loadtest.subscriber import now_us, raise_file_limit
from loadtest.traders import Trader
from loadtest.watchers import Feed, Watcher, start_watchers
from matching.types import BUY, SELL

TARGET_SPEEDUP = 1.3
TARGET_P99_MS = 50.0
TARGET_ENGINE_RATIO = 1.33
TARGET_FEED_P99_MS = 50.0
HOST_CORES = 16
ENGINE_START_TIMEOUT = 60.0
ENGINE_STOPPED = re.compile(r"stopped; (\d+) commands taken from NATS, (\d+) batches committed")
"""What ``tokex engine`` logs on its way out (``api.roles.engine``): the commands per batch over its run."""


# -- orders: one process against the cluster ---------------------------------------------------------------------


def frame_latencies(into: list[int], measuring: list[bool]):
    def record(received_us: int, latency_us: int) -> None:
        if measuring[0]:
            into.append(latency_us)
    return record


async def orders_on(url: str, admin: dict, processes: dict[str, list[psutil.Process]],
                    args: argparse.Namespace) -> dict[str, Any]:
    """The orders measurement against a serving exchange at ``url``, watchers connected."""
    symbol, keys = await bench_api.set_up(url, admin, args.connections)
    feed = Feed(url, lambda received, latency: None)
    watchers = await start_watchers(feed, [symbol], args.watchers)
    try:
        stats = await bench_api.measure(url, symbol, keys, args, 1, processes)
    finally:
        for watcher in watchers:
            watcher.stop()
    per_order = {name: seconds / max(stats.acked, 1) for name, seconds in stats.cpu.items()}
    return {"orders_per_s": stats.rate, "p50_ms": stats.percentile_ms(0.50), "p99_ms": stats.percentile_ms(0.99),
            "errors": dict(stats.errors), "cpu_us_per_order": {k: 1e6 * v for k, v in per_order.items()},
            "cpu_cores": {name: seconds / stats.seconds for name, seconds in stats.cpu.items()},
            "watcher_gaps": feed.gaps, "watcher_bad": feed.bad}


async def orders_one_process(args: argparse.Namespace) -> dict[str, Any]:
    server = Server(None)
    try:
        admin = await asyncio.to_thread(server.tokex, "admin", "create-admin", "--name", "bench-admin")
        url = await asyncio.to_thread(server.start)
        assert server.process is not None
        processes = {"server": [psutil.Process(server.process.pid)], "postgres": server.postgres(),
                     "load generator": [psutil.Process()]}
        return await orders_on(url, admin, processes, args)
    finally:
        await asyncio.to_thread(server.stop)


async def orders_cluster(cluster: Cluster, backing: Backing, admin: dict, args: argparse.Namespace) -> dict[str, Any]:
    pids = cluster.pids()
    leader = cluster.leader()
    assert leader is not None
    processes = {"gateway": [psutil.Process(pid) for pid in pids["gateway"]], "engine": [psutil.Process(leader)],
                 **backing.cpu_processes(), "load generator": [psutil.Process()]}
    return await orders_on(cluster.url, admin, processes, args)


async def on_cluster(args: argparse.Namespace, parts: set[str]) -> dict[str, Any]:
    """The orders and feed parts, one after the other, on one ``tokex cluster`` and its own PostgreSQL and NATS."""
    results: dict[str, Any] = {}
    backing = await Backing().start()
    cluster = Cluster(backing.dsn, backing.nats_url, gateways=args.gateways, standby=False)
    try:
        admin = await asyncio.to_thread(cluster.tokex, "admin", "create-admin", "--name", "bench-admin")
        await asyncio.to_thread(cluster.start)
        if "orders" in parts:
            results["cluster"] = await orders_cluster(cluster, backing, admin, args)
        if "feed" in parts:
            results["feed"] = await feed_cluster(cluster, admin, args)
        return results
    finally:
        status = await asyncio.to_thread(cluster.stop)
        if status != 0:
            print(f"  tokex cluster exited with status {status}:\n" + "".join(cluster.output[-20:]))
        await backing.stop()


def capacity(per_order_us: dict[str, float], cores: int = HOST_CORES) -> list[dict[str, Any]]:
    """Orders/s with 1, 2, ... gateways on a ``cores``-core host, from each role's CPU per order, until the engine
    (one core: it is one writer) or the host is full. PostgreSQL and NATS take what their share of the rate needs."""
    gateway, engine = per_order_us["gateway"] / 1e6, per_order_us["engine"] / 1e6
    shared = (per_order_us.get("nats", 0.0) + per_order_us.get("postgres", 0.0)) / 1e6
    rows = []
    for gateways in range(1, cores):
        rate = min(gateways / gateway, 1 / engine, (cores - gateways - 1) / shared if shared else float("inf"))
        bound = ("engine" if rate == 1 / engine else "gateways" if rate == gateways / gateway
                 else "host cores (NATS, PostgreSQL)")
        rows.append({"gateways": gateways, "orders_per_s": rate, "engine_busy": rate * engine,
                     "cores_used": gateways * min(1.0, rate * gateway / gateways) + rate * engine + rate * shared,
                     "bound": bound})
        if bound != "gateways":
            break
    return rows


# -- engine: CPU per command in process and through NATS ----------------------------------------------------------


class CommandMix:
    """The W2-like mix of ``loadtest.traders.Trader`` as commands: it knows its orders only from its answers."""

    def __init__(self, account_id: int, rng: random.Random) -> None:
        self.account_id = account_id
        self.rng = rng
        self.open: list[int] = []

    def next(self) -> PlaceOrder | CancelOrder:
        rng = self.rng
        roll = 0.6 if len(self.open) >= 20 else 0.0 if len(self.open) < 12 else rng.random()
        if 0.55 <= roll < 0.90 and self.open:
            return CancelOrder(self.account_id, self.open.pop(rng.randrange(len(self.open))))
        side = BUY if rng.random() < 0.5 else SELL
        sign = -1 if side == BUY else 1
        if roll >= 0.90:
            return PlaceOrder(self.account_id, SYMBOL, side, type="market", qty=rng.randint(20, 400))
        if rng.random() < 0.05:
            price = MID - sign * 3 * TICK  # crossing
        elif rng.random() < 0.5:
            price = MID + sign * (1 + rng.randint(0, 5)) * TICK
        else:
            price = MID + sign * rng.randint(1, 1000) * TICK
        return PlaceOrder(self.account_id, SYMBOL, side, price=price, qty=rng.randint(1, 500))

    def learn(self, result: object) -> None:
        if isinstance(result, OrderView) and result.status == "open":
            self.open.append(result.id)


async def drive(submit, accounts: list[int], args: argparse.Namespace, cpu) -> dict[str, float]:
    """Submitters on ``submit(command, request)`` for warm-up and the measured window; commands/s and
    ``cpu()`` seconds per command over the window."""
    acked = 0
    measuring = stopping = False
    rng = random.Random(1)

    async def loop(mix: CommandMix) -> None:
        nonlocal acked
        while not stopping:
            try:
                result = await submit(mix.next(), rng.randbytes(16))
            except Unavailable:
                await asyncio.sleep(0.05)
                continue
            acked += measuring
            mix.learn(result)

    tasks = [asyncio.create_task(loop(CommandMix(account, random.Random(rng.random())))) for account in accounts]
    await asyncio.sleep(args.warmup)
    measuring = True
    before, started, counted, submitting = cpu(), time.perf_counter(), acked, time.process_time()
    await asyncio.sleep(args.duration)
    used, seconds, commands = cpu() - before, time.perf_counter() - started, acked - counted
    submitting = time.process_time() - submitting
    measuring = False
    stopping = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"commands_per_s": commands / seconds, "cpu_us_per_command": 1e6 * used / max(commands, 1),
            "cpu_busy": used / seconds, "acked": acked, "submitting_busy": submitting / seconds}


async def new_market(backing: Backing, submitters: int) -> tuple[str, list[int]]:
    """A new database on the benchmark's server with the market of ``loadtest.exchange_worker``."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(backing.dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    assert backing.postgres is not None
    dsn = backing.postgres.dsn_for(name)
    await migrate(dsn)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        seq = await Sequencer.open(pool)
        try:
            market = await prepare(seq, traders=submitters, handout=min(100_000, 20_000_000 // submitters))
        finally:
            await seq.stop()
    return dsn, market.traders


async def engine_in_process(backing: Backing, args: argparse.Namespace) -> dict[str, float]:
    dsn, accounts = await new_market(backing, args.submitters)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        view = MarketData()
        async with pool.acquire() as conn:
            await view.load(conn)
        seq = await Sequencer.open(pool, publish=view.apply, publish_effects=view.apply_effects)
        try:
            result = await drive(seq.submit, accounts, args, time.process_time)
        finally:
            await seq.stop()
    return {**result, "per_batch": result["acked"] / max(seq.batches, 1)}


async def engine_via_nats(backing: Backing, args: argparse.Namespace) -> dict[str, float]:
    dsn, accounts = await new_market(backing, args.submitters)
    home = Path(tempfile.mkdtemp(prefix="tokex-bench-engine-"))
    env = {"TOKEX_HOME": str(home), "DATABASE_URL": dsn, "NATS_URL": backing.nats_url}
    log = home / "engine.log"
    with log.open("wb") as output:
        engine = subprocess.Popen([sys.executable, "-m", "api.cli", "engine"], env={**os.environ, **env},
                                  stdout=output, stderr=subprocess.STDOUT)
    nc = await connect(backing.nats_url, "bench")
    try:
        remote = RemoteSequencer(nc)
        await remote.start()
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while True:  # until the engine leads and answers
            try:
                await remote.submit(CommandMix(accounts[0], random.Random(0)).next(), random.randbytes(16))
                break
            except Unavailable:
                if engine.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tokex engine did not start:\n" + log.read_text()[-4000:]) from None
        process = psutil.Process(engine.pid)

        def cpu() -> float:
            times = process.cpu_times()
            return times.user + times.system

        try:
            result = await drive(remote.submit, accounts, args, cpu)
        finally:
            await remote.stop()
    finally:
        await nc.close()
        engine.terminate()
        await asyncio.to_thread(engine.wait, 60)
        stopped = ENGINE_STOPPED.search(log.read_text())
        shutil.rmtree(home, ignore_errors=True)
    commands, batches = (int(stopped[1]), int(stopped[2])) if stopped else (0, 0)
    return {**result, "per_batch": commands / max(batches, 1)}


# -- feed: many watchers over the gateways ------------------------------------------------------------------------


async def feed_cluster(cluster: Cluster, admin: dict, args: argparse.Namespace) -> dict[str, Any]:
    url = cluster.url
    senders = 4
    symbol, keys = await bench_api.set_up(url, admin, senders)
    latencies: list[int] = []
    read_latencies: list[int] = []
    measuring = [False]
    feed = Feed(url, frame_latencies(read_latencies, measuring), frame_latencies(latencies, measuring))
    started = time.monotonic()
    watchers: list[Watcher] = await start_watchers(feed, [symbol], args.feed_watchers)
    connect_s = time.monotonic() - started
    stop = asyncio.Event()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()

    async def flow(key_id: str, secret: str, number: int) -> None:
        _, connection = await loop.create_connection(Connection, host, int(port))
        trader = Trader(f"{host}:{port}", key_id, secret, symbol, random.Random(number))
        pause = senders / args.feed_rate
        try:
            next_at = time.monotonic()
            while not stop.is_set():
                kind, request, _ = trader.next()
                status, body = await connection.send(request)
                trader.learn(kind, status, body)
                next_at += pause
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            assert connection.transport is not None
            connection.transport.close()

    flows = [asyncio.create_task(flow(*key, n)) for n, key in enumerate(keys)]
    await asyncio.sleep(args.warmup)
    pids = cluster.pids()
    leader = cluster.leader()
    processes = {"gateways": [psutil.Process(pid) for pid in pids["gateway"]],
                 "engine": [psutil.Process(leader)] if leader is not None else [], "watchers": [psutil.Process()]}
    measuring[0] = True
    gaps, bad = feed.gaps, feed.bad
    measured_from = now_us()
    cpu_before = cpu_seconds(processes)
    await asyncio.sleep(args.duration)
    cpu_used = cpu_seconds(processes) - cpu_before
    measuring[0] = False
    stop.set()
    await asyncio.gather(*flows, return_exceptions=True)
    # Let the last messages and a heartbeat arrive: a heartbeat ahead of a chain is a gap too.
    await asyncio.sleep(1.5)
    spread = {pid: len(psutil.Process(pid).net_connections(kind="tcp")) for pid in cluster.pids()["gateway"]}
    for watcher in watchers:
        watcher.stop()
    ordered, read = sorted(latencies), sorted(read_latencies)

    def percentile(p: float, ordered: list[int] = ordered) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000 if ordered else float("nan")

    return {"watchers": args.feed_watchers, "connect_s": connect_s, "frames": len(latencies),
            "p50_ms": percentile(0.50), "p99_ms": percentile(0.99), "max_ms": percentile(1.0),
            "read_p50_ms": percentile(0.50, read), "read_p99_ms": percentile(0.99, read),
            "gaps": feed.gaps - gaps, "bad": feed.bad - bad, "measured_from_us": measured_from,
            "connections_per_gateway": spread, "cut_off": feed.cut_off,
            "cpu_us_per_frame": {name: 1e6 * seconds / max(len(latencies), 1) for name, seconds in cpu_used.items()},
            "cpu_cores": {name: seconds / args.duration for name, seconds in cpu_used.items()}}


# -- report -------------------------------------------------------------------------------------------------------


def report_orders(one: dict[str, Any], many: dict[str, Any], gateways: int) -> None:
    speedup = many["orders_per_s"] / one["orders_per_s"] if one["orders_per_s"] else float("nan")
    for name, result in (("one process", one), (f"cluster, {gateways} gateways", many)):
        cpu = ", ".join(f"{role} {us:.0f} us ({result['cpu_cores'][role]:.2f} cores)"
                        for role, us in result["cpu_us_per_order"].items())
        print(f"  {name:<22} {result['orders_per_s']:>8,.0f} orders/s, p50 {result['p50_ms']:.1f} ms, "
              f"p99 {result['p99_ms']:.1f} ms, errors {sum(result['errors'].values())}, watcher gaps "
              f"{result['watcher_gaps']}\n      CPU per order: {cpu}")
    met = speedup >= TARGET_SPEEDUP and many["p99_ms"] <= TARGET_P99_MS
    print(f"  cluster / one process: {speedup:.2f}x (target >= {TARGET_SPEEDUP}x), cluster p99 "
          f"{many['p99_ms']:.1f} ms (target <= {TARGET_P99_MS:g} ms): {'met' if met else 'MISSED'}")
    rows = capacity(many["cpu_us_per_order"])
    print(f"  capacity of a {HOST_CORES}-core host from these CPU figures (engine: one core; NATS and PostgreSQL "
          "take what the rate needs):")
    print(f"    {'gateways':>8} {'orders/s':>10} {'engine busy':>11} {'cores used':>10}  bound")
    for row in rows:
        print(f"    {row['gateways']:>8} {row['orders_per_s']:>10,.0f} {100 * row['engine_busy']:>10.0f}% "
              f"{row['cores_used']:>10.1f}  {row['bound']}")


def report_engine(in_process: dict[str, float], via_nats: dict[str, float]) -> None:
    ratio = via_nats["cpu_us_per_command"] / in_process["cpu_us_per_command"]
    for name, result in (("in process", in_process), ("through NATS", via_nats)):
        print(f"  {name:<13} {result['commands_per_s']:>8,.0f} commands/s, engine CPU "
              f"{result['cpu_us_per_command']:.1f} us per command ({100 * result['cpu_busy']:.0f}% of a core), "
              f"{result['per_batch']:.1f} commands per batch; one core would commit "
              f"{1e6 / result['cpu_us_per_command']:,.0f}/s")
    print(f"  the submitting process of the NATS side: {100 * via_nats['submitting_busy']:.0f}% of a core")
    print(f"  through NATS / in process: {ratio:.2f}x (target <= {TARGET_ENGINE_RATIO}): "
          f"{'met' if ratio <= TARGET_ENGINE_RATIO else 'MISSED'}")


def report_feed(result: dict[str, Any], rate: float) -> None:
    met = result["p99_ms"] <= TARGET_FEED_P99_MS and result["gaps"] == 0 and result["bad"] == 0
    print(f"  {result['watchers']:,} watchers (connected in {result['connect_s']:.1f} s, per gateway "
          f"{sorted(result['connections_per_gateway'].values())}), {rate:g} orders/s: p50 {result['p50_ms']:.1f} ms, "
          f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms from ts to receipt over {result['frames']:,} "
          f"frames; gaps {result['gaps']}, bad {result['bad']}, cut off {result['cut_off'] or 'none'} (target p99 <= "
          f"{TARGET_FEED_P99_MS:g} ms, 0 gaps): {'met' if met else 'MISSED'}")
    print(f"      read by the watchers' process (its own wait for a core included): p50 "
          f"{result['read_p50_ms']:.1f} ms, p99 {result['read_p99_ms']:.1f} ms")
    cpu = ", ".join(f"{role} {us:.1f} us ({result['cpu_cores'][role]:.2f} cores)"
                    for role, us in result["cpu_us_per_frame"].items())
    print(f"      CPU per frame received: {cpu}")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    raise_file_limit()
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    if "orders" in only:
        print(f"orders: {args.connections} connections, {args.watchers} watchers, {args.warmup:g} s warm-up, "
              f"{args.duration:g} s measured")
        results["one_process"] = await orders_one_process(args)
    if only & {"orders", "feed"}:
        results.update(await on_cluster(args, only))
    if "orders" in only:
        report_orders(results["one_process"], results["cluster"], args.gateways)
    if "feed" in only:
        print(f"feed: {args.feed_watchers} watchers over {args.gateways} gateways, {args.feed_rate:g} orders/s")
        report_feed(results["feed"], args.feed_rate)
    if "engine" in only:
        print(f"engine: {args.submitters} submitters, {args.warmup:g} s warm-up, {args.duration:g} s measured")
        backing = await Backing().start()
        try:
            results["engine_in_process"] = await engine_in_process(backing, args)
            results["engine_via_nats"] = await engine_via_nats(backing, args)
        finally:
            await backing.stop()
        report_engine(results["engine_in_process"], results["engine_via_nats"])
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds of each part")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=64, help="order senders of the orders part")
    parser.add_argument("--watchers", type=int, default=500, help="watchers during the orders part")
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--submitters", type=int, default=64, help="submitters of the engine part")
    parser.add_argument("--feed-watchers", type=int, default=5_000)
    parser.add_argument("--feed-rate", type=float, default=100.0, help="orders a second during the feed part")
    parser.add_argument("--only", default="orders,engine,feed", help="the parts to run, comma-separated")
    args = parser.parse_args(argv)
    args.profile = False  # bench_api.measure's option
    return args


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
