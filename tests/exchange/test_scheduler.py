"""Token packages and their scheduler over months of a fake clock, against a real PostgreSQL.

The sequencer and the scheduler share one clock, moved by the test: months of periods run in milliseconds.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from exchange import delivery, invariants, packages
from exchange.commands import (
    ApproveIssuer,
    CreateAccount,
    CreatePackage,
    Deposit,
    ExecutionView,
    ListInstrument,
    Mint,
    PlaceOrder,
    Redeem,
    RegisterProvider,
    Rejection,
    Reserve,
    RunPackage,
    SetPackageStatus,
)
from exchange.records import Package
from exchange.rejections import MESSAGES
from exchange.scheduler import Scheduler
from exchange.sequencer import EPOCH, Sequencer

START = datetime(2027, 1, 31, 9, 0, tzinfo=UTC)
GROUP = "chat-general"
PRICE = 1_000_000


class FakeClock:
    """Microseconds since the epoch, as the sequencer wants them, moved by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> int:
        return (self.at - EPOCH) // timedelta(microseconds=1)

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


class Plans:
    """A sequencer on the fake clock, a group with deep asks, a buyer with cash, and the buyer's packages."""

    def __init__(self, pool: asyncpg.Pool, clock: FakeClock) -> None:
        self.pool = pool
        self.clock = clock
        self.exchange: Sequencer | None = None
        self.scheduler: Scheduler | None = None
        self.buyer = 0
        self.reported: list[tuple[int, ExecutionView]] = []

    async def open(self) -> None:
        self.exchange = await Sequencer.open(self.pool, clock=self.clock)
        self.scheduler = Scheduler(self.exchange, listener=lambda account, e: self.reported.append((account, e)))

    async def close(self) -> None:
        assert self.exchange is not None
        await self.exchange.stop()
        async with self.pool.acquire() as conn:
            assert await invariants.problems(conn, self.exchange.engine) == []

    async def ok(self, command):
        assert self.exchange is not None
        result = await self.exchange.submit(command)
        assert not isinstance(result, Rejection), (command, result)
        return result

    async def setup(self) -> None:
        issuer = (await self.ok(CreateAccount("issuer", "issuer"))).id
        self.buyer = (await self.ok(CreateAccount("buyer", "trader"))).id
        await self.ok(Deposit(self.buyer, 10**12))
        for symbol, quality in (("HIGH", 90), ("LOW", 40)):
            await self.ok(ListInstrument(symbol, "compute", tick=10_000, model=symbol.lower(),
                                         substitution_group=GROUP, quality=quality, tokens_per_lot=1_000_000))
            await self.ok(ApproveIssuer(issuer, symbol, 100_000))
            await self.ok(Mint(issuer, symbol, 10_000))
            await self.ok(PlaceOrder(issuer, symbol, "sell", price=PRICE if symbol == "LOW" else 2 * PRICE,
                                     qty=10_000))

    async def create(self, period: str, qty: int = 2, max_cost: int = 10 * PRICE, mode: str = "cost",
                     start: datetime = START) -> Package:
        return await self.ok(CreatePackage(self.buyer, GROUP, qty, mode, period, max_cost, start))

    async def executions(self, package_id: int) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(
                "SELECT e.period, e.reason, r.filled_qty, r.filled_notional + r.fee AS cost, e.created_at "
                "FROM package_execution e LEFT JOIN routed_order r ON r.id = e.routed_order_id "
                "WHERE e.package_id = $1 ORDER BY e.period", package_id)

    async def run_days(self, days: int) -> int:
        """Move the clock a day at a time, running what is due each day; return how many periods ran."""
        assert self.scheduler is not None
        ran = 0
        for _ in range(days):
            self.clock.advance(days=1)
            ran += len(await self.scheduler.run_due())
        return ran


@pytest.fixture
async def plans(pool: asyncpg.Pool):
    made = Plans(pool, FakeClock(START - timedelta(hours=1)))
    await made.open()
    await made.setup()
    yield made
    await made.close()


async def test_daily_weekly_and_monthly_packages_run_each_period_once_over_months(plans: Plans) -> None:
    daily, weekly, monthly = [await plans.create(period) for period in packages.PERIODS]
    assert await plans.scheduler.run_due() == []  # nothing starts before START
    plans.clock.advance(hours=1)
    assert len(await plans.scheduler.run_due()) == 3  # period 0 of each, at START
    ran = await plans.run_days(120)
    assert ran == 120 + 17 + 4  # days 1..120; weeks 1..17; Feb 28, Mar 31, Apr 30, May 31 2027

    for package, expected in ((daily, 121), (weekly, 18), (monthly, 5)):
        rows = await plans.executions(package.id)
        assert [row["period"] for row in rows] == list(range(expected))
        assert all(row["filled_qty"] == 2 and row["cost"] <= 10 * PRICE for row in rows)
        for row in rows:
            assert row["created_at"] >= packages.period_start(START, package.period, row["period"])
    monthly_runs = [row["created_at"].date().isoformat() for row in await plans.executions(monthly.id)]
    assert monthly_runs == ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    assert len(plans.reported) == 121 + 18 + 5
    assert {account for account, _ in plans.reported} == {plans.buyer}


