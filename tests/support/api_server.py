"""A real API server for tests: uvicorn on 127.0.0.1 and a free port, on its own thread and event loop.

Sync code (schemathesis) and async tests alike call it over real HTTP. ``live_server`` gives it a new database
and a bootstrapped admin; ``serve`` runs any app, for tests that bring their own database.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg
import uvicorn
from starlette.applications import Starlette

from api.app import create_app
from api.bootstrap import create_admin
from api.ratelimit import RateLimits
from api.server import Settings, uvicorn_config
from exchange import invariants
from tests.support.databases import fresh_database

NO_LIMITS = RateLimits(per_key_rate=None, per_address_rate=None)


@dataclass
class Live:
    url: str
    app: Starlette
    loop: asyncio.AbstractEventLoop
    master_key: bytes
    dsn: str = ""
    admin_id: int = 0
    admin_key: str = ""
    admin_secret: str = ""

    def run(self, coroutine):
        """Run ``coroutine`` on the server's event loop (for its pool and sequencer) and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    async def problems(self) -> list[str]:
        """What ``tokex check`` finds in the server's database (``exchange.invariants``), on a connection of its own."""
        conn = await asyncpg.connect(self.dsn)
        try:
            return await invariants.problems(conn)
        finally:
            await conn.close()


@contextmanager
def serve(app: Starlette, master_key: bytes, timeout: float = 60.0, settings: Settings | None = None) -> Iterator[Live]:
    """Serve ``app`` with uvicorn as ``tokex serve`` configures it (``settings``, by default on 127.0.0.1 and a
    free port) until the block ends."""
    server = uvicorn.Server(uvicorn_config(app, settings or Settings(port=0, log_level="warning")))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start; see the log above")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Live(f"http://127.0.0.1:{port}", app, loop, master_key)
    finally:
        server.should_exit = True
        thread.join(timeout)
        loop.close()


def bootstrap(live: Live) -> None:
    """Create the first admin through the server's own sequencer; keep its key on ``live``."""
    services = live.app.state.services
    live.admin_id, live.admin_key, live.admin_secret = live.run(
        create_admin(services.pool, sequencer=services.sequencer, master_key=live.master_key))


@contextmanager
def live_server(postgres_admin_url: str, rate_limits: RateLimits = NO_LIMITS) -> Iterator[Live]:
    """A server on a new database, with an admin key."""
    with fresh_database(postgres_admin_url, "tokex_api") as dsn:
        master_key = secrets.token_bytes(32)
        with serve(create_app(dsn, master_key=master_key, rate_limits=rate_limits), master_key) as live:
            live.dsn = dsn
            bootstrap(live)
            yield live


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
