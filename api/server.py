"""Run the API in one process: the database, one writer, uvicorn, and a graceful shutdown.

    asyncio.run(serve(Settings(port=8000)))

Order of start and stop
-----------------------
``serve`` opens the database (the server at ``database_url``, else the embedded one in ``home``), takes the
checks that no other process writes to it, then runs the app (``api.app.create_app``) under uvicorn. On the way
out the app's lifespan stops the sequencer and closes its pool, then the embedded server is stopped: the database
is the last thing to go, so every command still queued commits first.

Graceful shutdown
-----------------
SIGTERM or Ctrl-C: stop accepting connections; close idle keep-alive connections; let every request already
read run to its answer (a command waiting in the sequencer commits with its batch and is answered; one the
sequencer no longer takes is answered 503 ``unavailable``, nothing done); then stop as above and exit with
status 0. A request that was never read (sent on a connection the server closed as idle, or still in the
listen queue) gets no answer: the client sees a closed connection and nothing of it was done. A second Ctrl-C
gives up waiting. Requests still running after ``Settings.drain_seconds`` are cancelled.

The signal handlers are this module's own, installed around uvicorn's loop: the embedded PostgreSQL installs
a SIGTERM handler when it starts (``exchange.database.embedded``) that stops the database at once, which would fail the
batches in flight, and uvicorn's would raise the signal again once it is done, ending the process with
-SIGTERM instead of 0. Both only matter before the server is up; from then on the handler here decides.

One writer per database
-----------------------
The engine in memory is the only writer of its database: a second process opening a sequencer on the same
data would decide on balances it does not see. The sequencer holds the database's writer lock for as long as it
writes (``exchange.sequencer``), and waits for a writer that is still dying. Whatever writes through a
sequencer of its own (``tokex serve``, ``tokex admin`` without ``--server``) first asks whether a writer runs
(``writer_running``), before anything starts, and stops at once with ``WriterBusy`` if one does, with a message
that says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from api.app import create_app
from api.feed.protocol import MAX_MESSAGE_BYTES
from api.ratelimit import RateLimits
from api.uvicorn_coupling import CoalescingHttpToolsProtocol, DrainingWebSocketProtocol
from exchange.database import Database
from exchange.sequencer import writer_running

log = logging.getLogger(__name__)

GC_THRESHOLDS = (10_000, 10, 10)
NO_LIMITS = RateLimits(per_key_rate=None, per_address_rate=None)


class WriterBusy(RuntimeError):
    """Another process writes to this database (a running server); the message says what to do."""


@dataclass(frozen=True)
class Settings:
    """How to serve: where to listen, which database, which limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    """An external PostgreSQL; None runs the embedded one in ``home``."""
    home: Path | str | None = None
    """TOKEX_HOME when None."""
    rate_limits: RateLimits | None = None
    """``api.ratelimit.RateLimits()`` when None; ``NO_LIMITS`` turns them off."""
    access_log: bool = False
    drain_seconds: float = 30.0
    """How long shutdown waits for requests in flight before cancelling them."""
    pool_size: int = 10
    log_level: str = "info"
    forwarded_allow_ips: str | None = None
    """Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (comma-separated addresses or networks,
    ``*`` for any). None believes no one: a client's address is the peer's, so nobody escapes the per-address
    limits by writing a header."""


@contextlib.asynccontextmanager
async def open_database(database_url: str | None, home: Path | str | None) -> AsyncIterator[str]:
    """Start the database (embedded when no URL); yield the DSN if no other process writes to it; stop it.

    Raise ``WriterBusy`` if another process writes to it."""
    database = Database(database_url, home=home)
    await database.start()
    try:
        if await writer_running(database.dsn):
            raise WriterBusy(
                "another tokex process (a server) is writing to this database, and there may be only one writer: "
                "stop it first, or send admin commands to it with tokex admin --server URL (signed with "
                "TOKEX_KEY and TOKEX_SECRET of an admin key)")
        yield database.dsn
    finally:
        await database.stop()


class Server(uvicorn.Server):
    """uvicorn's server with this module's signal handling and hooks for work beside the app.

    ``on_started(url)`` runs beside the server once the socket listens (if it fails, the server stops);
    coroutines given to ``run_beside`` are cancelled and awaited when shutdown starts, before the connections
    are drained.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[str], Awaitable[None]] | None = None) -> None:
        super().__init__(config)
        self.on_started = on_started
        self.url = ""
        self.tasks: list[asyncio.Task] = []
        self.failed = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: object) -> None:
        if not self.should_exit:
            log.info("%s: stopping; answering the requests in flight", signal.Signals(sig).name)
        super().handle_exit(sig, frame)  # type: ignore[arg-type]

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        quiet_garbage_collector()
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        if self.on_started is not None:
            self.run_beside(self._started(self.on_started), "on started")

    async def _started(self, hook: Callable[[str], Awaitable[None]]) -> None:
        try:
            await hook(self.url)
        except Exception:
            log.exception("starting failed; stopping")
            self.failed = True
            self.should_exit = True

    def run_beside(self, coroutine: Awaitable[None], name: str) -> None:
        """Run ``coroutine`` while serving; it is cancelled when shutdown starts."""
        self.tasks.append(asyncio.ensure_future(coroutine))
        self.tasks[-1].set_name(name)

    async def shutdown(self, sockets=None) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().shutdown(sockets)


def quiet_garbage_collector() -> None:
    """Keep the cycle collector's pauses short while serving.

    A full collection walks every tracked object, and each open WebSocket keeps a stack of about a dozen
    coroutines alive: with many subscribers one is a stall every subscriber sees (``loadtest/README.md``, under
    ``make bench-feed``, has how long). What start-up loaded is frozen out of the collector's walks (after one
    last collection, so no garbage is frozen with it), and the youngest generation is collected every 10,000
    allocations rather than 700, which makes every older collection about fourteen times rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def uvicorn_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    """uvicorn's settings for ``app``. A WebSocket frame or message over the feed's message limit closes its
    connection with 1009 before it is read whole (``DrainingWebSocketProtocol``); proxy headers count only from
    ``settings.forwarded_allow_ips`` (uvicorn would believe them from 127.0.0.1, or from its FORWARDED_ALLOW_IPS,
    by default)."""
    return uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on", log_level=settings.log_level,
                          access_log=settings.access_log, timeout_graceful_shutdown=settings.drain_seconds,
                          server_header=False, ws_per_message_deflate=False, ws=DrainingWebSocketProtocol,
                          ws_max_size=MAX_MESSAGE_BYTES, http=CoalescingHttpToolsProtocol,
                          proxy_headers=settings.forwarded_allow_ips is not None,
                          forwarded_allow_ips=settings.forwarded_allow_ips or "")


async def serve(settings: Settings, on_started: Callable[[Server, str], Awaitable[None]] | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C; return the exit status. ``on_started(server, url)`` runs once listening."""
    async with open_database(settings.database_url, settings.home) as dsn:
        app = create_app(dsn, home=settings.home, rate_limits=settings.rate_limits, pool_size=settings.pool_size)
        server: Server

        async def started(url: str) -> None:
            if on_started is not None:
                await on_started(server, url)

        server = Server(uvicorn_config(app, settings), started)
        await server.serve()
        return 0 if server.started and not server.failed else 1
