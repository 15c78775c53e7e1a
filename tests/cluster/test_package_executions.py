"""Package executions travel from the leading engine's scheduler to the gateways' feeds over a real nats-server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from api import package_executions
from api.schemas import Execution
from exchange.broker.connection import connect


async def test_an_execution_the_engine_relays_reaches_every_gateway(nats_server: str) -> None:
    engine_nc = await connect(nats_server, "engine")
    gateways = [await connect(nats_server, "gateway") for _ in range(2)]
    heard: list[list[tuple]] = [[], []]
    try:
        for gateway, log in zip(gateways, heard, strict=True):
            await package_executions.follow(gateway, lambda *args, log=log: log.append(args))
            await gateway.flush()
        at = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
        execution = Execution(7, 3, at, 41, None, 5, "9.25", "1.85", "80.00", "0.02", at)
        package_executions.relay(engine_nc)(101, ["DEEPSEEK-V3", "GLM-4.5"], execution)
        for _ in range(100):
            if all(heard):
                break
            await asyncio.sleep(0.02)
        assert heard == [[(101, ["DEEPSEEK-V3", "GLM-4.5"], execution)]] * 2
    finally:
        for nc in (engine_nc, *gateways):
            await nc.close()
