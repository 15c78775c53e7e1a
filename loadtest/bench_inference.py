"""Inference calls through the gateway against a fast simulated provider: calls per second, and the time tokex adds.

Each run starts ``tokex serve --no-rate-limit`` in a subprocess on a new embedded PostgreSQL (or on
``--database-url``) and a simulated provider (``api.inference.simulated``, no delay) in another, then sets up over
the API a compute instrument, an issuer serving it from the provider, and a buyer who bought and redeemed 1,000
lots (a quota of a billion tokens) with an inference key. Calls (not streamed, one short message, ``max_tokens``
16) start at ``--rate`` a second, open loop (a slow answer does not delay the next call), over up to
``--connections`` keep-alive connections, for ``--warmup`` seconds and then ``--duration`` measured seconds.

Counted over the measured window: calls answered per second; each call's latency from sending the request to
reading the whole answer (p50, p99); and **the time tokex adds**: that latency less the provider's own time as the
gateway measured it around its request to the provider (the ``latency_ms`` of the call's usage row, read back from
``GET /v1/providers/{id}/deliveries`` by the reservation id each answer carries). What tokex adds includes
authenticating the bearer token, the reservation's durable commit, forwarding, and the settlement's commit, which
the answer waits for. The load generator shares the machine's cores with both servers.

Usage: ``python -m loadtest.bench_inference [--rate 500] [--duration 10] [--warmup 2] [--connections 64]
[--database-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
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
from loadtest.server import Server, cpu_seconds

TOKENS_PER_LOT = 1_000_000
LOTS = 1_000
BODY = b'{"model":"BENCH-V3","messages":[{"role":"user","content":"hello from the bench"}],"max_tokens":16}'


@dataclass
class Calls:
    started: int = 0
    latency: dict[int, float] = field(default_factory=dict)
    """Reservation id -> seconds from sending to the whole answer, for calls started in the measured window."""
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


async def set_up(url: str, admin: dict, provider_url: str) -> tuple[str, Client, int]:
    """The instrument, the serving issuer and the buyer's quota: (bearer token, issuer client, provider id)."""
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
    provider = await issuer.register_provider("BENCH-V3", provider_url, "bench-fast")
    await issuer.place_order("BENCH-V3", "sell", price="1.00", qty=LOTS)
    async with Client(url, buyer_key["id"], buyer_key["secret"]) as buyer:
        await buyer.place_order("BENCH-V3", "buy", price="1.00", qty=LOTS)
        await buyer.redeem("BENCH-V3", LOTS)
    return bearer_token(inference_key["id"], inference_key["secret"]), issuer, provider["id"]


async def load(url: str, token: str, args: argparse.Namespace) -> tuple[Calls, float]:
    """Start calls at ``args.rate`` a second; return what was measured and the measured window's length."""
    calls = Calls()
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        begin = time.perf_counter()
        measure_from = begin + args.warmup
        end = measure_from + args.duration
        running: set[asyncio.Task] = set()

        async def one(measured: bool) -> None:
            sent = time.perf_counter()
            try:
                response = await client.post("/inference/v1/chat/completions", content=BODY, headers=headers)
            except httpx.HTTPError as exc:
                calls.errors[type(exc).__name__] = calls.errors.get(type(exc).__name__, 0) + 1
                return
            took = time.perf_counter() - sent
            if response.status_code != 200:
                code = f"{response.status_code} {response.json().get('error', {}).get('code')}"
                calls.errors[code] = calls.errors.get(code, 0) + 1
            elif measured:
                calls.latency[int(response.headers["tokex-reservation"])] = took

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
        await asyncio.gather(*running)
    return calls, args.duration


async def provider_times(issuer: Client, provider_id: int, wanted: set[int]) -> dict[int, float]:
    """Reservation id -> the provider's own seconds (its ok attempt's latency as the gateway measured it)."""
    found: dict[int, float] = {}
    cursor = None
    while True:
        page = await issuer.deliveries(provider_id, limit=500, **({"cursor": cursor} if cursor else {}))
        for item in page["items"]:
            if item["status"] == "ok" and item["reservation_id"] in wanted:
                found[item["reservation_id"]] = item["latency_ms"] / 1000
        cursor = page["next_cursor"]
        if cursor is None or len(found) == len(wanted):
            return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    server = Server(args.database_url)
    port = free_port()
    provider = await asyncio.to_thread(start_provider, port)
    try:
        admin = await asyncio.to_thread(server.tokex, "admin", "create-admin", "--name", "bench-admin")
        url = await asyncio.to_thread(server.start)
        token, issuer, provider_id = await set_up(url, admin, f"http://127.0.0.1:{port}/v1")
        assert server.process is not None
        processes = {"server": [psutil.Process(server.process.pid)], "postgres": server.postgres(),
                     "provider": [psutil.Process(provider.pid)], "load generator": [psutil.Process()]}
        if args.database_url:
            processes.pop("postgres")
        cpu_before = cpu_seconds(processes)
        calls, seconds = await load(url, token, args)
        cpu = cpu_seconds(processes) - cpu_before
        own = await provider_times(issuer, provider_id, set(calls.latency))
        await issuer.aclose()
    finally:
        provider.terminate()
        provider.wait(10)
        status = await asyncio.to_thread(server.stop)
        if status != 0:
            print(f"the server exited with status {status}:\n" + "".join(server.output[-20:]))
    totals = list(calls.latency.values())
    added = [calls.latency[r] - own[r] for r in calls.latency if r in own]
    print(f"inference gateway: {args.rate:g} calls/s offered for {args.duration:g} s over up to {args.connections} "
          f"connections, a fast simulated provider")
    print(f"  answered: {len(totals) / seconds:,.0f} calls/s ({len(totals)} of {calls.started} started)")
    if totals:
        print(f"  latency: p50 {statistics.median(totals) * 1000:.2f} ms, p99 {percentile(totals, 0.99) * 1000:.2f} ms")
    if added:
        print(f"  tokex adds: p50 {statistics.median(added) * 1000:.2f} ms, "
              f"p99 {percentile(added, 0.99) * 1000:.2f} ms, max {max(added) * 1000:.2f} ms "
              "(latency less the provider's own time)")
    if calls.errors:
        print(f"  errors: {calls.errors}")
    if calls.started:
        print("  CPU per call (warm-up included): " + ", ".join(
            f"{name} {used / calls.started * (args.duration / (args.duration + args.warmup)) * 1e6:,.0f} us"
            for name, used in cpu.items()))


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
