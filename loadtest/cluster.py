"""``tokex cluster`` as processes of their own, for the cluster benchmark and drills: started on a NATS and a
PostgreSQL that the caller owns (so that a drill can stop and start either), its roles found by their pid files,
and the leading engine by ``GET /v1/health``.

    backing = await Backing().start()        # an embedded PostgreSQL and NATS of its own
    cluster = Cluster(backing.dsn, backing.nats_url, gateways=2, standby=True)
    url = cluster.start()
    cluster.pids()      # {"engine": [...], "gateway": [...]} from $TOKEX_HOME/run/<role>-<n>.pid
    cluster.leader()    # the pid of the engine that leads now
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from exchange.broker.embedded import EmbeddedNats
from exchange.database.embedded import EmbeddedPostgres

START_TIMEOUT = 120.0
READY = {"engine": ("standby: waiting for the writer lock", "taking commands"), "gateway": ("serving on",)}
"""What a role prints once it stands by, leads or serves."""
STOP_TIMEOUT = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for a server that must keep its port across restarts)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def postgres_pids(pgdata_parent: Path | str) -> list[int]:
    """The processes of the PostgreSQL server whose data lives under ``pgdata_parent`` (its working folder)."""
    found = []
    for process in psutil.process_iter(["name", "cwd"]):
        with contextlib.suppress(psutil.Error):
            if process.info["name"] == "postgres" and str(pgdata_parent) in (process.info["cwd"] or ""):
                found.append(process.pid)
    return found


@dataclass
class Backing:
    """An embedded PostgreSQL and an embedded NATS of the benchmark's own, in one temporary folder."""

    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tokex-bench-cluster-")))
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    dsn: str = ""
    nats_url: str = ""

    async def start(self, nats: bool = True) -> Backing:
        # The embedded server's user must be able to enter the folder when we run as root.
        self.home.chmod(0o755)
        self.postgres = EmbeddedPostgres(self.home)
        self.dsn = await self.postgres.start_async()
        if nats:
            self.nats = EmbeddedNats(self.home, port=free_port())
            self.nats_url = await self.nats.start_async()
        return self

    async def stop(self) -> None:
        if self.nats is not None:
            await self.nats.stop_async()
        if self.postgres is not None:
            await self.postgres.stop_async()
        shutil.rmtree(self.home, ignore_errors=True)

    def cpu_processes(self) -> dict[str, list[psutil.Process]]:
        found = {"postgres": [psutil.Process(pid) for pid in postgres_pids(self.home)]}
        if self.nats is not None and self.nats.pid is not None:
            found["nats"] = [psutil.Process(self.nats.pid)]
        return found


