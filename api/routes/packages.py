"""Token packages of the key's own account: standing plans that place a routed buy every period.

A package buys ``qty`` lots of ``group`` every day, week or month from ``start_at`` (``exchange.packages``), by
``mode``, at most ``max_cost`` CNY per period (fees included) and, when given, at most ``price`` per lot. The
exchange's scheduler runs each period once, also after a restart. Each run is an execution: the routed order it
placed (``GET /v1/routed-orders/{id}``), or the reason it placed none (``insufficient_funds``...). The ``user``
channel of the feed reports executions on the group's instruments the account subscribes to.
"""

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints, money
from api.problems import Problem
from api.units import from_micro
from exchange import packages as plans
from exchange import records, routed_orders
from exchange.commands import CreatePackage, Done, ExecutionView, SetPackageStatus
from exchange.database.queries import sql
from exchange.scheduler import ExecutionListener
from exchange.sequencer import Sequencer

packages = Endpoints("packages")

PACKAGE_ID = {"package_id": (schemas.Id, "unknown_package")}
Time = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a time zone, e.g. 2026-12-01T09:00:00Z.")]

PACKAGE = sql("package_of_account")
PACKAGES = sql("packages_of_account")
EXECUTIONS = sql("package_executions")


class NewPackage(schemas.Request):
    group: schemas.Text
    qty: schemas.Qty
    mode: schemas.Mode
    period: schemas.Period
    max_cost: Annotated[schemas.Decimal, Meta(description="The most one period's routed order may cost, fees "
                                                          "included.")]
    start_at: Time
    price: schemas.Decimal | None = None
    """A limit per lot, on every book."""
    client_request_id: schemas.ClientRequestId | None = None
    """Unique per account among packages: sending it again returns the package it made the first time."""


class Package(Struct):
    id: int
    group: str
    qty: int
    mode: schemas.Mode
    period: schemas.Period
    max_cost: str
    price: str | None
    start_at: datetime
    status: Literal["active", "paused", "cancelled"]
    next_period: Annotated[int, Meta(description="The number of the next period to run (0 starts at start_at).")]
    next_run_at: Annotated[datetime | None, Meta(description="When that period starts; null unless active.")]
    created_at: datetime
    updated_at: datetime


class PackageList(Struct):
    items: list[Package]


class ExecutionPage(Struct):
    items: list[schemas.Execution]
    next_cursor: str | None


def package_from(package: records.Package) -> Package:
    return Package(
        package.id, package.substitution_group, package.qty, package.mode, package.period,
        from_micro(package.max_cost), schemas.optional_price(package.price), package.start_at, package.status,
        package.next_period,
        plans.period_start(package.start_at, package.period, package.next_period) if package.status == "active"
        else None,
        package.created_at, package.updated_at,
    )


def execution_from(package: records.Package, view: ExecutionView) -> schemas.Execution:
    routed = view.routed
    qty, notional, fee, quality = (0, 0, 0, 0) if routed is None else \
        (routed.filled_qty, routed.filled_notional, routed.fee, routed.quality_lots)
    return schemas.Execution(package.id, view.period, plans.period_start(package.start_at, package.period, view.period),
                     view.routed_order_id, view.reason, qty, from_micro(notional), schemas.average_price(notional, qty),
                     schemas.average_quality(quality, qty), from_micro(fee), view.created_at)


def reporter(sequencer: Sequencer, report) -> ExecutionListener:
    """The scheduler's listener: ``report(account_id, symbols of the package's group, execution)``."""

    def listener(account_id: int, view: ExecutionView) -> None:
        engine = sequencer.engine
        package = engine.packages[view.package_id]
        symbols = sorted(i.symbol for i in routed_orders.members(engine, package.substitution_group))
        report(account_id, symbols, execution_from(package, view))

    return listener


async def fetch_package(call: Call, package_id: int) -> Package:
    async with call.services.connection() as conn:
        row = await conn.fetchrow(PACKAGE, package_id, call.account_id)
    if row is None:
        raise Problem("unknown_package", field="package_id")
    return package_from(records.Package(**row))


