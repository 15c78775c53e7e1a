"""The server itself: its clock, for signing clients, and its health, for load balancers and harnesses."""

import time
from datetime import UTC, datetime
from importlib.metadata import version

from api import schemas
from api.endpoints import Call, Endpoints
from api.problems import retry_after
from api.services import READ_ERRORS
from exchange.database.queries import sql

system = Endpoints("system")

PROBE = sql("ping")
PROBE_SECONDS = 2.0


@system.route("GET", "/v1/time", summary="Server time", response=schemas.ServerTime)
async def server_time(call: Call) -> schemas.ServerTime:
    """The server's clock, which judges a signed request's TOKEX-TIMESTAMP."""
    now_ms = time.time_ns() // 1_000_000
    iso = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return schemas.ServerTime(now_ms, iso)


@system.route("GET", "/v1/health", summary="Liveness and readiness", response=schemas.Health, errors=("unavailable",))
async def health(call: Call) -> schemas.Health:
    """200 when the server can take commands and read its database; else a 503 saying which part is not ready.

    Any answer at all means the process is live. ``leader`` names the engine that takes commands: the process
    itself in one process; on a gateway, the engine whose heartbeat it heard last (none for a few seconds: 503)."""
    reason = call.services.sequencer.down
    leader = call.services.leader()
    if reason is None and leader is None:
        reason = "no engine leads"
    if reason is not None:
        raise retry_after("unavailable", 1, f"Not ready: {reason}.")
    assert leader is not None
    try:
        async with call.services.connection() as conn:
            await conn.fetchval(PROBE, timeout=PROBE_SECONDS)
    except READ_ERRORS as exc:
        detail = f"Not ready: the database does not answer ({type(exc).__name__})."
        raise retry_after("unavailable", 1, detail) from None
    since = datetime.fromtimestamp(leader.since, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return schemas.Health(live=True, ready=True, database="ok", sequencer="ok", version=version("tokex"),
                  leader=schemas.Leader(leader.host, leader.pid, since))
