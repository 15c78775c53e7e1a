"""Token packages: standing plans that buy lots of a substitution group every day, week or month.

A package is the routed buy order ``RouteOrder(group, qty, mode, price, budget=max_cost)`` repeated each
period. Period ``n`` starts ``n`` days or weeks after ``start_at``, or ``n`` calendar months after it (on the same
day of the month, or the month's last day when it is shorter). ``next_period`` is the number of the next period
to run; ``RunPackage`` runs exactly that period, once, and only once it has started.

Running a period
----------------
The run, its routed order and the ``package_execution`` row (unique by package and period) are one engine
command and so commit together: a crash either loses the whole run (it runs again after recovery) or none of
it (the period is done and ``next_period`` says so). A routed order the engine refuses (``insufficient_funds``,
say) still completes the period, recorded with that reason: the plan then waits for its next period instead of
retrying without end.

Pausing
-------
A paused or cancelled package runs nothing. Creating or resuming a package skips the periods already over:
``next_period`` becomes at least the period under way, which then runs (if it had not already).
"""

import calendar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from exchange import route_planner, routed_orders
from exchange.checks import trading_account
from exchange.commands import (
    CreatePackage,
    ExecutionView,
    Rejection,
    RouteOrder,
    RunPackage,
    SetPackageStatus,
)
from exchange.records import Package, RoutedOrder
from matching.types import BUY

if TYPE_CHECKING:
    from exchange.engine import Engine

PERIODS = ("day", "week", "month")
STATUSES = ("active", "paused", "cancelled")
MAX_PERIOD = 2**31 - 1
"""Period numbers are PostgreSQL integers."""


def period_start(start_at: datetime, period: str, n: int) -> datetime:
    """When period ``n`` of a package starting at ``start_at`` begins."""
    if period == "day":
        return start_at + timedelta(days=n)
    if period == "week":
        return start_at + timedelta(weeks=n)
    months = start_at.month - 1 + n
    year, month = start_at.year + months // 12, months % 12 + 1
    return start_at.replace(year=year, month=month, day=min(start_at.day, calendar.monthrange(year, month)[1]))


def period_at(start_at: datetime, period: str, at: datetime) -> int:
    """The number of the period under way at ``at``; -1 before ``start_at``."""
    if at < start_at:
        return -1
    if period in ("day", "week"):
        return (at - start_at) // timedelta(days=1 if period == "day" else 7)
    n = (at.year - start_at.year) * 12 + at.month - start_at.month
    while n > 0 and period_start(start_at, period, n) > at:
        n -= 1
    return n


def snapshot(package: Package) -> Package:
    """A copy of ``package`` as it stands, for a command's result: later commands of the batch change the record."""
    return msgspec.structs.replace(package)


def create(engine: "Engine", cmd: CreatePackage, at: datetime) -> Package | str:
    """Start a package for a trading account; a refusal is its code."""
    code = route_planner.refusal([], BUY, cmd.qty, cmd.mode, cmd.price, cmd.max_cost, False)
    if code is not None:
        return "invalid_max_cost" if code == "invalid_route_budget" else code
    if type(cmd.group) is not str or not routed_orders.members(engine, cmd.group):
        return "unknown_group"
    if cmd.period not in PERIODS:
        return "invalid_period"
    start = cmd.start_at
    # Far enough from datetime's year 9999 that period arithmetic never overflows.
    if type(start) is not datetime or start.tzinfo is None or start.year > 9000:
        return "invalid_start"
    package = Package(engine.ids.package, cmd.account_id, cmd.group, cmd.qty, cmd.mode, cmd.period, cmd.max_cost,
                      cmd.price, start, "active", max(0, period_at(start, cmd.period, at)), at, at)
    if package.next_period > MAX_PERIOD:
        return "invalid_start"
    engine.ids.package += 1
    engine.packages[package.id] = package
    engine.settlement.effects.packages[package.id] = package
    return snapshot(package)


def set_status(engine: "Engine", cmd: SetPackageStatus, at: datetime) -> Package | str:
    """Pause, resume or cancel one package of the account."""
    package = engine.packages.get(cmd.package_id)
    if package is None or package.account_id != cmd.account_id:
        return "unknown_package"
    if cmd.status not in STATUSES:
        return "invalid_package_status"
    if package.status == "cancelled":
        return "package_cancelled"
    if cmd.status == package.status:
        return snapshot(package)
    if cmd.status == "active":
        package.next_period = max(package.next_period, period_at(package.start_at, package.period, at))
    package.status = cmd.status
    package.updated_at = at
    engine.settlement.effects.packages[package.id] = package
    return snapshot(package)


def run(engine: "Engine", cmd: RunPackage, ts: int, at: datetime) -> ExecutionView | str:
    """Run one due period of an active package, once."""
    package = engine.packages.get(cmd.package_id)
    if package is None:
        return "unknown_package"
    if package.status != "active":
        return "package_not_active"
    if cmd.period != package.next_period or period_start(package.start_at, package.period, cmd.period) > at:
        return "period_not_due"
    route = RouteOrder(package.account_id, package.substitution_group, BUY, package.qty, package.mode,
                       package.price, package.max_cost)
    account = trading_account(engine.accounts, package.account_id)
    if isinstance(account, Rejection):
        outcome: RoutedOrder | str = account.code
    else:
        outcome = routed_orders.execute(engine, package.account_id, route, package.id, ts, at)
    package.next_period += 1
    package.updated_at = at
    engine.settlement.effects.packages[package.id] = package
    if isinstance(outcome, str):
        engine.settlement.effects.executions.append((package.id, cmd.period, None, outcome, at))
        return ExecutionView(package.id, cmd.period, None, outcome, at)
    engine.settlement.effects.executions.append((package.id, cmd.period, outcome.id, None, at))
    return ExecutionView(package.id, cmd.period, outcome.id, None, at, outcome)


def due(package: Package, at: datetime) -> bool:
    """Whether ``package`` has a period to run at ``at``."""
    return package.status == "active" and period_start(package.start_at, package.period, package.next_period) <= at
