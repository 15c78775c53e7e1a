"""``tokex cluster``: the whole cluster on this machine, as one supervised group of processes.

    asyncio.run(run(ClusterSettings(gateways=2, standby=True)))

Start, in this order: the embedded NATS (unless NATS_URL), the embedded PostgreSQL (unless DATABASE_URL), an engine
(``tokex engine``), which leads once it has loaded, then with ``standby`` a second engine, which waits for the
writer lock, and ``gateways`` gateways (``tokex gateway``) sharing one HTTP port. Each child gets NATS_URL and
DATABASE_URL of what the supervisor started, and its pid is written to ``$TOKEX_HOME/run/<role>-<n>.pid``
(``engine-1``, ``engine-2``, ``gateway-1``...). Children run in sessions of their own, so a Ctrl-C at the
terminal reaches the supervisor only, which then stops them in order.

Nothing is restarted behind anyone's back: when a child exits, the supervisor logs which one, with its status, and
goes on with the others (a standby takes over from a dead leader by itself; the other gateways keep serving).

Stop (SIGTERM or Ctrl-C): the gateways first (each drains: requests already read are answered), then the engines
(the leader commits what is queued and answers it), then NATS, then PostgreSQL. A child that does not stop within
``STOP_SECONDS`` is killed. The pid files are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from exchange import config
from exchange.broker.commands import heartbeat_of
from exchange.broker.connection import connect, display_url
from exchange.broker.embedded import EmbeddedNats
from exchange.broker.subjects import DEFAULT_GROUP, ENGINE_LEADER
from exchange.config import tokex_home
from exchange.database import Database

log = logging.getLogger(__name__)

LEAD_SECONDS = 120.0
"""How long the first engine may take to load and lead."""
STOP_SECONDS = 40.0
"""How long a child may take to stop after SIGTERM (a gateway drains for up to 30 s) before it is killed."""
WATCH_SECONDS = 0.2


@dataclass(frozen=True)
class ClusterSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    """0 picks a free port, shared by every gateway."""
    gateways: int = 2
    standby: bool = False
    database_url: str | None = None
    home: Path | str | None = None
    group: str = DEFAULT_GROUP
    gateway_options: list[str] = field(default_factory=list)
    """More options of every ``tokex gateway`` (``--no-rate-limit``, ``--access-log``...)."""
    engine_options: list[str] = field(default_factory=list)
    """More options of every ``tokex engine`` (the demo's)."""


@dataclass
class Child:
    role: str
    number: int
    process: asyncio.subprocess.Process
    pid_file: Path

    @property
    def name(self) -> str:
        return f"{self.role}-{self.number}"


async def run(settings: ClusterSettings) -> int:
    """Start the cluster, watch it until SIGTERM or Ctrl-C, stop it in order; return the exit status."""
    home = Path(settings.home).expanduser().absolute() if settings.home is not None else tokex_home()
    run_dir = home / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    stopping = asyncio.Event()
    children: list[Child] = []
    nats = None if config.nats_url() else EmbeddedNats(home)
    database = Database(settings.database_url, home=home)
    try:
        nats_url = config.nats_url() or await nats.start_async()
        await database.start()
        loop = asyncio.get_running_loop()
        # After the embedded servers: their own SIGTERM handler would stop them at once, under the children.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        env = {**os.environ, "NATS_URL": nats_url, "DATABASE_URL": database.dsn, "TOKEX_HOME": str(home)}
        port = settings.port or free_port(settings.host)
        engine = ["engine", "--group", settings.group, *settings.engine_options]
        leader = await start(children, run_dir, env, "engine", 1, engine)
        if not await _led(nats_url, settings.group, leader, stopping):
            return 1
        if settings.standby:
            await start(children, run_dir, env, "engine", 2, engine)
        for number in range(1, settings.gateways + 1):
            await start(children, run_dir, env, "gateway", number,
                        ["gateway", "--host", settings.host, "--port", str(port), *settings.gateway_options])
        where = f"http://{settings.host if ':' not in settings.host else f'[{settings.host}]'}:{port}"
        print(f"tokex cluster: serving on {where} ({settings.gateways} gateway(s), engine pid {leader.process.pid}"
              f"{', one standby' if settings.standby else ''}; NATS {display_url(nats_url)}); "
              "SIGTERM or Ctrl-C stops it", flush=True)
        await _watch(children, stopping)
        return 0
    finally:
        await _stop(children)
        if nats is not None:
            await nats.stop_async()
        await database.stop()


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def start(children: list[Child], run_dir: Path, env: dict[str, str], role: str, number: int,
                arguments: list[str]) -> Child:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", *arguments, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
    child = Child(role, number, process, run_dir / f"{role}-{number}.pid")
    child.pid_file.write_text(f"{process.pid}\n")
    children.append(child)
    log.info("%s started (pid %d)", child.name, process.pid)
    return child


async def _led(nats_url: str, group: str, leader: Child, stopping: asyncio.Event) -> bool:
    """Wait for the first engine's heartbeat; False if it died, or stopping came, first."""
    nc = await connect(nats_url, "cluster")
    beat = asyncio.Event()

    async def heard(msg) -> None:
        if heartbeat_of(msg.data).group == group:
            beat.set()

    try:
        await nc.subscribe(ENGINE_LEADER, cb=heard)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + LEAD_SECONDS
        while not beat.is_set():
            if leader.process.returncode is not None:
                log.error("%s exited with status %s before it led", leader.name, leader.process.returncode)
                return False
            if stopping.is_set():
                return False
            if loop.time() > give_up:
                log.error("%s did not lead within %.0f s", leader.name, LEAD_SECONDS)
                return False
            await asyncio.sleep(WATCH_SECONDS)
        return True
    finally:
        await nc.close()


async def _watch(children: list[Child], stopping: asyncio.Event) -> None:
    """Until stopping: log each child that exits; restart none."""
    reported: set[str] = set()
    while not stopping.is_set():
        for child in children:
            if child.process.returncode is not None and child.name not in reported:
                reported.add(child.name)
                log.error("%s (pid %d) exited with status %s; not restarted", child.name, child.process.pid,
                          child.process.returncode)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), WATCH_SECONDS)


async def _stop(children: list[Child]) -> None:
    """Gateways first, then the engines (standbys before the leader would take over from it)."""
    await asyncio.gather(*(_stop_child(child) for child in children if child.role == "gateway"))
    for child in reversed([child for child in children if child.role == "engine"]):
        await _stop_child(child)


async def _stop_child(child: Child) -> None:
    process = child.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            log.warning("%s (pid %d) did not stop within %.0f s; killed", child.name, process.pid, STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    child.pid_file.unlink(missing_ok=True)
