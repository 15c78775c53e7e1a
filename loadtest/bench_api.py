"""Signed order placement over HTTP: concurrent keep-alive connections against a real `tokex serve`.

Each run starts ``tokex serve --no-rate-limit`` (uvicorn, one worker) in a subprocess on a new embedded
PostgreSQL (a temporary TOKEX_HOME; or on ``--database-url``), makes its admin key with
``tokex admin create-admin`` before the start, and sets up over the API an instrument and one funded issuer
account per connection, holding minted lots so that it can sell. Then ``--connections`` connections each send
one signed request, wait for the answer and send the next, for ``--warmup`` seconds and then ``--duration``
measured seconds. Every figure printed last is the median of ``--runs`` runs.

Mix, like W2 of ``bench_matching`` (about 1,000 live orders): ~55% limit orders (half near the touch, a tenth
of those crossing; half up to 1,000 ticks deep), ~35% cancels of the connection's own open orders, ~10% market
orders of 20-400 lots that take from the touch. A connection keeps between 12 and 20 orders open. It learns of
its orders only from its own answers, so a cancel may name an order that filled meanwhile: that is answered
404 ``unknown_order``, a refusal, as it would be for any client.

Counted: acknowledged requests per second (any answer from the exchange after its commit: placed, cancelled,
or refused for a business reason such as a cancel of an order that filled meanwhile), latency from writing the
request to reading the whole answer (p50, p99, max), refusals by code, and errors: anything else (transport
failures, 5xx, 401, 429, 4xx other than the business refusals), by status and code. CPU use over the measured
window is shown per process: the server, PostgreSQL, and this load generator, which shares the machine.

The client is lean on purpose (the generator shares the cores with the server): raw HTTP/1.1 over asyncio
protocols, requests formatted and signed by hand (the scheme of ``api.signing``), answers parsed by
Content-Length, bodies decoded by msgspec into a two-field Struct.

``--profile`` samples the server process with py-spy (``pip install py-spy``) over the measured window and
prints its time by layer: uvicorn/h11, starlette, auth (HMAC, key lookup), API handlers and msgspec, the
sequencer, the engine, asyncpg/the store, asyncio.

Usage: ``python -m loadtest.bench_api [--duration 20] [--warmup 3] [--connections 64] [--runs 3]
[--database-url URL] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

from api.client import Client
from exchange.database import Database
from loadtest import benchmark
from loadtest.connection import Connection
from loadtest.server import Server, cpu_seconds
from loadtest.traders import PROBLEM, Trader

TARGET_RATE = 8_000
TARGET_P99_MS = 25.0
MINTED = 1_000_000
CASH = "100000000"
REFUSALS = {404, 409}
"""Statuses of business refusals: an answer of the exchange, not an error."""


@dataclass
class Stats(benchmark.Run):
    """What one run measured; its ``batches`` are the group commits in the window that wrote a journal entry
    (entries of one batch share their created_at)."""

    refusals: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    cpu: Counter[str] = field(default_factory=Counter)
    profile: Counter[str] = field(default_factory=Counter)
    window: tuple[float, float] = (0.0, 0.0)
    """Wall-clock start and end of the measured window (Unix seconds)."""


async def set_up(url: str, admin: dict, connections: int) -> tuple[str, list[tuple[str, str]]]:
    """An instrument and one funded issuer per connection holding minted lots; their (key id, secret)."""
    symbol = f"BENCH-{uuid.uuid4().hex[:6].upper()}"
    async with Client(url, admin["key_id"], admin["secret"]) as boss:
        await boss.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="bench",
                                     substitution_group="chat-general", quality=80, tokens_per_lot=1_000_000)

        async def account(number: int) -> tuple[str, str]:
            made = await boss.create_account(f"bench-{symbol.lower()}-{number}", "issuer")
            key = await boss.create_key(made["id"], ["read", "trade", "issue"], "bench")
            await boss.deposit(made["id"], CASH)
            await boss.approve_issuer(made["id"], symbol, MINTED)
            async with boss.with_key(key["id"], key["secret"]) as own:
                await own.mint(symbol, MINTED)
            return key["id"], key["secret"]

        keys = await asyncio.gather(*(account(n) for n in range(connections)))
    return symbol, list(keys)


async def measure(url: str, symbol: str, keys: list[tuple[str, str]], args: argparse.Namespace, seed: int,
                  processes: dict[str, list[psutil.Process]]) -> Stats:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    stats = Stats()
    measuring = False
    stopping = False
    clock = time.perf_counter
    rng = random.Random(seed)

    async def run(key_id: str, secret: str) -> None:
        _, connection = await loop.create_connection(Connection, host, int(port))
        trader = Trader(f"{host}:{port}", key_id, secret, symbol, random.Random(rng.random()))
        try:
            while not stopping:
                kind, request, _ = trader.next()
                start = clock()
                try:
                    status, body = await connection.send(request)
                except ConnectionError:
                    if measuring:
                        stats.errors["connection closed"] += 1
                    return
                if not measuring:
                    trader.learn(kind, status, body)
                    continue
                stats.latencies.append(clock() - start)
                stats.kinds[kind] += 1
                if status < 300:
                    stats.acked += 1
                elif status in REFUSALS:
                    stats.acked += 1
                    stats.refusals[f"{status} {PROBLEM.decode(body).code}"] += 1
                else:
                    code = PROBLEM.decode(body).code if body.startswith(b"{") else ""
                    stats.errors[f"{status} {code}".strip()] += 1
                trader.learn(kind, status, body)
        finally:
            assert connection.transport is not None
            connection.transport.close()

    tasks = [asyncio.create_task(run(key_id, secret)) for key_id, secret in keys]
    await asyncio.sleep(args.warmup)
    profiler = start_profiler(processes["server"][0].pid, args.duration) if args.profile else None
    cpu_before = cpu_seconds(processes)
    measuring = True
    started, wall = clock(), time.time()
    await asyncio.sleep(args.duration)
    measuring = False
    stats.seconds = clock() - started
    stats.window = (wall, wall + stats.seconds)
    stats.cpu = cpu_seconds(processes)
    stats.cpu.subtract(cpu_before)
    stopping = True
    await asyncio.gather(*tasks, return_exceptions=True)
    if profiler is not None:
        stats.profile = await asyncio.to_thread(finish_profiler, profiler)
    return stats


# -- profile of the server ---------------------------------------------------------------------------------------

LAYERS = [
    ("auth: HMAC and key lookup", ("api/auth.py", "api/signing.py", "api/keys.py", "/hmac.py")),
    ("engine: hold, match, settle", ("exchange/engine.py", "exchange/ledger.py", "exchange/fees.py", "matching/")),
    ("store and asyncpg (client side of the commit)", ("exchange/store.py", "asyncpg/")),
    ("sequencer", ("exchange/sequencer.py",)),
    ("market data view", ("api/marketdata.py",)),
    ("API handlers, msgspec decode/encode", ("api/",)),
    ("starlette", ("starlette/",)),
    ("uvicorn and h11 (HTTP parsing, ASGI glue)", ("uvicorn/", "h11/")),
    ("asyncio event loop and sockets", ("asyncio/", "selectors.py", "socket.py")),
]


def start_profiler(pid: int, seconds: float) -> tuple[subprocess.Popen, Path] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("  --profile needs py-spy: pip install py-spy")
        return None
    out = Path(tempfile.mkdtemp(prefix="tokex-bench-prof-")) / "stacks.txt"
    process = subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                "--rate", "250", "--format", "raw", "--output", str(out), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, out


def finish_profiler(profiler: tuple[subprocess.Popen, Path] | None) -> Counter[str]:
    """Samples by layer, from py-spy's collapsed stacks: each sample goes to the innermost frame's layer."""
    layers: Counter[str] = Counter()
    if profiler is None:
        return layers
    process, out = profiler
    _, err = process.communicate(timeout=120)
    if not out.exists():
        print(f"  py-spy failed: {err.strip()}")
        return layers
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        layers[layer_of(frames)] += int(count)
        layers[" function: " + frames[-1].split(" (")[0] + " (" + frames[-1].rsplit("/", 1)[-1]] += int(count)
    shutil.rmtree(out.parent, ignore_errors=True)
    return layers


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return name
    return "other"


# -- runs and report ---------------------------------------------------------------------------------------------


async def run_once(args: argparse.Namespace, number: int) -> Stats:
    server = Server(args.database_url)
    try:
        admin = await asyncio.to_thread(server.tokex, "admin", "create-admin", "--name", "bench-admin")
        url = await asyncio.to_thread(server.start)
        symbol, keys = await set_up(url, admin, args.connections)
        assert server.process is not None
        processes = {
            "server": [psutil.Process(server.process.pid)],
            "postgres": server.postgres(),
            "load generator": [psutil.Process()],
        }
        stats = await measure(url, symbol, keys, args, number, processes)
        stats.batches = await count_batches(args.database_url, server.home, stats.window)
        return stats
    finally:
        status = await asyncio.to_thread(server.stop)
        if status != 0:
            print(f"  the server exited with status {status}:\n" + "".join(server.output[-20:]))


async def count_batches(database_url: str | None, home: Path, window: tuple[float, float]) -> int:
    """Group commits in ``window``, read from the server's database (the embedded one is attached to)."""
    async with Database(database_url, home=home) as database:
        conn = await asyncpg.connect(database.dsn)
        try:
            return await conn.fetchval(
                "SELECT count(DISTINCT created_at) FROM journal_entry WHERE created_at BETWEEN to_timestamp($1) AND "
                "to_timestamp($2)", *window)
        finally:
            await conn.close()


