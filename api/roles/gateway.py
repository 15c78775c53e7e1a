"""``tokex gateway``: the HTTP API and/or the WebSocket feed, with the engine elsewhere.

    asyncio.run(run(Settings(port=8000), Gateway(nats_url)))

A gateway is stateless: it checks signatures, limits and input, hands each command to the leading engine over NATS
(``exchange.broker.commands.RemoteSequencer``) and answers after the engine has committed; reads go to its own pool
(``--read-database-url``, a replica's, else the primary); the feed serves the market view. Run as many as needed.
On one machine they share the HTTP port: each binds its own socket with SO_REUSEPORT and the kernel spreads new
connections over them; elsewhere they sit behind any load balancer.

A gateway that reaches no engine for ``exchange.broker.commands.DEADLINE`` seconds answers a command with 503 and
Retry-After, never with a success it did not get. SIGTERM or Ctrl-C drains it as ``tokex serve`` drains
(``api.server``): requests already read are answered, then it exits with status 0.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from api.app import Gateway, create_app
from api.server import Server, Settings, uvicorn_config


def shared_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` with SO_REUSEPORT, so that several gateways share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def run(settings: Settings, gateway: Gateway,
              on_started: Callable[[Server, str], Awaitable[None]] | None = None) -> int:
    """Serve as a gateway until SIGTERM or Ctrl-C; return the exit status."""
    app = create_app(settings.database_url, home=settings.home, rate_limits=settings.rate_limits,
                     pool_size=settings.pool_size, gateway=gateway)
    server: Server

    async def started(url: str) -> None:
        if on_started is not None:
            await on_started(server, url)

    server = Server(uvicorn_config(app, settings), started)
    sock = shared_socket(settings.host, settings.port)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started and not server.failed else 1
