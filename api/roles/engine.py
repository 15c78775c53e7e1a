"""``tokex engine``: the sequencer and the engine of one engine group, leading or standing by.

    asyncio.run(run(EngineSettings(group="main")))

Start
-----
The engine opens the database (``DATABASE_URL``, else the embedded PostgreSQL of TOKEX_HOME, started or attached
to) and NATS (``NATS_URL``, else the embedded server), then waits for the database's writer lock
(``exchange.sequencer``) for as long as it takes: while another engine holds it, this one is a standby ("standby:
waiting for the writer lock"). With the lock it loads the books and balances and leads: its sequencer takes the
group's commands from NATS (``exchange.broker.commands.CommandServer``), the package scheduler and the price index's
minute job run here and nowhere else, and a heartbeat on ``tokex.engine.leader`` tells the gateways who leads
(host, pid, since), every second. A leader that dies (even by SIGKILL) ends its database session, which releases
the lock: a standby takes it within its polling interval, loads and leads.

Market data: what each batch committed goes to the market-data stream on JetStream, each account's events and
the committed seqs to core NATS, and the price index's new rows too (``exchange.broker.market_stream``); the
gateways keep their views from them (``api.market_follower``).

Stop
----
SIGTERM or Ctrl-C: a standby just leaves. A leader takes no new command (the commands NATS already delivered are
queued), stops the scheduler and the minute job, commits what is queued and answers it, stops the heartbeat, and
exits with status 0; the gateways send what comes next to the standby that takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from api import package_executions
from api.keys import KeyStore, load_master_key
from api.routes.packages import reporter
from exchange import tasks
from exchange.broker.commands import CommandServer, LeaderHeartbeat
from exchange.broker.connection import connect, nats_url_async
from exchange.broker.market_stream import MarketStreamPublisher
from exchange.broker.subjects import DEFAULT_GROUP
from exchange.database import Database
from exchange.indexer import Indexer
from exchange.scheduler import Scheduler
from exchange.sequencer import Sequencer, writer_running

log = logging.getLogger(__name__)

DEMO_WAIT_SECONDS = 60.0
"""How long the demo on the leader waits for a gateway to answer at its URL."""


@dataclass(frozen=True)
class DemoFlow:
    """Seed the demo market and run its flow from the leading engine, through the gateways at ``url``."""

    url: str
    rate: float = 3.0
    seed: int | None = None


@dataclass(frozen=True)
class EngineSettings:
    database_url: str | None = None
    """An external PostgreSQL; None runs (or attaches to) the embedded one in ``home``."""
    home: Path | str | None = None
    group: str = DEFAULT_GROUP
    pool_size: int = 10
    demo: DemoFlow | None = None
    """Seed a demo market and run its flow once this engine leads (``tokex cluster --demo``)."""


async def run(settings: EngineSettings) -> int:
    """Stand by, lead, and stop on SIGTERM or Ctrl-C; return the exit status."""
    database = Database(settings.database_url, home=settings.home)
    await database.start()
    try:
        nc = await connect(await nats_url_async(settings.home), "engine")
        try:
            stopping = _stop_on_signals()
            pool = await asyncpg.create_pool(database.dsn, min_size=1, max_size=settings.pool_size)
            try:
                return await _stand_by_then_lead(settings, database.dsn, pool, nc, stopping)
            finally:
                await pool.close()
        finally:
            await nc.drain()
    finally:
        await database.stop()


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT. Installed after the embedded servers started, whose own SIGTERM handler
    would stop them at once, under the commits in flight (``exchange.lifetime``); they stop on the way out."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    return stopping


async def _stand_by_then_lead(settings: EngineSettings, dsn: str, pool: asyncpg.Pool, nc,
                              stopping: asyncio.Event) -> int:
    if await writer_running(dsn):
        log.info("standby: waiting for the writer lock")
    publisher = MarketStreamPublisher(nc, nc.jetstream())
    opening = asyncio.ensure_future(Sequencer.open(
        pool, lock_timeout=math.inf, publish=publisher.publish, resync=publisher.resync,
        publish_effects=publisher.publish_effects))
    if not await _first(opening, stopping):
        log.info("stopped while standing by")
        return 0
    sequencer = opening.result()
    async with pool.acquire() as conn:
        # Announces every committed seq: what the engine before this one committed but never published is
        # settled, so the gateways notice it and read it from the database.
        await publisher.start(conn)
    server = CommandServer(nc, sequencer, settings.group)
    heartbeat = LeaderHeartbeat(nc, settings.group)
    await server.start()
    heartbeat.start()
    log.info("leader of engine group %s (pid %d): taking commands", settings.group, heartbeat.beat.pid)
    scheduler = Scheduler(sequencer, listener=reporter(sequencer, package_executions.relay(nc)))
    scheduler.start()
    indexing = asyncio.get_running_loop().create_task(Indexer(pool, publish=publisher.publish_index).run(),
                                                      name="price-index")
    demo = None
    if settings.demo is not None:
        demo = asyncio.get_running_loop().create_task(
            _run_demo(settings.demo, pool, sequencer, settings.home), name="demo")
    try:
        await stopping.wait()
    finally:
        log.info("stopping: taking no new commands, committing what is queued")
        await server.stop_taking()
        for task in (demo, indexing):
            await tasks.cancel(task)
        await scheduler.stop()
        await sequencer.stop()
        await server.stop()
        await publisher.stop()
        await heartbeat.stop()
    log.info("stopped; %d commands taken from NATS, %d batches committed", server.received, sequencer.batches)
    return 0


async def _first(opening: asyncio.Future, stopping: asyncio.Event) -> bool:
    """Wait for ``opening`` or ``stopping``; True if opening won (cancelled otherwise)."""
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({opening, stop}, return_when=asyncio.FIRST_COMPLETED)
    if opening.done():
        stop.cancel()
        opening.result()  # raises what opening raised
        return True
    await tasks.cancel(opening)
    return False


async def _run_demo(flow: DemoFlow, pool: asyncpg.Pool, sequencer: Sequencer, home: Path | str | None) -> None:
    """Seed the demo market once a gateway answers at ``flow.url``, print the banner, then run the flow."""
    from api import demo as market  # the demo brings the whole HTTP app along: only an engine that runs it waits

    await _wait_until_served(flow.url)
    demo = market.Demo(pool, sequencer, KeyStore(pool, load_master_key(home)), flow.url, flow.rate,
                       random.Random(flow.seed))
    try:
        await demo.seed()
        print(demo.banner(), flush=True)
        await demo.flow()
    finally:
        await demo.close()


async def _wait_until_served(url: str) -> None:
    import httpx

    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEMO_WAIT_SECONDS
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/v1/health")).status_code == 200:
                    return
            if loop.time() > give_up:
                raise RuntimeError(f"no gateway answered at {url} within {DEMO_WAIT_SECONDS:.0f} s; no demo")
            await asyncio.sleep(0.2)

