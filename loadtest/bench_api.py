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
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import msgspec
import psutil

from api.client import Client
from exchange.database import Database

TARGET_RATE = 8_000
TARGET_P99_MS = 25.0
TICK = 10_000  # 0.01 CNY
MID = 2_000 * TICK  # 20.00 CNY
LIVE_LOW, LIVE_HIGH = 12, 20
MINTED = 1_000_000
CASH = "100000000"
REFUSALS = {404, 409}
"""Statuses of business refusals: an answer of the exchange, not an error."""


class Placed(msgspec.Struct):
    id: int
    status: str


class Problem(msgspec.Struct):
    code: str = ""


PLACED = msgspec.json.Decoder(Placed)
PROBLEM = msgspec.json.Decoder(Problem)


@dataclass
class Stats:
    acked: int = 0
    latencies: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cpu: Counter[str] = field(default_factory=Counter)
    profile: Counter[str] = field(default_factory=Counter)
    window: tuple[float, float] = (0.0, 0.0)
    """Wall-clock start and end of the measured window (Unix seconds)."""
    batches: int = 0
    """Group commits in the window that wrote a journal entry: entries of one batch share their created_at."""

    @property
    def rate(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, answered as (status, body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 17)
            length = int(head[at + 17: stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(buffer[end + 4: total])
        del buffer[:total]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return await self.waiter


class Trader:
    """One connection's account, its signed requests and its share of the mix."""

    def __init__(self, host: str, key_id: str, secret: str, symbol: str, rng: random.Random) -> None:
        self.host = host.encode()
        self.key = key_id.encode()
        self.mac = hmac.new(secret.encode("ascii"), digestmod=hashlib.sha256)
        self.symbol = symbol
        self.rng = rng
        self.open: list[int] = []

    def request(self, method: bytes, target: bytes, body: bytes = b"") -> bytes:
        # Microseconds: two equal orders in one second are two requests, not a replay.
        timestamp = b"%.6f" % time.time()
        mac = self.mac.copy()
        mac.update(timestamp + method + target + body)
        head = (b"%s %s HTTP/1.1\r\nHost: %s\r\nTOKEX-KEY: %s\r\nTOKEX-TIMESTAMP: %s\r\nTOKEX-SIGNATURE: %s\r\n"
                % (method, target, self.host, self.key, timestamp, mac.hexdigest().encode()))
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        return head + b"\r\n" + body

    def order(self, side: str, price: int | None, qty: int) -> bytes:
        if price is None:
            body = b'{"symbol":"%s","side":"%s","type":"market","qty":%d}' % (self.symbol.encode(), side.encode(), qty)
        else:
            whole, fraction = divmod(price, 1_000_000)
            body = b'{"symbol":"%s","side":"%s","type":"limit","price":"%d.%06d","qty":%d}' % (
                self.symbol.encode(), side.encode(), whole, fraction, qty)
        return self.request(b"POST", b"/v1/orders", body)

    def next(self) -> tuple[str, bytes, int | None]:
        """(kind, request, the order id a cancel names)."""
        rng = self.rng
        roll = rng.random()
        if len(self.open) >= LIVE_HIGH:
            roll = 0.6
        elif len(self.open) < LIVE_LOW:
            roll = 0.0
        if 0.55 <= roll < 0.90 and self.open:
            order_id = self.open.pop(rng.randrange(len(self.open)))
            return "cancel", self.request(b"DELETE", b"/v1/orders/%d" % order_id), order_id
        side = "buy" if rng.random() < 0.5 else "sell"
        sign = -1 if side == "buy" else 1
        if roll < 0.90:
            if rng.random() < 0.5:
                if rng.random() < 0.10:
                    return "crossing limit", self.order(side, MID - sign * 3 * TICK, rng.randint(1, 100)), None
                price = MID + sign * (1 + rng.randint(0, 5)) * TICK
            else:
                price = MID + sign * rng.randint(1, 1000) * TICK
            return "limit", self.order(side, price, rng.randint(1, 500)), None
        return "market", self.order(side, None, rng.randint(20, 400)), None

    def learn(self, kind: str, status: int, body: bytes) -> None:
        if status == 201 and kind != "market":
            placed = PLACED.decode(body)
            if placed.status == "open":
                self.open.append(placed.id)


class Server:
    """``tokex serve`` in a subprocess, on its own TOKEX_HOME unless given a database."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self.home = Path(tempfile.mkdtemp(prefix="tokex-bench-api-"))
        # The embedded server's user must be able to enter TOKEX_HOME when we run as root.
        self.home.chmod(0o755)
        self.env = {**os.environ, "TOKEX_HOME": str(self.home), "TOKEX_MASTER_KEY": secrets.token_hex(32)}
        self.env.pop("DATABASE_URL", None)
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.output: list[str] = []

    def tokex(self, *argv: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "api.cli", *argv], env=self.env, capture_output=True,
                              text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"tokex {' '.join(argv)} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def start(self, port: int = 0) -> str:
        """Start serving (on a free port unless given one, e.g. the last one after a restart); return the URL."""
        self.output.clear()
        self.process = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port),
                                         "--no-rate-limit"],
                                        env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise RuntimeError("tokex serve did not start:\n" + "".join(self.output))
        threading.Thread(target=self._drain, daemon=True).start()
        return self.url

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def postgres(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name", "cwd"]):
            with contextlib.suppress(psutil.Error):
                if process.info["name"] == "postgres" and str(self.home) in (process.info["cwd"] or ""):
                    found.append(process)
        return found

    def stop(self) -> int:
        status = 0
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                status = self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)
        return status


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


def cpu_seconds(processes: dict[str, list[psutil.Process]]) -> Counter[str]:
    used: Counter[str] = Counter()
    for name, group in processes.items():
        for process in group:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                used[name] += times.user + times.system
    return used


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
    rate = statistics.median(s.rate for s in runs)
    p50 = statistics.median(s.percentile_ms(0.50) for s in runs)
    p99 = statistics.median(s.percentile_ms(0.99) for s in runs)
    worst = statistics.median(1000 * max(s.latencies, default=0) for s in runs)
    kinds = sum((s.kinds for s in runs), Counter())
    refusals = sum((s.refusals for s in runs), Counter())
    errors = sum((s.errors for s in runs), Counter())
    total = sum(kinds.values()) or 1
    print(f"\nmedian of {len(runs)}: {rate:,.0f} acknowledged orders/s (target >= {TARGET_RATE:,}), "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target <= {TARGET_P99_MS:g}), max {worst:.1f} ms")
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", help="serve on this PostgreSQL (default: a new embedded one per run)")
    parser.add_argument("--profile", action="store_true", help="sample the server with py-spy while measuring")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
