"""Stop the embedded servers a process owns (PostgreSQL, NATS) when it exits or gets SIGTERM.

Each embedded server registers itself once started and unregisters once stopped. At interpreter exit
and on SIGTERM every registered server is stopped, the last started first: NATS, started after
PostgreSQL, stops before it. There is one SIGTERM handler for all of them; two modules each chaining
their own handler onto the other's could call each other forever.

The handler stops the servers, then lets the previous handler run, or dies of SIGTERM as the process
would have without it. A process that ignores SIGTERM (SIG_IGN) is meant to survive it, and then so are
its servers.

Also here: ``EmbeddedServer``, the ways every embedded server is used (blocking, async, as a context
manager) around its own ``start()`` and ``stop()``; and telling whether a process recorded in an owner
file is still the same process, since a pid alone may have been reused by an unrelated one.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import threading
from typing import Protocol, Self

import psutil


class Stoppable(Protocol):
    def stop(self) -> None: ...


class EmbeddedServer:
    """``start()`` and ``stop()`` (the subclass's, blocking) also as coroutines and context managers."""

    def start(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

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
