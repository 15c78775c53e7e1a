"""Inference calls through the gateway against a fast simulated provider: calls per second, and the time tokex adds.

Each run starts ``tokex serve --no-rate-limit`` in a subprocess on a new embedded PostgreSQL (or on
``--database-url``) and a simulated provider (``api.inference.simulated``, no delay) in another, then sets up over
the API a compute instrument, an issuer serving it from the provider, and a buyer who bought and redeemed 1,000
lots (a quota of a billion tokens) with an inference key. Calls (not streamed, one short message, ``max_tokens``
16) start at ``--rate`` a second, open loop (a slow answer does not delay the next call), on ``--connections``
keep-alive connections (a call waits for a free one), for ``--warmup`` seconds and then ``--duration`` measured
seconds.

Counted over the measured window: calls answered per second and each call's latency from sending the request to
reading the whole answer (p50, p99). Then the same calls go to the provider alone, at the same rate, for as long:
**the time tokex adds** is the difference of the two latencies at p50 and at p99, so the provider's own time (and
the network to it) is left out. What tokex adds includes authenticating the bearer token, the reservation's
durable commit and forwarding; the settlement commits just after the answer (``api.inference.gateway``).

CPU per call is shown per process: the server, PostgreSQL (when embedded), the provider and this load generator,
which shares the machine's cores with them and so writes its requests by hand on plain connections
(``loadtest.connection``), cheaper than an HTTP library.

Usage: ``python -m loadtest.bench_inference [--rate 500] [--duration 10] [--warmup 2] [--connections 64]
[--database-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
import psutil

from api.client import Client
from api.keys import bearer_token
from loadtest.connection import Connection
from loadtest.server import Server, cpu_seconds

TOKENS_PER_LOT = 1_000_000
LATE_SECONDS = 30.0
LOTS = 1_000
BODY = b'{"model":"BENCH-V3","messages":[{"role":"user","content":"hello from the bench"}],"max_tokens":16}'


@dataclass
class Calls:
    started: int = 0
    latency: list[float] = field(default_factory=list)
    """Seconds from sending to the whole answer, of the calls started in the measured window."""
    window: tuple[float, float] = (0.0, 0.0)
    """From the first measured call's start to the last measured call's answer (perf_counter seconds)."""

    @property
    def rate(self) -> float:
        """Measured calls answered per second, over the time it took to answer them."""
        return len(self.latency) / max(self.window[1] - self.window[0], 1e-9)
    errors: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_provider(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "api.inference.simulated", "--port", str(port),
                                "--model", "bench-fast"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the simulated provider did not start")


async def set_up(url: str, admin: dict, provider_url: str) -> tuple[str, Client]:
    """The instrument, the serving issuer and the buyer's quota: (bearer token, issuer client)."""
    async with Client(url, admin["key_id"], admin["secret"]) as boss:
        await boss.create_instrument(kind="compute", symbol="BENCH-V3", tick="0.01", model="bench",
                                     substitution_group="bench", quality=90, tokens_per_lot=TOKENS_PER_LOT)
        issuer_account = await boss.create_account("bench-issuer", "issuer")
        buyer_account = await boss.create_account("bench-buyer", "trader")
        await boss.deposit(buyer_account["id"], "100000")
        await boss.approve_issuer(issuer_account["id"], "BENCH-V3", 10 * LOTS)
        issuer_key = await boss.create_key(issuer_account["id"], ["read", "trade", "issue"])
        buyer_key = await boss.create_key(buyer_account["id"], ["read", "trade"])
        inference_key = await boss.create_key(buyer_account["id"], ["inference"])
    issuer = Client(url, issuer_key["id"], issuer_key["secret"])
    await issuer.mint("BENCH-V3", LOTS)
    await issuer.register_provider("BENCH-V3", provider_url, "bench-fast")
    await issuer.place_order("BENCH-V3", "sell", price="1.00", qty=LOTS)
    async with Client(url, buyer_key["id"], buyer_key["secret"]) as buyer:
        await buyer.place_order("BENCH-V3", "buy", price="1.00", qty=LOTS)
        await buyer.redeem("BENCH-V3", LOTS)
    return bearer_token(inference_key["id"], inference_key["secret"]), issuer


