"""How a tokex process reaches NATS: which server, and a connection that rides out the server's restarts.

`nats_url()` is NATS_URL when set (an external server or cluster: several URLs separated by commas),
else the embedded server of TOKEX_HOME, started on demand (`exchange.broker.embedded`: the first
process to need it owns it, the others attach).

`connect(url, role)` opens a connection with settings that suit an exchange:
    - It never gives up: a lost server is retried every RECONNECT_WAIT seconds, forever, and so is the
      first connection, so a process started before its NATS waits for it. Bound the first connection
      with `asyncio.wait_for` where waiting is wrong.
    - A dead server is noticed within about PING_INTERVAL x (MAX_OUTSTANDING_PINGS + 1) seconds, not
      the minutes of nats-py's defaults.
    - Each connection is named `tokex-<role>-<host>-<pid>`, so the server's monitoring shows who is who.
    - Trouble is logged once per kind while it lasts (nats-py's default prints a traceback at every
      reconnect attempt), and again after a reconnection. Logs never show the URL's token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client

from exchange import config, lifetime
from exchange.broker.embedded import EmbeddedNats

log = logging.getLogger(__name__)

RECONNECT_WAIT = 0.5  # seconds
CONNECT_TIMEOUT = 2.0  # seconds
PING_INTERVAL = 5.0  # seconds
MAX_OUTSTANDING_PINGS = 2


def nats_url(home: Path | str | None = None) -> str:
    """Return NATS_URL when set; else start (or attach to) the embedded server in `home` (TOKEX_HOME).

    Blocking while the embedded server starts (well under a second).
    """
    return config.nats_url() or EmbeddedNats(home).start()


async def nats_url_async(home: Path | str | None = None) -> str:
    """`nats_url()` without blocking the event loop."""
    url = await asyncio.to_thread(nats_url, home)
    # The embedded server registered itself from a worker thread, where no signal handler can be set.
    lifetime.install_sigterm_handler()
    return url


def display_url(url: str) -> str:
    """Return `url` (one or several, comma-separated) without credentials, for logs and messages."""
    shown = []
    for part in url.split(","):
        parts = urlsplit(part.strip())
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        shown.append(urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
    return ",".join(shown)


async def connect(url: str, role: str) -> Client:
    """Connect to the NATS server(s) at `url` as `role` (engine, gateway...); see the module docstring."""
    client = Client()
    reporter = _Reporter(client, role, display_url(url))
    await client.connect(
        servers=[part.strip() for part in url.split(",") if part.strip()],
        name=f"tokex-{role}-{socket.gethostname()}-{os.getpid()}",
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT,
        connect_timeout=CONNECT_TIMEOUT,
        ping_interval=PING_INTERVAL,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        error_cb=reporter.error,
        disconnected_cb=reporter.disconnected,
        reconnected_cb=reporter.reconnected,
    )
    reporter.connected()
    return client


class _Reporter:
    """Log a connection's troubles once each until it is back, instead of at every attempt."""

    def __init__(self, client: Client, role: str, where: str) -> None:
        self._client = client
        self._role = role
        self._where = where
        self._reported: set[str] = set()

    def connected(self) -> None:
        """Forget what went wrong before the first connection: the next outage is reported afresh."""
        self._reported.clear()

    async def error(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if text not in self._reported:
            self._reported.add(text)
            log.warning("NATS (%s at %s): %s; retrying every %.1f s", self._role, self._where, text, RECONNECT_WAIT)

    async def disconnected(self) -> None:
        # Closing on purpose disconnects too; that is no trouble.
        if not (self._client.is_closed or self._client.is_draining) and "disconnected" not in self._reported:
            self._reported.add("disconnected")
            log.warning("NATS (%s): lost the server at %s; reconnecting", self._role, self._where)

    async def reconnected(self) -> None:
        self._reported.clear()
        log.info("NATS (%s): reconnected to %s", self._role, display_url(self._client.connected_url.geturl()))