def report_run(number: int, stats: Stats) -> None:
    cpu = ", ".join(f"{name} {100 * seconds / stats.seconds:.0f}% ({1e6 * seconds / max(stats.acked, 1):.0f} us)"
                    for name, seconds in stats.cpu.items())
    print(f"run {number}: {stats.rate:,.0f} acknowledged/s, p50 {stats.percentile_ms(0.50):.2f} ms, "
          f"p99 {stats.percentile_ms(0.99):.2f} ms, max {1000 * max(stats.latencies, default=0):.1f} ms, "
          f"errors {sum(stats.errors.values())}; {stats.batches:,} group commits of "
          f"~{stats.acked / max(stats.batches, 1):.0f} requests; CPU busy (of one core) and per request: {cpu}")


def report_profile(stats: Stats) -> None:
    total = sum(count for name, count in stats.profile.items() if not name.startswith(" "))
    if not total:
        return
    print(f"  server profile (py-spy, {total:,} samples of its busy time, by the innermost frame's layer):")
    per_request = 1e6 * stats.cpu["server"] / max(stats.acked, 1)
    for name, count in stats.profile.most_common():
        if not name.startswith(" "):
            print(f"    {name:<48} {100 * count / total:5.1f}%  ~{per_request * count / total:5.0f} us/request")
    print("  busiest functions (own time):")
    functions = [(name, count) for name, count in stats.profile.most_common() if name.startswith(" ")]
    for name, count in functions[:15]:
        print(f"    {100 * count / total:5.1f}% {name.removeprefix(' function: ')}")


