"""``tokex cluster`` as processes of their own, for the cluster benchmark and drills: started on a NATS and a
PostgreSQL that the caller owns (so that a drill can stop and start either), its roles found by their pid files,
and the leading engine by ``GET /v1/health``.

    nats = EmbeddedNats(home, port=free_port())          # or any NATS_URL
    cluster = Cluster(dsn, nats.start(), gateways=2, standby=True)
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
from pathlib import Path

import psutil

START_TIMEOUT = 120.0
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
        self.url = ""
        self.output: list[str] = []

    def tokex(self, *argv: str) -> dict:
        """Run ``tokex ARGV`` with the cluster's settings; its JSON output."""
        done = subprocess.run([*self.prefix, sys.executable, "-m", "api.cli", *argv], env=self.env,
                              capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"tokex {' '.join(argv)} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def start(self, port: int = 0) -> str:
        """Start the cluster (on ``port``, else a free one) and wait until a gateway answers with a leader."""
        port = port or free_port(self.host)
        command = [*self.prefix, sys.executable, "-m", "api.cli", "cluster", "--gateways", str(self.gateways),
                   "--host", self.host, "--port", str(port)]
        if self.standby:
            command.append("--standby")
        self.output.clear()
        self.process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        threading.Thread(target=self._drain, daemon=True).start()
        self.url = f"http://{self.host}:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while self.leader() is None or len(self.pids().get("gateway", [])) < self.gateways:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tokex cluster did not start:\n" + "".join(self.output[-40:]))
            time.sleep(0.1)
        return self.url

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def pids(self) -> dict[str, list[int]]:
        """Each role's live processes, from the pid files ``$TOKEX_HOME/run/<role>-<n>.pid``."""
        found: dict[str, list[int]] = {}
        for path in sorted((self.home / "run").glob("*.pid")):
            with contextlib.suppress(OSError, ValueError):
                pid = int(path.read_text().split()[0])
                if psutil.pid_exists(pid):
                    found.setdefault(path.stem.rsplit("-", 1)[0], []).append(pid)
        return found

    def health(self) -> dict | None:
        """``GET /v1/health`` from whichever gateway answers; None when none does."""
        try:
            with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as answer:
                return json.loads(answer.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def leader(self) -> int | None:
        """The pid of the engine that leads now, as the gateways last heard it; None when none is known."""
        health = self.health() or {}
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
        """SIGTERM the supervisor (it stops the roles in order); its exit status. Removes the TOKEX_HOME."""
        status = 0
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                status = self.process.wait()
        for pids in self.pids().values():
            for pid in pids:
                # A role the supervisor failed to stop; a pid file outliving its process names no one of ours.
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(pid)
                    if process.environ().get("TOKEX_HOME") == str(self.home):
                        process.kill()
        shutil.rmtree(self.home, ignore_errors=True)
        return status
