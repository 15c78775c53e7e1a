"""The `tokex` command: admin actions on a database, `serve` stopping gracefully, `demo` keeping a market alive.

`serve` and `demo` run as real subprocesses (`python -m api.cli`), stopped with SIGTERM as a supervisor would.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.cli import main
from api.client import Client
from exchange import invariants
from exchange.database import Database
from exchange.database.embedded import EmbeddedPostgres
from exchange.sequencer import WRITER_LOCK
from tests.support.api_server import unique

MASTER_KEY = "ab" * 32


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The environment of a `tokex` run: no DATABASE_URL, a fixed master key, TOKEX_HOME in tmp_path."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("TOKEX_MASTER_KEY", MASTER_KEY)
    monkeypatch.setenv("TOKEX_HOME", str(tmp_path / "home"))
    return dict(os.environ)


def tokex(capsys: pytest.CaptureFixture, *argv: str) -> dict | list:
    """Run `tokex argv...` in process; return its JSON answer."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_admin_creates_accounts_keys_cash_instruments_and_issuers(migrated_database_url, cli_env, capsys):
    db = ["--database-url", migrated_database_url]
    admin = tokex(capsys, "admin", *db, "create-admin")
    assert admin["key_id"].startswith("tk_") and len(admin["secret"]) == 64
    again = tokex(capsys, "admin", *db, "create-admin")
    assert again["account_id"] == admin["account_id"] and again["key_id"] != admin["key_id"]

    seller = tokex(capsys, "admin", *db, "create-account", "steel-lab", "--role", "issuer", "--key")
    assert seller["account"]["role"] == "issuer" and seller["key"]["scopes"] == ["read", "trade", "issue"]
    buyer = tokex(capsys, "admin", *db, "create-account", "buyer-1")
    assert buyer["role"] == "trader"
    key = tokex(capsys, "admin", *db, "create-key", str(buyer["id"]), "--scopes", "read,trade", "--label", "bot")
    assert key["account_id"] == buyer["id"] and key["label"] == "bot" and key["secret"]
    assert tokex(capsys, "admin", *db, "deposit", str(buyer["id"]), "250.5")["amount"] == "250.5"
    assert tokex(capsys, "admin", *db, "withdraw", str(buyer["id"]), "0.5")["amount"] == "-0.5"

    compute = tokex(capsys, "admin", *db, "list-compute", "DEEPSEEK-V3", "--model", "deepseek-v3", "--group",
                    "chat-general", "--quality", "90")
    assert compute["tokens_per_lot"] == 1_000_000 and compute["tick"] == "0.01"
    dataset = tokex(capsys, "admin", *db, "list-dataset", "DS-STEEL-QC", "--issuer", str(seller["account"]["id"]),
                    "--description", "Steel strip inspections", "--license", "internal use",
                    "--grants", "1,000 records", "--supply-cap", "5000", "--tick", "0.5")
    assert dataset["issuer_id"] == seller["account"]["id"] and dataset["tick"] == "0.5"
    approval = tokex(capsys, "admin", *db, "approve-issuer", str(seller["account"]["id"]), "DEEPSEEK-V3", "800")
    assert approval["capacity"] == 800 and approval["issued"] == 0
    assert tokex(capsys, "admin", *db, "halt", "DEEPSEEK-V3")["status"] == "halted"
    assert tokex(capsys, "admin", *db, "resume", "DEEPSEEK-V3")["status"] == "trading"
    assert [i["symbol"] for i in tokex(capsys, "admin", *db, "instruments")] == ["DEEPSEEK-V3", "DS-STEEL-QC"]

    # A refusal is the API's problem, on stderr, with status 1; nothing is rounded.
    assert main(["admin", *db, "deposit", str(buyer["id"]), "1.0000001"]) == 1
    assert "422 too_precise" in capsys.readouterr().err

    assert query(migrated_database_url, "SELECT available FROM balance WHERE account_id = $1 AND asset = 'CNY'",
                 buyer["id"])[0]["available"] == 250_000_000
    # Each command's own key is revoked after it: only the keys asked for stay usable.
    live = {row["id"] for row in query(migrated_database_url, "SELECT id FROM api_key WHERE revoked_at IS NULL")}
    assert live == {admin["key_id"], again["key_id"], seller["key"]["id"], key["id"]}
    assert main(["check", *db]) == 0