async def load(url: str, path: str, token: str | None, body: bytes, args: argparse.Namespace) -> Calls:
    """Start calls to ``url`` + ``path`` at ``args.rate`` a second; return what was measured."""
    calls = Calls()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    authorization = "" if token is None else f"Authorization: Bearer {token}\r\n"
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{authorization}Content-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened: list[Connection] = []
    for _ in range(args.connections):
        _, connection = await loop.create_connection(Connection, host, int(port))
        opened.append(connection)
        idle.put_nowait(connection)
    begin = time.perf_counter()
    measure_from = begin + args.warmup
    end = measure_from + args.duration
    calls.window = (measure_from, measure_from)
    running: set[asyncio.Task] = set()

    async def one(measured: bool) -> None:
        connection = await idle.get()
        sent = time.perf_counter()
        try:
            status, body = await connection.send(request)
        except ConnectionError:
            calls.errors["connection lost"] = calls.errors.get("connection lost", 0) + 1
            return
        took = time.perf_counter() - sent
        idle.put_nowait(connection)
        if status != 200:
            code = f"{status} {json.loads(body).get('error', {}).get('code')}"
            calls.errors[code] = calls.errors.get(code, 0) + 1
        elif measured:
            calls.latency.append(took)
            calls.window = (calls.window[0], max(calls.window[1], sent + took))

    n = 0
    while True:
        due = begin + n / args.rate
        if due >= end:
            break
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        measured = due >= measure_from
        calls.started += measured
        task = asyncio.create_task(one(measured))
        running.add(task)
        task.add_done_callback(running.discard)
        n += 1
    if running:
        # Calls still unanswered this long after the last one started are given up, and counted as such.
        _, late = await asyncio.wait(running, timeout=LATE_SECONDS)
        for task in late:
            task.cancel()
        if late:
            calls.errors["unanswered"] = len(late)
    for connection in opened:
        assert connection.transport is not None
        connection.transport.close()
    return calls


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def figures(name: str, calls: Calls, args: argparse.Namespace) -> None:
    totals = calls.latency
    print(f"  {name}: {calls.rate:,.0f} calls/s answered ({len(totals)} of {calls.started} started)"
          + (f", p50 {statistics.median(totals) * 1000:.2f} ms, p99 {percentile(totals, 0.99) * 1000:.2f} ms"
             if totals else "") + (f"; errors {calls.errors}" if calls.errors else ""))


async def main(args: argparse.Namespace) -> None:
    server = Server(args.database_url)
    port = free_port()
    provider = await asyncio.to_thread(start_provider, port)
    try:
        admin = await asyncio.to_thread(server.tokex, "admin", "create-admin", "--name", "bench-admin")
        url = await asyncio.to_thread(server.start)
        token, issuer = await set_up(url, admin, f"http://127.0.0.1:{port}/v1")
        await issuer.aclose()
        assert server.process is not None
        processes = {"server": [psutil.Process(server.process.pid)], "postgres": server.postgres(),
                     "provider": [psutil.Process(provider.pid)], "load generator": [psutil.Process()]}
        cpu_before = cpu_seconds(processes)
        through = await load(url, "/inference/v1/chat/completions", token, BODY, args)
        cpu = cpu_seconds(processes) - cpu_before
        direct = await load(f"http://127.0.0.1:{port}", "/v1/chat/completions", None,
                            BODY.replace(b"BENCH-V3", b"bench-fast"), args)
    finally:
        provider.terminate()
        provider.wait(10)
        status = await asyncio.to_thread(server.stop)
        if status != 0:
            print(f"the server exited with status {status}:\n" + "".join(server.output[-20:]))
    print(f"inference calls, {args.rate:g}/s offered for {args.duration:g} s on {args.connections} connections, "
          "to a fast simulated provider")
    figures("through tokex", through, args)
    figures("the provider alone", direct, args)
    if through.latency and direct.latency:
        added = [percentile(through.latency, q) - percentile(direct.latency, q) for q in (0.5, 0.99)]
        print(f"  tokex adds: p50 {added[0] * 1000:.2f} ms, p99 {added[1] * 1000:.2f} ms")
    if through.started:
        print("  CPU per call through tokex (warm-up included): " + ", ".join(
            f"{name} {used / (through.started * (args.duration + args.warmup) / args.duration) * 1e6:,.0f} us"
            for name, used in cpu.items() if used))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="calls started per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database-url", help="an external PostgreSQL (default: embedded, in a temporary folder)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
