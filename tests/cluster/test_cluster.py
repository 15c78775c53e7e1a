"""``tokex cluster`` as users run it: a real embedded NATS, PostgreSQL, two engines and two gateways as processes.

One drill, in order: orders through the gateways sharing one port; a SIGKILL of the leading engine under a flow of
orders, after which the standby leads and every acknowledged order is there exactly once; a SIGKILL of a gateway,
after which the other serves alone; then no engine at all, which is a 503 with Retry-After, never a success; and a
SIGTERM that stops what is left with status 0. ``tokex check``'s invariants hold at the end. Then (slow) a leader
stopped by SIGTERM under a flow of orders: it answers what it took and the standby takes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.bootstrap import create_admin
from api.client import ApiError, Client
from exchange import invariants
from exchange.broker.embedded import EmbeddedNats
from exchange.database.migrations import migrate
from tests.support.databases import reachable_temp_home

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START_SECONDS = 60.0
SYMBOL = "CLUSTER-1"


@dataclass
class Cluster:
    process: subprocess.Popen
    home: Path
    url: str
    dsn: str
    admin: tuple[str, str] = ("", "")
    output: list[str] = field(default_factory=list)

    def pid(self, name: str) -> int:
        return int((self.home / "run" / f"{name}.pid").read_text())

    def kill(self, name: str) -> int:
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        return pid


@pytest.fixture
def cluster(fresh_database_url: str) -> Iterator[Cluster]:
    home = reachable_temp_home("tokex-cluster-")
    master_key = secrets.token_bytes(32)
    dsn = fresh_database_url
    admin = asyncio.run(_first_admin(dsn, master_key))
    env = {**os.environ, "TOKEX_HOME": str(home), "TOKEX_NATS_PORT": "0", "DATABASE_URL": dsn,
           "TOKEX_MASTER_KEY": master_key.hex(),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("NATS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "cluster", "--port", "0", "--gateways", "2", "--standby",
         "--no-rate-limit"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        output: list[str] = []
        url = _serving_url(process, output)
        yield Cluster(process, home, url, dsn, admin, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in EmbeddedNats(home).running_servers():
            os.kill(pid, signal.SIGKILL)
        _kill_children(home)
        shutil.rmtree(home, ignore_errors=True)


async def _first_admin(dsn: str, master_key: bytes) -> tuple[str, str]:
    await migrate(dsn)
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        _, key_id, secret = await create_admin(pool, master_key=master_key)
    return key_id, secret


def _serving_url(process: subprocess.Popen, lines: list[str]) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"tokex cluster: serving on (http://\S+)", line)
        if found:
            # Keep reading, so that no process of the cluster blocks on a full pipe.
            threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
            return found.group(1)
    raise AssertionError("the cluster did not start:\n" + "".join(lines[-40:]))


def _kill_children(home: Path) -> None:
    for pid_file in (home / "run").glob("*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


async def _until_healthy(url: str, leader_not: int | None = None, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            try:
                response = await http.get(f"{url}/v1/health")
                if response.status_code == 200 and response.json()["leader"]["pid"] != leader_not:
                    return response.json()
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "no healthy gateway with a new leader"
            await asyncio.sleep(0.1)


async def _market(cluster: Cluster) -> tuple[Client, list[Client]]:
    admin = Client(cluster.url, *cluster.admin)
    seller = await admin.create_account("seller", "issuer")
    await admin.create_instrument(kind="compute", symbol=SYMBOL, tick="0.01", model="test-model",
                                  substitution_group="chat-general", quality=80, tokens_per_lot=1_000_000)
    await admin.approve_issuer(seller["id"], SYMBOL, 1_000_000)
    key = await admin.create_key(seller["id"], ["read", "trade", "issue"])
    issuer = admin.with_key(key["id"], key["secret"])
    await issuer.mint(SYMBOL, 100_000)
    traders = []
    for n in range(4):
        account = await admin.create_account(f"trader-{n}", "trader")
        await admin.deposit(account["id"], "100000")
        trader_key = await admin.create_key(account["id"], ["read", "trade"])
        traders.append(Client(cluster.url, trader_key["id"], trader_key["secret"]))
    await admin.aclose()
    return issuer, traders


async def test_failover_and_a_lost_gateway_lose_nothing_and_apply_nothing_twice(cluster: Cluster):
    health = await _until_healthy(cluster.url)
    first_leader = health["leader"]["pid"]
    assert first_leader == cluster.pid("engine-1")
    issuer, traders = await _market(cluster)
    acknowledged: dict[str, int] = {}
    refused = 0
    stop = asyncio.Event()

    async def flow(client: Client, name: str) -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            n += 1
            client_order_id = f"{name}-{n}"
            try:
                order = await client.place_order(SYMBOL, "buy", price="1.00", qty=1, client_order_id=client_order_id)
            except ApiError as exc:
                assert exc.status == 503 and exc.code == "unavailable", exc
                refused += 1
                continue
            acknowledged[client_order_id] = order["id"]

    workers = [asyncio.create_task(flow(trader, f"t{n}")) for n, trader in enumerate(traders)]
    await asyncio.sleep(1.0)
    killed_at = time.monotonic()
    cluster.kill("engine-1")
    health = await _until_healthy(cluster.url, leader_not=first_leader)
    assert health["leader"]["pid"] == cluster.pid("engine-2")
    before = len(acknowledged)
    while len(acknowledged) < before + 20:
        assert time.monotonic() - killed_at < 15, "no command committed after the failover"
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*workers)
    assert refused == 0  # the gateways waited out the failover

    # A gateway dies; the other serves alone (each request on a new connection, so the kernel picks a live one).
    cluster.kill("gateway-1")
    for n in range(10):
        async with Client(cluster.url, *cluster.admin) as admin:
            assert (await admin.call("GET", "/v1/health"))["ready"] is True
            order = await issuer.place_order(SYMBOL, "sell", price="9.00", qty=1, client_order_id=f"after-{n}")
            acknowledged[f"issuer-after-{n}"] = order["id"]

    async with asyncpg.create_pool(cluster.dsn, min_size=1, max_size=2) as pool, pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, client_order_id FROM book_order WHERE client_order_id IS NOT NULL")
    committed = sorted(row["id"] for row in rows)
    # Every order sent was answered (none refused), so the committed ones are exactly the acknowledged ones, once.
    assert committed == sorted(acknowledged.values())

    # No engine at all: a command is refused with 503 and Retry-After, after the gateway's deadline.
    cluster.kill("engine-2")
    await asyncio.sleep(3.5)  # the heartbeat goes stale
    async with Client(cluster.url, *cluster.admin) as admin:
        assert (await admin.request("GET", "/v1/health")).status_code == 503
    response = await traders[0].request("POST", "/v1/orders", json={"symbol": SYMBOL, "side": "buy", "type": "limit",
                                                                    "price": "1.00", "qty": 1})
    assert response.status_code == 503 and "Retry-After" in response.headers
    for client in (issuer, *traders):
        await client.aclose()

    cluster.process.send_signal(signal.SIGTERM)
    assert cluster.process.wait(60) == 0
    assert not list((cluster.home / "run").glob("*.pid"))
    async with asyncpg.create_pool(cluster.dsn, min_size=1, max_size=2) as pool, pool.acquire() as conn:
        assert await invariants.problems(conn) == []


@pytest.mark.slow
async def test_a_leader_stopped_by_sigterm_answers_what_it_took_and_hands_over(cluster: Cluster):
    await _until_healthy(cluster.url)
    issuer, traders = await _market(cluster)
    acknowledged: list[int] = []
    stop = asyncio.Event()

    async def flow(client: Client, name: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            order = await client.place_order(SYMBOL, "buy", price="1.00", qty=1, client_order_id=f"{name}-{n}")
            acknowledged.append(order["id"])

    workers = [asyncio.create_task(flow(trader, f"t{n}")) for n, trader in enumerate(traders)]
    await asyncio.sleep(1.0)
    leader = cluster.pid("engine-1")
    os.kill(leader, signal.SIGTERM)
    await _until_healthy(cluster.url, leader_not=leader)
    before = len(acknowledged)
    while len(acknowledged) < before + 20:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*workers)  # no 503 (it would raise): every command was answered
    deadline = time.monotonic() + 15
    while not any(f"engine-1 (pid {leader}) exited with status 0" in line for line in cluster.output):
        assert time.monotonic() < deadline, "".join(cluster.output[-30:])
        await asyncio.sleep(0.1)
    async with asyncpg.create_pool(cluster.dsn, min_size=1, max_size=2) as pool, pool.acquire() as conn:
        rows = await conn.fetch("SELECT id FROM book_order WHERE client_order_id IS NOT NULL")
        assert sorted(row["id"] for row in rows) == sorted(acknowledged)
        assert await invariants.problems(conn) == []
    for client in (issuer, *traders):
        await client.aclose()