@packages.route("POST", "/v1/packages", summary="Create a package", scope="trade", body=NewPackage,
                response=Package, status=201,
                errors=("unknown_group", "not_permitted", "invalid_route_mode", "invalid_period", "invalid_max_cost",
                        "invalid_start", "invalid_qty", "invalid_price", "too_precise", "invalid_decimal",
                        "out_of_range"))
async def create_package(call: Call) -> Package:
    """Start a standing plan. Periods already over at creation are skipped; the one under way runs at once.
    Sending a ``client_request_id`` again returns the package it made the first time and changes nothing."""
    body: NewPackage = call.body
    price = None if body.price is None else money(body.price, "price", schemas.MAX_PRICE)
    result = await call.submit(CreatePackage(call.account_id, body.group, body.qty, body.mode, body.period,
                                             money(body.max_cost, "max_cost", schemas.MAX_AMOUNT), body.start_at, price,
                                             body.client_request_id))
    if isinstance(result, Done):  # a repeated client_request_id
        return await fetch_package(call, result.id)
    assert isinstance(result, records.Package)
    call.services.wake_scheduler()
    return package_from(result)


@packages.route("GET", "/v1/packages", summary="List own packages", scope="read", response=PackageList)
async def list_packages(call: Call) -> PackageList:
    """Every package of the account, newest first, cancelled ones included."""
    async with call.services.read_connection() as conn:
        rows = await conn.fetch(PACKAGES, call.account_id)
    return PackageList([package_from(records.Package(**row)) for row in rows])


@packages.route("GET", "/v1/packages/{package_id}", summary="Get a package", scope="read", response=Package,
                errors=("unknown_package",), params=PACKAGE_ID)
async def get_package(call: Call) -> Package:
    """One own package."""
    return await fetch_package(call, call.params["package_id"])


async def change(call: Call, status: str) -> Package:
    result = await call.submit(SetPackageStatus(call.account_id, call.params["package_id"], status))
    assert isinstance(result, records.Package)
    call.services.wake_scheduler()
    return package_from(result)


@packages.route("POST", "/v1/packages/{package_id}/pause", summary="Pause a package", scope="trade",
                response=Package, errors=("unknown_package", "package_cancelled"), params=PACKAGE_ID)
async def pause_package(call: Call) -> Package:
    """Run no period until resumed; pausing a paused package changes nothing."""
    return await change(call, "paused")


@packages.route("POST", "/v1/packages/{package_id}/resume", summary="Resume a package", scope="trade",
                response=Package, errors=("unknown_package", "package_cancelled"), params=PACKAGE_ID)
async def resume_package(call: Call) -> Package:
    """Run again from the period under way (the periods paused over are skipped)."""
    return await change(call, "active")


@packages.route("POST", "/v1/packages/{package_id}/cancel", summary="Cancel a package", scope="trade",
                response=Package, errors=("unknown_package", "package_cancelled"), params=PACKAGE_ID)
async def cancel_package(call: Call) -> Package:
    """End the package for good; its executions stay listed."""
    return await change(call, "cancelled")


@packages.route("GET", "/v1/packages/{package_id}/executions", summary="List a package's executions",
                scope="read", query=schemas.PeriodPageQuery, response=ExecutionPage,
                errors=("unknown_package",), params=PACKAGE_ID)
async def list_executions(call: Call) -> ExecutionPage:
    """The periods run, newest first, with what each bought."""
    package_id = call.params["package_id"]
    async with call.services.read_connection() as conn:
        row = await conn.fetchrow(PACKAGE, package_id, call.account_id)
        if row is None:
            raise Problem("unknown_package", field="package_id")
        package = records.Package(**row)
        cursor = None if call.query.cursor is None else int(call.query.cursor)
        rows = await conn.fetch(EXECUTIONS, package_id, cursor, call.query.limit + 1)
    items = []
    for r in rows[: call.query.limit]:
        qty, notional, fee = r["filled_qty"] or 0, r["filled_notional"] or 0, r["fee"] or 0
        items.append(schemas.Execution(
            package_id, r["period"], plans.period_start(package.start_at, package.period, r["period"]),
            r["routed_order_id"], r["reason"], qty, from_micro(notional), schemas.average_price(notional, qty),
            schemas.average_quality(r["quality_lots"] or 0, qty), from_micro(fee), r["created_at"],
        ))
    return ExecutionPage(items, str(items[-1].period) if len(rows) > call.query.limit else None)
