"""Stop the embedded servers a process owns (PostgreSQL, NATS) when it exits or gets SIGTERM.

Each embedded server registers itself once started and unregisters once stopped. At interpreter exit
and on SIGTERM every registered server is stopped, the last started first: NATS, started after
PostgreSQL, stops before it. There is one SIGTERM handler for all of them; two modules each chaining
their own handler onto the other's could call each other forever.

The handler stops the servers, then lets the previous handler run, or dies of SIGTERM as the process
would have without it. A process that ignores SIGTERM (SIG_IGN) is meant to survive it, and then so are
its servers.

Also here: ``EmbeddedServer``, what every embedded server shares: who owns the server of a home (the owner
file and the flock), starting, attaching, adopting and stopping around the subclass's own steps, and the
ways it is used (blocking, async, as a context manager); and telling whether a process recorded in an owner
file is still the same process, since a pid alone may have been reused by an unrelated one.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, Self

import psutil


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Live(Protocol):
    """A running server as its embedded owner found or launched it."""

    pid: int


class EmbeddedServer:
    """A server process in a home folder that several processes may share, and the ways to use it.

    Ownership
        The process that launches the server, or adopts the orphan of a killed owner, owns it: it records
        itself (pid and start time, ``identity``) in ``<name>.owner`` and stops the server on ``stop()``, at
        exit and on SIGTERM. A process that starts while the owner lives attaches to the same server and
        leaves it running when it stops. Starts and stops hold the flock on ``<name>.lock``, so two processes
        never launch two servers on one home.

    The subclass provides, each called with the flock held
        ``_prepare()``        what the server needs before looking for it (folders, files)
        ``_find()``           the server already running on this home, ready; else None, having stopped and
                              cleared whatever cannot serve
        ``_launch()``         a new server, ready
        ``_stop_live(live)``  stop the server, or raise
    and ``_address()``, what ``start()`` returns; ``log_path`` and ``log_tail_lines`` for error messages.

    ``start()`` and ``stop()`` are blocking; ``start_async()``, ``stop_async()`` and the context managers wrap them.
    """

    log_path: Path
    log_tail_lines = 20

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self._lock_path = home / f"{name}.lock"
        self._owner_path = home / f"{name}.owner"
        self._live: Live | None = None
        self._owned = False
        self._owner_pid: int | None = None
        self._lock_fd: int | None = None
        self._mutex = threading.RLock()

    @property
    def owned(self) -> bool:
        """True if this object will stop the server (it started or adopted it)."""
        return self._owned

    @property
    def pid(self) -> int | None:
        """The server's pid, or None when not started."""
        return self._live.pid if self._live else None

    def start(self) -> str:
        """Start the server (or attach to / adopt the one running on this home) and return its address.

        Blocking, until the server serves. Calling it again returns the same address.
        """
        with self._mutex:
            if self._live is None:
                with self._file_lock():
                    self._start_locked()
                register(self)
        return self._address()

    def stop(self) -> None:
        """Stop the server if this object owns it; otherwise just forget it. Idempotent."""
        with self._mutex:
            live, owned = self._live, self._owned
            self._live, self._owned = None, False
            unregister(self)
            if live is None or not owned or self._owner_pid != os.getpid():
                # A forked child inherits this object but not the server.
                return
            with self._file_lock():
                self._stop_live(live)
                self._clear_owner()

    async def start_async(self) -> str:
        """`start()` without blocking the event loop."""
        address = await asyncio.to_thread(self.start)
        install_sigterm_handler()  # from the loop's thread, which is the main thread where signals go
        return address

    async def stop_async(self) -> None:
        """`stop()` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.start_async()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_async()

    def _prepare(self) -> None:
        raise NotImplementedError

    def _find(self) -> Live | None:
        raise NotImplementedError

    def _launch(self) -> Live:
        raise NotImplementedError

    def _stop_live(self, live: Live) -> None:
        raise NotImplementedError

    def _address(self) -> str:
        raise NotImplementedError

    def _make_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def _start_locked(self) -> None:
        self._prepare()
        live = self._find()
        if live is not None:
            owner = self._read_owner()
            if owner is not None and is_alive(owner):
                self._live, self._owned = live, False
                return
            # An orphan of a killed owner (or a server started by hand): adopt it.
        else:
            live = self._launch()
        self._live, self._owned, self._owner_pid = live, True, os.getpid()
        self._write_owner()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if self._lock_fd is not None:
            # Re-entered from the SIGTERM handler while this process was starting: already held.
            yield
            return
        self._make_home()
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = None
            os.close(fd)

    def _read_owner(self) -> tuple[int, float] | None:
        try:
            data = json.loads(self._owner_path.read_text())
            return int(data["pid"]), float(data["started"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _write_owner(self) -> None:
        pid, started = identity(os.getpid())
        tmp = self._owner_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "started": started}))
        tmp.replace(self._owner_path)

    def _clear_owner(self) -> None:
        if self._read_owner() == identity(os.getpid()):
            self._owner_path.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-self.log_tail_lines:]
        except OSError as exc:
            return f"(no server log at {self.log_path}: {exc.strerror})"
        return f"Last lines of {self.log_path}:\n" + "\n".join(lines)


_running: list[Stoppable] = []
# Reentrant: the SIGTERM handler may run while the main thread holds it.
_running_lock = threading.RLock()
_hooks_installed = False
_previous_sigterm: object = None


def register(server: Stoppable) -> None:
    """Stop `server` at exit and on SIGTERM (the handler is installed when called from the main thread)."""
    global _hooks_installed
    with _running_lock:
        if server not in _running:
            _running.append(server)
        if not _hooks_installed:
            atexit.register(stop_all)
            _hooks_installed = True
    install_sigterm_handler()


def unregister(server: Stoppable) -> None:
    """Forget `server`: it was stopped, or is not this process's to stop."""
    with _running_lock:
        if server in _running:
            _running.remove(server)


def stop_all() -> None:
    """Stop every registered server, the last registered first."""
    with _running_lock:
        servers = list(reversed(_running))
    for server in servers:
        server.stop()


def install_sigterm_handler() -> None:
    """Stop the registered servers on SIGTERM; only possible from the main thread, elsewhere a no-op."""
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm or current == signal.SIG_IGN:
        return
    _previous_sigterm = current
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    stop_all()
    previous = _previous_sigterm
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    else:
        # Die of SIGTERM exactly as the process would have without us.
        os.kill(os.getpid(), signal.SIGTERM)


def identity(pid: int) -> tuple[int, float]:
    """Return (pid, start time) of a live process, what an owner file records."""
    return pid, psutil.Process(pid).create_time()


def is_alive(recorded: tuple[int, float]) -> bool:
    """True if the process `identity()` recorded still runs (same pid and start time, not a zombie)."""
    pid, started = recorded
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - started) < 0.01
    except psutil.Error:
        return False


def is_running(pid: int) -> bool:
    """True unless `pid` is gone or a zombie (an exited orphan that nobody reaped yet counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