async def test_the_cost_cap_per_period_is_respected(plans: Plans) -> None:
    capped = await plans.create("day", qty=10, max_cost=3_500_000)
    plans.clock.advance(hours=1)
    await plans.run_days(3)
    rows = await plans.executions(capped.id)
    assert len(rows) == 4
    # LOW at 1 CNY with a 0.2% taker fee: three lots cost 3.006 CNY, a fourth would pass the cap.
    assert all(row["filled_qty"] == 3 and row["cost"] <= 3_500_000 for row in rows)


async def test_a_restart_runs_a_missed_period_once_never_twice(plans: Plans) -> None:
    package = await plans.create("day")
    plans.clock.advance(hours=1)
    await plans.run_days(2)
    assert len(await plans.executions(package.id)) == 3
    await plans.close()

    plans.clock.advance(days=1, hours=2)  # down over the start of period 3
    await plans.open()
    assert [e.period for e in await plans.scheduler.run_due()] == [3]
    assert await plans.scheduler.run_due() == []
    # The same period asked for again, as a scheduler racing a restart would: refused, nothing changes.
    assert await plans.exchange.submit(RunPackage(package.id, 3)) == \
        Rejection("period_not_due", MESSAGES["period_not_due"])
    assert [row["period"] for row in await plans.executions(package.id)] == [0, 1, 2, 3]

    # A batch that would run a period again cannot commit: the execution row's key refuses it.
    async with plans.pool.acquire() as conn:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO package_execution (package_id, period, reason, created_at) "
                               "VALUES ($1, 3, 'again', now())", package.id)


async def test_pause_resume_and_cancel(plans: Plans) -> None:
    package = await plans.create("day")
    plans.clock.advance(hours=1)
    await plans.scheduler.run_due()
    paused = await plans.ok(SetPackageStatus(plans.buyer, package.id, "paused"))
    assert paused.status == "paused"
    assert await plans.run_days(3) == 0

    plans.clock.advance(hours=2)
    resumed = await plans.ok(SetPackageStatus(plans.buyer, package.id, "active"))
    assert resumed.next_period == 3  # the periods paused over are skipped; the one under way runs
    assert [e.period for e in await plans.scheduler.run_due()] == [3]
    assert await plans.run_days(1) == 1

    await plans.ok(SetPackageStatus(plans.buyer, package.id, "cancelled"))
    assert await plans.run_days(2) == 0
    assert await plans.exchange.submit(SetPackageStatus(plans.buyer, package.id, "active")) == \
        Rejection("package_cancelled", MESSAGES["package_cancelled"])
    assert [row["period"] for row in await plans.executions(package.id)] == [0, 3, 4]


@pytest.mark.parametrize(("change", "code"), [
    ({"group": "nothing-here"}, "unknown_group"),
    ({"period": "hour"}, "invalid_period"),
    ({"mode": "cheap"}, "invalid_route_mode"),
    ({"qty": 0}, "invalid_qty"),
    ({"max_cost": 0}, "invalid_max_cost"),
    ({"start_at": datetime(2027, 1, 1)}, "invalid_start"),
])
async def test_a_refused_package_changes_nothing(plans: Plans, change: dict, code: str) -> None:
    fields = {"account_id": plans.buyer, "group": GROUP, "qty": 1, "mode": "cost", "period": "day",
              "max_cost": PRICE, "start_at": START, **change}
    assert await plans.exchange.submit(CreatePackage(**fields)) == Rejection(code, MESSAGES[code])
    assert plans.exchange.engine.packages == {}


def test_monthly_periods_keep_the_day_of_the_month_or_the_months_last() -> None:
    start = datetime(2028, 1, 31, tzinfo=UTC)
    assert [packages.period_start(start, "month", n).date().isoformat() for n in range(4)] == \
        ["2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30"]
    assert packages.period_at(start, "month", datetime(2028, 2, 29, tzinfo=UTC)) == 1
    assert packages.period_at(start, "month", datetime(2028, 2, 28, tzinfo=UTC)) == 0
    assert packages.period_at(start, "week", start - timedelta(seconds=1)) == -1


async def test_the_scheduler_frees_the_reservations_past_their_deadline(plans: Plans) -> None:
    engine = plans.exchange.engine
    issuer = next(account.id for account in engine.accounts.values() if account.role == "issuer")
    await plans.ok(RegisterProvider(issuer, "HIGH", "http://127.0.0.1:9/v1", "high", b""))
    await plans.ok(PlaceOrder(plans.buyer, "HIGH", "buy", price=2 * PRICE, qty=1))
    await plans.ok(Redeem(plans.buyer, "HIGH", 1))
    held = await plans.ok(Reserve(plans.buyer, "HIGH", 5_000))
    plans.scheduler.sweep_seconds = 0.01
    plans.scheduler.start()
    try:
        await asyncio.sleep(0.1)
        assert held.id in engine.quotas.open  # not yet past its deadline
        plans.clock.advance(seconds=delivery.RESERVATION_SECONDS)
        for _ in range(500):
            if held.id not in engine.quotas.open:
                break
            await asyncio.sleep(0.01)
        assert held.id not in engine.quotas.open
        (quota,) = engine.quotas.of(plans.buyer, engine.instruments["HIGH"].id)
        assert (quota.reserved, quota.used, quota.free) == (0, 0, 1_000_000)
    finally:
        await plans.scheduler.stop()
