"""Package executions from the leading engine's scheduler to the feeds of every gateway.

In one process the scheduler reports each committed period of a package straight to the feed's hub
(``api.routes.packages.reporter``). In a cluster the scheduler runs on the leading engine and the account's
``user`` subscriptions sit on the gateways: ``relay(nc)`` is the engine's report, which sends each execution on
``tokex.packages`` (core NATS), and ``follow(nc, report)`` hands each one to a gateway's hub. A report lost while
NATS is away is a notification missed, not state: ``GET /v1/packages/{id}/executions`` has every period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from api.schemas import Execution
from exchange.broker import subjects

Report = Callable[[int, list[str], Execution], None]
"""Called with the package's account, the symbols of its group and the execution."""


class PackageExecuted(msgspec.Struct, frozen=True, array_like=True):
    account_id: int
    symbols: list[str]
    execution: Execution


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(PackageExecuted).decode


def relay(nc: Client) -> Report:
    """The scheduler's report on a leading engine: each execution to the gateways."""
    sending: set[asyncio.Task] = set()

    def report(account_id: int, symbols: list[str], execution: Execution) -> None:
        payload = _encode(PackageExecuted(account_id, symbols, execution))
        task = asyncio.get_running_loop().create_task(nc.publish(subjects.PACKAGE_EXECUTIONS, payload))
        sending.add(task)
        task.add_done_callback(sending.discard)

    return report


async def follow(nc: Client, report: Report) -> Subscription:
    """Hand every execution the leading engine relays to ``report`` (a gateway's ``Hub.package_executed``)."""

    async def received(msg: Msg) -> None:
        executed = _decode(msg.data)
        report(executed.account_id, executed.symbols, executed.execution)

    return await nc.subscribe(subjects.PACKAGE_EXECUTIONS, cb=received)