def test_admin_refuses_a_database_that_a_server_writes_to(migrated_database_url, cli_env, capsys):
    async def attempt() -> None:
        # A running server's sequencer holds the writer lock for as long as it runs.
        writer = await asyncpg.connect(migrated_database_url)
        try:
            await writer.execute("SELECT pg_advisory_lock($1)", WRITER_LOCK)
            status = await asyncio.to_thread(main, ["admin", "--database-url", migrated_database_url,
                                                    "create-account", "x"])
            assert status == 1
        finally:
            await writer.close()

    asyncio.run(attempt())
    err = capsys.readouterr().err
    assert "only one writer" in err and "--server" in err
    assert query(migrated_database_url, "SELECT count(*) FROM account WHERE name = 'x'")[0][0] == 0


class Tokex:
    """A `tokex` subprocess whose output lines are collected on a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "api.cli", *argv], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.output)}")

    def stop(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the exit; collect the rest of the output; return the exit status."""
        status = self.process.wait(timeout)
        self.reader.join(timeout)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return status

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def running(argv: list[str], env: dict[str, str]) -> Iterator[Tokex]:
    process = Tokex(argv, env)
    try:
        yield process
    finally:
        process.kill()


@pytest.mark.slow  # a drill: SIGTERM to a serving process under requests
def test_serve_answers_then_stops_on_sigterm_answering_every_request_it_read(reachable_home, cli_env, capsys,
                                                                            monkeypatch):
    monkeypatch.setenv("TOKEX_HOME", str(reachable_home))
    env = {**cli_env, "TOKEX_HOME": str(reachable_home)}
    admin = tokex(capsys, "admin", "create-admin")
    symbol = unique("T").upper()

    with running(["serve", "--port", "0", "--no-rate-limit"], env) as server:
        url = server.wait_for(r"serving on (http://\S+)").group(1)
        outcomes, signalled_at = asyncio.run(load_until_stopped(url, admin, symbol, server))
        status = server.finish()
    output = "".join(server.output)
    assert status == 0, output
    assert "tokex: stopped" in output
    assert EmbeddedPostgres(reachable_home).running_postmasters() == []

    answered = {coid: code for coid, code, _ in outcomes if code is not None}
    unanswered = {coid for coid, code, _ in outcomes if code is None}
    assert set(answered.values()) <= {201, 503}, answered
    assert any(at > signalled_at for _, code, at in outcomes if code == 201), "nothing was in flight at SIGTERM"
    assert unanswered, "the load should have run into the closed server"

    async def stored() -> tuple[set[str], list[str]]:
        async with Database(home=reachable_home) as database:
            conn = await asyncpg.connect(database.dsn)
            try:
                rows = await conn.fetch("SELECT client_order_id FROM book_order WHERE client_order_id IS NOT NULL")
                return {row[0] for row in rows}, await invariants.problems(conn)
            finally:
                await conn.close()

    in_database, problems = asyncio.run(stored())
    assert problems == []
    # Acknowledged means committed; and nothing was committed without its answer reaching the client.
    assert {coid for coid, code in answered.items() if code == 201} == in_database
    assert not (unanswered & in_database)