async def main(args: argparse.Namespace) -> None:
    print(f"{args.connections} connections, {args.warmup:g} s warm-up, {args.duration:g} s measured, "
          f"{args.runs} run(s), W2-like mix; server: tokex serve (uvicorn, one worker), rate limits off")
    runs = []
    for number in range(1, args.runs + 1):
        stats = await run_once(args, number)
        report_run(number, stats)
        if stats.profile:
            report_profile(stats)
        runs.append(stats)
    rate, p99 = benchmark.print_medians(runs, TARGET_RATE, TARGET_P99_MS)
    kinds = sum((s.kinds for s in runs), Counter())
    refusals = sum((s.refusals for s in runs), Counter())
    errors = sum((s.errors for s in runs), Counter())
    total = sum(kinds.values()) or 1
    print("  mix: " + ", ".join(f"{kind} {100 * n / total:.1f}%" for kind, n in kinds.most_common()))
    print("  refusals (answers, all runs): " + (", ".join(f"{k} {v}" for k, v in refusals.most_common()) or "none"))
    print("  errors (all runs): " + (", ".join(f"{k} {v}" for k, v in errors.most_common()) or "none"))
    per_order = {name: statistics.median(s.cpu[name] / max(s.acked, 1) for s in runs) for name in runs[0].cpu}
    cores = psutil.cpu_count() or 1
    print("  CPU per acknowledged request: " + ", ".join(f"{name} {1e6 * v:.0f} us" for name, v in per_order.items())
          + f"; all together {1e6 * sum(per_order.values()):.0f} us, so {cores} cores at 100% would ack at most "
          f"{cores / sum(per_order.values()):,.0f}/s")
    met = rate >= TARGET_RATE and p99 <= TARGET_P99_MS and not errors
    print(f"  target {'met' if met else 'MISSED'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark.parser(__doc__, duration=20.0, clients="--connections")
    parser.add_argument("--database-url", help="serve on this PostgreSQL (default: a new embedded one per run)")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy while measuring")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
