"""The command bus against a real nats-server and PostgreSQL: a gateway's ``RemoteSequencer`` reaches an engine's
``CommandServer`` and its sequencer; a retry gets the original result, also from a restarted engine; no engine is
503 material (``Unavailable``), never a success."""

from __future__ import annotations

import asyncio
import contextlib
import os

import asyncpg
import pytest
from nats.errors import NoRespondersError

from exchange import invariants
from exchange.broker.commands import (
    CommandServer,
    Envelope,
    Refused,
    RemoteSequencer,
    decode_replies,
    encode_request,
)
from exchange.broker.connection import connect
from exchange.broker.subjects import command_subject
from exchange.commands import OrderView, PlaceOrder
from exchange.rejections import reject
from exchange.sequencer import Sequencer, Unavailable
from tests.support.engine import ASK, COMPUTE, TICK, open_market_through

GROUP = "bus-test"


class Bus:
    """A leading engine's command server over its sequencer, and a gateway's connection, on one NATS."""

    def __init__(self, engine_nc, gateway_nc) -> None:
        self.engine_nc = engine_nc
        self.gateway_nc = gateway_nc
        self.sequencer: Sequencer | None = None
        self.server: CommandServer | None = None

    async def lead(self, pool: asyncpg.Pool) -> None:
        """Load the engine from the database and take the group's commands."""
        self.sequencer = await Sequencer.open(pool)
        self.server = CommandServer(self.engine_nc, self.sequencer, GROUP)
        await self.server.start()

    async def stop_leading(self) -> None:
        await self.server.stop()
        await self.sequencer.stop()


@contextlib.asynccontextmanager
async def leading_engine(nats_server: str, pool: asyncpg.Pool):
    """A ``Bus`` whose engine leads, until the block ends."""
    bus = Bus(await connect(nats_server, "engine"), await connect(nats_server, "gateway"))
    await bus.lead(pool)
    try:
        yield bus
    finally:
        await bus.stop_leading()
        await bus.engine_nc.close()
        await bus.gateway_nc.close()


async def test_a_command_through_nats_commits_and_a_retry_gets_the_original(nats_server: str, pool: asyncpg.Pool):
    async with leading_engine(nats_server, pool) as engine:
        gateway_nc = engine.gateway_nc
        market = await open_market_through(engine.sequencer)
        remote = RemoteSequencer(gateway_nc, GROUP)
        order = PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK, qty=3)
        placed = await remote.submit(order, os.urandom(16))
        assert type(placed) is OrderView and placed.status == "open"
        # Commands submitted together travel together, and each gets its own answer.
        together = await asyncio.gather(*(remote.submit(PlaceOrder(market.issuer, COMPUTE, "sell", price=ASK + n * TICK,
                                                                   qty=1)) for n in range(1, 41)))
        assert [view.price for view in together] == [ASK + n * TICK for n in range(1, 41)]
        assert len({view.id for view in together}) == 40

        request = os.urandom(16)
        first = await ask(gateway_nc, Envelope(order, request))
        assert type(first) is OrderView
        assert await ask(gateway_nc, Envelope(order, request)) == reject("replayed_request")
        assert await ask(gateway_nc, Envelope(order, request, retry=True)) == first

        # A new leader (here: the same database, reloaded) answers the retry from the committed row.
        await engine.stop_leading()
        await engine.lead(pool)
        assert await ask(gateway_nc, Envelope(order, request, retry=True), until_answered=True) == first
        async with pool.acquire() as conn:
            orders = await conn.fetchval("SELECT count(*) FROM book_order WHERE account_id = $1", market.issuer)
            assert await invariants.problems(conn, engine.sequencer.engine) == []
        assert orders == 42  # ``placed``, the 40 together and ``first``, once each


async def test_commands_a_stopping_sequencer_refuses_are_each_answered_refused(nats_server: str, pool: asyncpg.Pool):
    async with leading_engine(nats_server, pool) as engine:
        await engine.sequencer.stop()  # the server still subscribes: it stops taking only once told to
        order = PlaceOrder(1, COMPUTE, "buy", price=ASK, qty=1)
        msg = await engine.gateway_nc.request(command_subject(GROUP), encode_request(
            [Envelope(order, os.urandom(16)), Envelope(order, os.urandom(16))]), timeout=5)
        replies = decode_replies(msg.data)
        assert [type(reply) for reply in replies] == [Refused, Refused]
        assert all("shutting down" in reply.reason for reply in replies)


async def test_without_an_engine_a_command_is_unavailable_after_the_deadline(nats_server: str):
    nc = await connect(nats_server, "gateway")
    try:
        remote = RemoteSequencer(nc, "nobody-leads", deadline=0.6)
        await remote.start()
        assert remote.down is not None
        with pytest.raises(Unavailable):
            await remote.submit(PlaceOrder(1, COMPUTE, "buy", price=ASK, qty=1))
        assert remote.refused == 1 and remote.queue_depth == 0
        await remote.stop()
    finally:
        await nc.close()


async def ask(nc, envelope: Envelope, until_answered: bool = False):
    """Send ``envelope`` to the group and decode the answer. ``until_answered`` asks again while the server says
    no one subscribes, for a moment at most, as a gateway does: a new engine's subscription, even flushed, can
    reach a request from another connection a little late."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        try:
            msg = await nc.request(command_subject(GROUP), encode_request([envelope]), timeout=5)
        except NoRespondersError:
            if not until_answered or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        (reply,) = decode_replies(msg.data)
        return reply