async def load_until_stopped(url: str, admin: dict, symbol: str, server: Tokex
                             ) -> tuple[list[tuple[str, int | None, float]], float]:
    """Place orders from 16 connections; SIGTERM the server half-way; go on until no connection gets through."""
    async with Client(url, admin["key_id"], admin["secret"]) as boss:
        await boss.create_instrument(kind="compute", symbol=symbol, tick="0.01", model="m",
                                     substitution_group="chat-general", quality=80, tokens_per_lot=1_000_000)
        account = await boss.create_account(unique("issuer"), "issuer")
        await boss.approve_issuer(account["id"], symbol, 1_000_000)
        await boss.deposit(account["id"], "1000000")
        key = await boss.create_key(account["id"], ["read", "trade", "issue"])
    trader = Client(url, key["id"], key["secret"])
    await trader.mint(symbol, 1_000_000)
    await trader.aclose()

    outcomes: list[tuple[str, int | None, float]] = []
    signalled_at = float("inf")

    async def worker(number: int) -> None:
        async with Client(url, key["id"], key["secret"]) as client:
            for n in range(100_000):
                coid = f"w{number}-{n}"
                side, price = ("buy", "1.00") if n % 2 else ("sell", "1.01")
                try:
                    response = await client.request("POST", "/v1/orders", json={
                        "symbol": symbol, "side": side, "type": "limit", "price": price, "qty": 1 + n % 5,
                        "client_order_id": coid})
                except httpx.TransportError:
                    outcomes.append((coid, None, time.monotonic()))
                    if time.monotonic() > signalled_at:
                        return
                    continue
                outcomes.append((coid, response.status_code, time.monotonic()))

    workers = [asyncio.create_task(worker(n)) for n in range(16)]
    while sum(1 for _, code, _ in outcomes if code == 201) < 200:
        await asyncio.sleep(0.01)
    signalled_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*workers), 60)
    return outcomes, signalled_at


@pytest.mark.slow  # runs the demo, a server process with its flow, for seconds
def test_demo_seeds_a_market_that_trades(postgres_admin_url, migrated_database_url, cli_env):
    argv = ["demo", "--port", "0", "--database-url", migrated_database_url, "--flow-rate", "25", "--seed", "7"]
    with running(argv, cli_env) as demo:
        url = demo.wait_for(r"a live market on (http://\S+)").group(1)
        demo.wait_for(r"demo-buyer \(account \d+\)")
        key, secret = demo.wait_for(r"export TOKEX_KEY=(\S+) TOKEX_SECRET=(\S+)").groups()
        demo.wait_for(r"try: curl")
        asyncio.run(watch_the_market(url, key, secret))
        assert demo.stop() == 0, "".join(demo.output)
    assert main(["check", "--database-url", migrated_database_url]) == 0


async def watch_the_market(url: str, key: str, secret: str) -> None:
    async with Client(url) as public, Client(url, key, secret) as buyer:
        symbols = [item["symbol"] for item in await public.instruments()]
        assert symbols == ["DEEPSEEK-V3", "DS-MACHINE-MAINT", "DS-STEEL-QC", "GLM-4.5", "XINGCHEN"]
        for symbol in symbols:
            book = await public.book(symbol)
            assert book["bids"] and book["asks"], book
            assert (await public.ticker(symbol))["last_price"] is not None
        for symbol in ("DS-MACHINE-MAINT", "DS-STEEL-QC"):
            assert (await public.terms(symbol))["downloads_per_token"] == 10
            assert [f["name"] for f in await public.dataset_files(symbol)] == ["sample.csv"]
        deepseek = await public.instrument("DEEPSEEK-V3")
        assert deepseek["substitution_group"] == "chat-general" and deepseek["tokens_per_lot"] == 1_000_000
        best_ask = float((await public.ticker("DEEPSEEK-V3"))["best_ask"])
        assert 1.0 <= best_ask <= 2.6  # CNY per 1M tokens, where telecom packages put it

        async def volume() -> int:
            return sum([(await public.ticker(symbol))["volume_24h"] for symbol in symbols])

        before = await volume()
        deadline = time.monotonic() + 20
        while await volume() == before:
            assert time.monotonic() < deadline, "no trade in 20 s of simulated flow"
            await asyncio.sleep(0.5)  # public reads are rate-limited per address

        [subscription] = await buyer.subscriptions()
        assert (subscription["symbol"], subscription["period"], subscription["quota"]["granted"]) == \
            ("DEEPSEEK-V3", "month", 10_000_000)
        # 10,000 CNY, less the lots bought to redeem and the subscription's first month
        assert Decimal((await buyer.balances())["CNY"]["available"]) <= 10_000 - Decimal("9.90")
        bid = await buyer.place_order("GLM-4.5", "buy", price="1.20", qty=10)
        assert bid["status"] == "open"