class Cluster:
    """``tokex cluster --gateways N [--standby]`` in a subprocess, in a TOKEX_HOME of its own, on the given
    PostgreSQL and NATS; rate limits off, as in the other benchmarks."""

    def __init__(self, database_url: str, nats_url: str, gateways: int = 2, standby: bool = True,
                 host: str = "127.0.0.1", env: dict[str, str] | None = None, prefix: list[str] | None = None) -> None:
        self.gateways = gateways
        self.standby = standby
        self.host = host
        self.prefix = prefix or []
        """A command the cluster's processes run under (the several-hosts drill's ``ip netns exec``)."""
        self.home = Path(tempfile.mkdtemp(prefix="tokex-cluster-"))
        self.home.chmod(0o755)
        self.env = {**os.environ, **(env or {}), "TOKEX_HOME": str(self.home), "DATABASE_URL": database_url,
                    "NATS_URL": nats_url, "TOKEX_MASTER_KEY": secrets.token_hex(32), "TOKEX_NO_RATE_LIMIT": "1"}
        self.process: subprocess.Popen | None = None
        self.added: list[subprocess.Popen] = []
        """Roles started beside the supervisor's (``start_role``)."""
        self.added_roles: dict[int, str] = {}
        """pid -> role of those"""
        self.port = 0
        self.url = ""
        """Where the gateways answer (one port they share)."""
        self.urls: list[str] = []
        """Every address a gateway answers on: ``url`` here, one per gateway where they do not share one."""
        self.output: list[str] = []
        """What every process printed, in the order read."""
        self.lines: dict[int, list[str]] = {}
        """pid -> what that process printed"""

    def tokex(self, *argv: str) -> dict:
        """Run ``tokex ARGV`` with the cluster's settings; its JSON output."""
        done = subprocess.run([*self.prefix, sys.executable, "-m", "api.cli", *argv], env=self.env,
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"tokex {' '.join(argv)} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def start(self, port: int = 0) -> str:
        """Start the cluster (on ``port``, else a free one) and wait until a gateway answers with a leader."""
        port = self.port = port or free_port(self.host)
        command = [*self.prefix, sys.executable, "-m", "api.cli", "cluster", "--gateways", str(self.gateways),
                   "--host", self.host, "--port", str(port), "--no-rate-limit"]
        if self.standby:
            command.append("--standby")
        self.output.clear()
        self.process = self._spawn(command)
        self.url = f"http://{self.host}:{port}"
        self.urls = [self.url]
        deadline = time.monotonic() + START_TIMEOUT
        while self.leader() is None or len(self.pids().get("gateway", [])) < self.gateways:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tokex cluster did not start:\n" + "".join(self.output[-40:]))
            time.sleep(0.1)
        return self.url

    def start_role(self, role: str) -> int:
        """Start one more ``tokex engine`` (a standby, until it takes the lead) or ``tokex gateway`` (on the
        cluster's port) beside the supervisor's ones, and wait until it stands by or serves; it is stopped with the
        cluster. Its pid."""
        command = [*self.prefix, sys.executable, "-m", "api.cli", role]
        if role == "gateway":
            command += ["--host", self.host, "--port", str(self.port), "--no-rate-limit"]
        process = self._spawn(command)
        self.added.append(process)
        self.added_roles[process.pid] = role
        self.wait_ready(process.pid, role)
        return process.pid

    def wait_ready(self, pid: int, role: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until the engine ``pid`` stands by (or leads) or the gateway ``pid`` serves, by what it prints."""
        signs = READY[role]
        deadline = time.monotonic() + timeout
        while not any(sign in line for line in self.lines.get(pid, []) for sign in signs):
            if not psutil.pid_exists(pid) or time.monotonic() > deadline:
                raise RuntimeError(f"the {role} {pid} did not get ready:\n" + "".join(self.lines.get(pid, [])[-20:]))
            time.sleep(0.05)

    def _spawn(self, command: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        self._follow(process)
        return process

    def _follow(self, process: subprocess.Popen) -> None:
        """Keep what ``process`` prints in ``output`` (a reader thread, so that its pipe never fills)."""
        threading.Thread(target=self._drain, args=(process,), daemon=True).start()

    def _drain(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        own = self.lines.setdefault(process.pid, [])
        for line in process.stdout:
            self.output.append(line)
            own.append(line)

    def pids(self) -> dict[str, list[int]]:
        """Each role's live processes: the supervisor's from its pid files ``$TOKEX_HOME/run/<role>-<n>.pid``, and
        those of ``start_role``."""
        found: dict[str, list[int]] = {}
        for path in sorted((self.home / "run").glob("*.pid")):
            with contextlib.suppress(OSError, ValueError):
                pid = int(path.read_text().split()[0])
                if psutil.pid_exists(pid):
                    found.setdefault(path.stem.rsplit("-", 1)[0], []).append(pid)
        for process in self.added:
            if process.poll() is None:
                found.setdefault(self.added_roles[process.pid], []).append(process.pid)
        return found

    def health(self, url: str | None = None) -> dict | None:
        """``GET /v1/health`` from whichever gateway answers at ``url`` (default ``self.url``); None when none does."""
        try:
            with urllib.request.urlopen((url or self.url) + "/v1/health", timeout=2) as answer:
                return json.loads(answer.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def leader(self, url: str | None = None) -> int | None:
        """The pid of the engine that leads now, as the gateways (at ``url``) last heard it; None when none is known."""
        health = self.health(url) or {}
        leader = health.get("leader") or {}
        pid = leader.get("pid") if isinstance(leader, dict) else None
        return pid if isinstance(pid, int) and psutil.pid_exists(pid) else None

    def new_leader(self, dead: int, timeout: float = 30.0) -> int:
        """Wait until a leader other than ``dead`` is known; its pid."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.leader()
            if pid is not None and pid != dead:
                return pid
            if time.monotonic() > deadline:
                raise TimeoutError(f"no engine took over from {dead} within {timeout:g} s")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM the roles started beside it, then the supervisor (it stops its roles in order); the supervisor's
        exit status. Removes the TOKEX_HOME; calling it again does nothing."""
        status = 0
        for process in [*self.added, *([self.process] if self.process is not None else [])]:
            process.send_signal(signal.SIGTERM)
            try:
                status = process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                status = process.wait()
            if process is not self.process:
                status = 0
        self.added.clear()
        self.process = None
        for pids in self.pids().values():
            for pid in pids:
                # A role the supervisor failed to stop; a pid file outliving its process names no one of ours.
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(pid)
                    if process.environ().get("TOKEX_HOME") == str(self.home):
                        process.kill()
        shutil.rmtree(self.home, ignore_errors=True)
        return status
