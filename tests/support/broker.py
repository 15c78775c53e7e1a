"""Embedded NATS servers for tests, each in a TOKEX_HOME of its own and on a free port, gone at the end."""

import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exchange.broker.embedded import EmbeddedNats
from exchange.lifetime import is_running
from tests.support.databases import reachable_temp_home


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while is_running(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.02)


@contextmanager
def nats_home(prefix: str) -> Iterator[Path]:
    """A TOKEX_HOME for a test's own NATS servers; any still running there at the end is killed, then the folder."""
    home = reachable_temp_home(prefix)
    try:
        yield home
    finally:
        for pid in EmbeddedNats(home).running_servers():
            # The test is over and may have failed half-way.
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def nats_server(prefix: str) -> Iterator[str]:
    """An embedded nats-server with JetStream on a free port, in a ``nats_home`` of its own; yields its URL."""
    with nats_home(prefix) as home:
        server = EmbeddedNats(home, port=0)
        try:
            yield server.start()
        finally:
            server.stop()
