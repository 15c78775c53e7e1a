"""The HTTP API as a Starlette app: ``create_app()``, served by any ASGI server.

    uvicorn.run(create_app(), host="127.0.0.1", port=8000)

Lifespan
--------
Start-up opens the database (``exchange.database.Database``: the server at ``database_url``, or the embedded one
in ``home``; migrated), an asyncpg pool, the committed market view, the API key store and the sequencer, whose
``publish`` feeds the market view and whose ``resync`` reads the view anew after a reload; then it starts the
package scheduler (``exchange.scheduler``), which reports executions to the feed, and the price index's minute job
(``exchange.indexer``), which hands each new value to the feed; the scheduler also frees the reservations of
inference calls that never settled. The inference gateway (``api.inference``) serves beside the routes. They are
handed to handlers as ``app.state.services`` (``api.services``). Shutdown stops the minute job, the scheduler and
the feed, then the sequencer (it finishes the commands already queued), closes the pool and stops the database, each
step bounded in time so a lost database cannot hang it.

As a gateway of a cluster (``create_app(gateway=Gateway(...))``, run by ``tokex gateway``) the app has no sequencer,
scheduler or minute job: commands go to the leading engine over NATS through a ``RemoteSequencer``, which the
routes use as they would the sequencer; the market view follows the engine's stream (``api.market_follower``);
rate limits and feed connections are shared with the other gateways (``api.shared_limits``); reads may go to a pool
of their own (a replica); the gateway serves the REST API, the feed, or both.

Every route is declared in a module of ``api.routes`` (``api.endpoints``); ``ENDPOINTS`` lists them all, and the
OpenAPI document is generated from the same list. Besides them: the market-data WebSocket ``/v1/ws``
(``api.feed.hub``, whose hub listens to the market view and runs while the app does) and the market-watch page at
``/`` with its files under ``/static/``; the OpenAI-compatible inference gateway at ``/inference/v1``
(``api.inference.gateway``); the interactive API page at ``/docs`` (``api/swagger``); Prometheus
metrics at ``/metrics`` (``api.metrics``).
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from api import metrics, package_executions
from api.endpoints import Endpoint, routes
from api.feed.endpoint import endpoint as feed_endpoint
from api.feed.hub import Hub
from api.feed.limits import FeedLimits
from api.inference import gateway as inference
from api.keys import KeyStore, load_master_key
from api.market_follower import MarketFollower
from api.marketdata import MarketData
from api.openapi import document, meta
from api.problems import Problem
from api.ratelimit import RateLimiter, RateLimits
from api.routes.accounts import accounts
from api.routes.dataset_access import access as dataset_access
from api.routes.datasets import datasets
from api.routes.fees import fees
from api.routes.history import history
from api.routes.indices import indices
from api.routes.instruments import instruments
from api.routes.keys import keys
from api.routes.market import market
from api.routes.orders import orders
from api.routes.packages import packages, reporter
from api.routes.provider_stats import measured
from api.routes.providers import providers
from api.routes.quotas import buyers
from api.routes.routed_quote import quoting
from api.routes.routing import routing
from api.routes.subscriptions import subscriptions
from api.routes.system import system
from api.routes.tokens import tokens
from api.services import Services
from api.shared_limits import SharedLimits
from api.uvicorn_coupling import KeepServerSend
from exchange import tasks
from exchange.broker.commands import Heartbeat, RemoteSequencer
from exchange.broker.connection import connect
from exchange.broker.subjects import DEFAULT_GROUP
from exchange.database import Database
from exchange.indexer import Indexer, latest
from exchange.scheduler import Scheduler
from exchange.sequencer import Sequencer

log = logging.getLogger(__name__)

# The router tries routes in this order: the order endpoints, the busiest by far, come first.
ENDPOINTS: list[Endpoint] = [*orders, *routing, *quoting, *packages, *instruments, *market, *history, *accounts, *keys,
                             *tokens, *datasets, *dataset_access, *subscriptions, *providers, *measured, *buyers,
                             *indices, *fees, *system, *meta]
SHUTDOWN_STEP_SECONDS = 10.0
STATIC = Path(__file__).parent / "static"
SWAGGER = Path(__file__).parent / "swagger"
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                           "frame-ancestors 'none'", "Cache-Control": "no-cache"}
# Swagger UI sets style attributes on its elements.
DOCS_HEADERS = {"Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                           "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
                "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class Gateway:
    """The app as one gateway of a cluster (``api.roles.gateway``) rather than the whole exchange in one process.

    Commands go to the leading engine of ``group`` over NATS (``exchange.broker.commands.RemoteSequencer``); no
    sequencer, package scheduler or index job runs here. Reads go to ``read_database_url`` (a replica) when given,
    else to the primary. ``rest`` and ``feed`` choose what the gateway serves: the REST API, the WebSocket feed."""

    nats_url: str
    group: str = DEFAULT_GROUP
    read_database_url: str | None = None
    rest: bool = True
    feed: bool = True


def create_app(database_url: str | None = None, *, home: Path | str | None = None, master_key: bytes | None = None,
               rate_limits: RateLimits | None = None, pool_size: int = 10, command_timeout: float = 10.0,
               feed_limits: FeedLimits | None = None, gateway: Gateway | None = None) -> Starlette:
    """The API app. ``database_url`` None runs the embedded PostgreSQL in ``home`` (default TOKEX_HOME);
    ``master_key`` None loads it (``api.keys.load_master_key``) from TOKEX_MASTER_KEY or ``home``. ``gateway`` None
    is the exchange in one process; a ``Gateway`` makes the app one gateway of a cluster."""
    limits = rate_limits or RateLimits()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            database = Database(database_url, home=home)
            await database.start()
            stack.push_async_callback(database.stop)
            pool = await _pool(stack, database.dsn, pool_size, command_timeout)
            reads = pool
            if gateway is not None and gateway.read_database_url:
                reads = await _pool(stack, gateway.read_database_url, pool_size, command_timeout)
            market_view = MarketData()
            if gateway is None:
                async with pool.acquire() as conn:
                    await market_view.load(conn)
            else:
                nc = await connect(gateway.nats_url, "gateway")
                stack.push_async_callback(_bounded, nc.drain(), "closing the NATS connection")
                # The view follows the engine's stream from a snapshot of the primary: a replica may lag behind
                # the stream, which would leave a gap nobody notices.
                follower = MarketFollower(nc, nc.jetstream(), market_view, pool)
                await follower.start()
                stack.push_async_callback(follower.stop)
            async with pool.acquire() as conn:
                hub = Hub(market_view, feed_limits)
                # Before any await: a market view fed from elsewhere changes meanwhile, and the hub must see it.
                market_view.listeners.append(hub.publish)
                market_view.reloaded.append(hub.resync)
                market_view.account_listeners.append(hub.user.receive)
                if gateway is not None:
                    follower.on_index = hub.publish_index
                hub.indices = await latest(conn)
            if gateway is None:
                sequencer = await Sequencer.open(pool, publish=market_view.apply, resync=market_view.reload,
                                                 publish_effects=market_view.apply_effects)
                stack.push_async_callback(_bounded, sequencer.stop(), "stopping the sequencer")
                scheduler = Scheduler(sequencer, listener=reporter(sequencer, hub.package_executed))
                itself = Heartbeat(DEFAULT_GROUP, socket.gethostname(), os.getpid(), time.time())

                def leader() -> Heartbeat | None:
                    return itself  # one process leads itself
            else:
                sequencer = RemoteSequencer(nc, gateway.group)
                await sequencer.start()
                stack.push_async_callback(sequencer.stop)
                executions = await package_executions.follow(nc, hub.package_executed)
                stack.push_async_callback(executions.unsubscribe)
                scheduler = None

                def leader() -> Heartbeat | None:
                    return sequencer.leading
            app.state.services = Services(
                pool=pool,
                reads=reads,
                sequencer=sequencer,
                market=market_view,
                keys=KeyStore(pool, master_key or load_master_key(home)),
                key_limiter=RateLimiter(limits.per_key_rate, limits.per_key_burst, name="key"),
                address_limiter=RateLimiter(limits.per_address_rate, limits.per_address_burst, name="address"),
                scheduler=scheduler,
                leader=leader,
            )
            app.state.feed = hub
            app.state.metrics.watch(app.state.services, hub)
            hub.start(app.state.services)
            stack.push_async_callback(hub.stop)
            if gateway is not None:
                # A key's rate and an address's connections count the same on every gateway.
                shared = SharedLimits(nc, [app.state.services.key_limiter, app.state.services.address_limiter],
                                      hub.per_address, hub.per_address_elsewhere)
                await shared.start()
                stack.push_async_callback(shared.stop)
            if scheduler is not None:
                scheduler.start()
                stack.push_async_callback(scheduler.stop)
                app.state.indexer = Indexer(pool, publish=hub.publish_index)
                indexing = asyncio.get_running_loop().create_task(app.state.indexer.run(), name="price-index")
                stack.push_async_callback(tasks.cancel, indexing)
            app.state.inference = inference.Gateway(app.state.services)
            stack.push_async_callback(app.state.inference.close)
            yield

    serves_rest = gateway is None or gateway.rest
    serves_feed = gateway is None or gateway.feed
    app = Starlette(
        # The gateway's routes first: the router tries the routes in turn, and an inference call, which the
        # gateway keeps cheap, should not pay for matching every endpoint's pattern before its own.
        routes=[*(inference.ROUTES if serves_rest else []),
                *(routes(ENDPOINTS) if serves_rest else routes([*system, *meta])),
                *([WebSocketRoute("/v1/ws", feed_endpoint)] if serves_feed else []),
                Route("/", market_watch), Mount("/static", StaticFiles(directory=STATIC), name="static"),
                Route("/docs", api_docs), Mount("/docs/assets", StaticFiles(directory=SWAGGER), name="docs"),
                Route("/metrics", metrics.endpoint)],
        lifespan=lifespan,
        middleware=[Middleware(KeepServerSend)],
        exception_handlers={HTTPException: _http_exception, Exception: _internal_error},
    )
    # An unknown path is a 404 problem, not a redirect to a guess with(out) a trailing slash.
    app.router.redirect_slashes = False
    app.state.metrics = metrics.Metrics()
    app.state.openapi = msgspec.Raw(msgspec.json.encode(document(ENDPOINTS)))
    return app


async def market_watch(request: Request) -> Response:
    """The market-watch page: plain HTML, CSS and JavaScript of this server, fed by ``/v1/ws``."""
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


async def api_docs(request: Request) -> Response:
    """The interactive API page (Swagger UI, served from ``api/swagger``) over ``/v1/openapi.json``."""
    return FileResponse(SWAGGER / "index.html", headers=DOCS_HEADERS)


async def _pool(stack: contextlib.AsyncExitStack, dsn: str, size: int, command_timeout: float) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, command_timeout=command_timeout)

    async def close() -> None:
        if not await _bounded(pool.close(), "closing the database pool"):
            pool.terminate()

    stack.push_async_callback(close)
    return pool


async def _bounded(step, what: str) -> bool:
    try:
        await asyncio.wait_for(step, SHUTDOWN_STEP_SECONDS)
        return True
    except TimeoutError:
        log.warning("%s took over %s s; abandoned", what, SHUTDOWN_STEP_SECONDS)
        return False


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return Problem("not_found", f"No route {request.url.path}; the API is described at /v1/openapi.json."
                       ).response(request.url.path)
    if exc.status_code == 405:
        return Problem("method_not_allowed", headers=dict(exc.headers or {})).response(request.url.path)
    log.error("unexpected HTTP exception %s for %s", exc.status_code, request.url.path)
    return Problem("internal_error").response(request.url.path)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return Problem("internal_error").response(request.url.path)
