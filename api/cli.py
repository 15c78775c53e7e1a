"""The `tokex` command.

    tokex serve [--host H] [--port P] [--database-url URL]   serve the API until SIGTERM or Ctrl-C
    tokex demo [--host H] [--port P] [--database-url URL]    serve a seeded demo market with a gentle order flow
    tokex admin COMMAND ...                                  accounts, keys, cash, instruments, issuers
    tokex check [--database-url URL]                         verify the ledger and order-book invariants
    tokex engine [--group G]                                 an engine of a cluster: leads, or stands by
    tokex gateway [--rest] [--feed] [--host H] [--port P]    a gateway of a cluster: the API and/or the feed
    tokex cluster [--gateways N] [--standby]                 NATS, PostgreSQL, engines and gateways on this machine
    tokex demo --gateways N [--standby]                      the demo on such a cluster

Without ``--database-url`` (or DATABASE_URL) the embedded PostgreSQL runs in TOKEX_HOME (default ./var);
TOKEX_HOST and TOKEX_PORT set where to listen (default 127.0.0.1:8000).

``tokex admin`` runs the same API in process, on the database itself, with a key made for the one command and
revoked after it; that needs the database to itself (``api.server.open_database``). While a server runs, send
the command to it instead: ``tokex admin --server URL ...`` signs with TOKEX_KEY and TOKEX_SECRET, the id and
secret of an admin key (``tokex admin create-admin`` makes the first one, before the first start). Every
admin command prints the API's JSON answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from exchange import config

if TYPE_CHECKING:
    from api.client import Client
    from api.server import Settings

# Each command imports what it runs when it runs: the server, the HTTP client and the broker take about a second
# to import, which `tokex --help`, `tokex check` and `tokex admin --server` need not wait for.

READ_DATABASE_ENV = "TOKEX_READ_DATABASE_URL"
KEY_ENV = "TOKEX_KEY"
SECRET_ENV = "TOKEX_SECRET"
DEFAULT_SCOPES = {"admin": "read,admin", "issuer": "read,trade,issue", "trader": "read,trade"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokex", description="tokex: an exchange for AI token blocks.")
    parser.add_argument("--version", action="version", version=f"tokex {version('tokex')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", help="an external PostgreSQL (default: DATABASE_URL, else embedded "
                                                 "in TOKEX_HOME)")
    listen = argparse.ArgumentParser(add_help=False)
    listen.add_argument("--host", default=config.listen_host(),
                        help="address to listen on (default: TOKEX_HOST, else 127.0.0.1)")
    listen.add_argument("--port", type=int, default=config.listen_port(),
                        help="port (default: TOKEX_PORT, else 8000; 0 picks a free one)")
    listen.add_argument("--access-log", action="store_true", help="log every request")
    listen.add_argument("--forwarded-allow-ips", metavar="ADDRESSES",
                        default=os.environ.get("TOKEX_FORWARDED_ALLOW_IPS") or None,
                        help="proxies (comma-separated addresses or networks, * for any) whose X-Forwarded-For "
                             "and X-Forwarded-Proto name the client; default: TOKEX_FORWARDED_ALLOW_IPS, else none, "
                             "and a client is the address it connects from")

    commands.add_parser("check", parents=[database],
                        help="verify every ledger and order-book invariant in the database")

    serve = commands.add_parser("serve", parents=[database, listen], help="serve the API until SIGTERM or Ctrl-C")
    serve.add_argument("--no-rate-limit", action="store_true",
                       help="turn the per-key and per-address rate limits off (for benchmarks; or set "
                            "TOKEX_NO_RATE_LIMIT=1)")

    demo = commands.add_parser("demo", parents=[database, listen],
                               help="serve a demo market: instruments, sellers, buyers and a gentle order flow")
    demo.add_argument("--flow-rate", type=float, default=3.0,
                      help="simulated actions per second (default 3; 0 seeds the market and leaves it still)")
    demo.add_argument("--seed", type=int, default=None, help="random seed of the simulated flow")
    demo.add_argument("--gateways", type=int, default=0, metavar="N",
                      help="run the demo on a cluster of N gateways and an engine on this machine (default 0: one "
                           "process)")
    demo.add_argument("--standby", action="store_true", help="with --gateways: also a standby engine")

    cluster_options = argparse.ArgumentParser(add_help=False)
    cluster_options.add_argument("--group", help="the engine group (default: the exchange's default group)")

    engine = commands.add_parser("engine", parents=[database, cluster_options],
                                 help="run an engine of a cluster: it leads once it holds the database's writer "
                                      "lock, and stands by until then")
    engine.add_argument("--demo-url", metavar="URL",
                        help="once leading, seed the demo market and run its flow through the gateways at URL")
    engine.add_argument("--flow-rate", type=float, default=3.0, help="with --demo-url: simulated actions per second")
    engine.add_argument("--seed", type=int, default=None, help="with --demo-url: random seed of the flow")

    gateway = commands.add_parser("gateway", parents=[database, listen, cluster_options],
                                  help="run a gateway of a cluster: the REST API and/or the WebSocket feed")
    gateway.add_argument("--rest", action="store_true", help="serve the REST API (default: both, unless --feed)")
    gateway.add_argument("--feed", action="store_true", help="serve the WebSocket feed (default: both, unless "
                                                            "--rest)")
    gateway.add_argument("--read-database-url", metavar="URL", default=os.environ.get(READ_DATABASE_ENV) or None,
                         help=f"a read replica for reads that may lag a little (default: {READ_DATABASE_ENV}, else "
                              "the primary)")
    gateway.add_argument("--no-rate-limit", action="store_true", help="turn the rate limits off (for benchmarks)")

    cluster = commands.add_parser("cluster", parents=[database, listen, cluster_options],
                                  help="run NATS, PostgreSQL, an engine (and a standby) and N gateways on this "
                                       "machine")
    cluster.add_argument("--gateways", type=int, default=2, metavar="N", help="gateways sharing the port (default 2)")
    cluster.add_argument("--standby", action="store_true", help="also a standby engine")
    cluster.add_argument("--no-rate-limit", action="store_true", help="turn the rate limits off (for benchmarks)")

    admin = commands.add_parser("admin", parents=[database], help="accounts, keys, cash, instruments, issuers",
                                description="Administer the exchange. Prints the API's JSON answer.")
    admin.add_argument("--server", metavar="URL",
                       help=f"send the command to this running server, signed with {KEY_ENV} and {SECRET_ENV} "
                            "(an admin key); default: act on the database, which no server may be using")
    actions = admin.add_subparsers(dest="action", metavar="ACTION", required=True)

    action = actions.add_parser("create-admin", help="create the admin account if missing and a new key for it "
                                                     "(on the database; run it before the first start)")
    action.add_argument("--name", default="admin")

    action = actions.add_parser("create-account", help="create an account")
    action.add_argument("name")
    action.add_argument("--role", choices=("trader", "issuer", "admin"), default="trader")
    action.add_argument("--key", action="store_true", help="also create a key with the role's usual scopes")

    action = actions.add_parser("create-key", help="create a key for an account; its secret is shown once")
    action.add_argument("account_id", type=int)
    action.add_argument("--scopes", required=True,
                        help="comma-separated, within what the role allows: "
                             + "; ".join(f"{role} {scopes}" for role, scopes in DEFAULT_SCOPES.items()))
    action.add_argument("--label", default="")

    for name, text in (("deposit", "credit CNY to an account"), ("withdraw", "debit CNY from an account")):
        action = actions.add_parser(name, help=text)
        action.add_argument("account_id", type=int)
        action.add_argument("amount", help="CNY as a decimal string, e.g. 1000 or 12.50")

    action = actions.add_parser("list-compute", help="list a compute instrument: a token block of a model class")
    action.add_argument("symbol", help="e.g. DEEPSEEK-V3")
    action.add_argument("--model", required=True, help="e.g. deepseek-v3")
    action.add_argument("--group", required=True, help="substitution group, e.g. chat-general")
    action.add_argument("--quality", type=int, required=True, help="0-100")
    action.add_argument("--tokens-per-lot", type=int, default=1_000_000)
    instrument_options(action)

    action = actions.add_parser("list-dataset", help="list a dataset token, minted by its issuer")
    action.add_argument("symbol", help="e.g. DS-STEEL-QC")
    action.add_argument("--issuer", type=int, required=True, help="the issuer's account id")
    action.add_argument("--description", required=True)
    action.add_argument("--license", required=True)
    action.add_argument("--grants", required=True, help="what one token grants, e.g. '1,000 records'")
    action.add_argument("--supply-cap", type=int, required=True, help="lots that may exist at once")
    instrument_options(action)

    actions.add_parser("instruments", help="show every instrument")

    action = actions.add_parser("approve-issuer", help="let an issuer mint an instrument up to a capacity")
    action.add_argument("account_id", type=int)
    action.add_argument("symbol")
    action.add_argument("capacity", type=int, help="lots the issuer may have minted at once")

    for name, text in (("halt", "stop trading an instrument"), ("resume", "trade an instrument again")):
        action = actions.add_parser(name, help=text)
        action.add_argument("symbol")
    return parser


def instrument_options(action: argparse.ArgumentParser) -> None:
    action.add_argument("--tick", default="0.01", help="price step in CNY per lot (default 0.01)")
    action.add_argument("--min-qty", type=int, default=1)
    action.add_argument("--max-qty", type=int, default=1_000_000)
    action.add_argument("--maker-fee-bps", type=int, default=10)
    action.add_argument("--taker-fee-bps", type=int, default=20)


async def check(database_url: str | None) -> int:
    """Print each broken invariant; exit status 1 if there is any."""
    import asyncpg

    from exchange import invariants
    from exchange.database import Database

    async with Database(database_url) as database:
        conn = await asyncpg.connect(database.dsn)
        try:
            found = await invariants.problems(conn)
        finally:
            await conn.close()
    for problem in found:
        print(problem)
    print("tokex check: " + (f"{len(found)} problem(s)" if found else "all invariants hold"))
    return 1 if found else 0


# -- admin -----------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def in_process_admin(database_url: str | None) -> AsyncIterator[Client]:
    """An admin client of the API run in this process on the database; its key is revoked at the end."""
    import httpx

    from api.app import create_app
    from api.bootstrap import create_admin
    from api.client import Client
    from api.server import NO_LIMITS, open_database

    async with open_database(database_url, None) as dsn:
        app = create_app(dsn, rate_limits=NO_LIMITS)
        async with app.router.lifespan_context(app):
            services = app.state.services
            _, key_id, secret = await create_admin(services.pool, sequencer=services.sequencer)
            transport = httpx.ASGITransport(app=app)
            try:
                async with Client("http://tokex", key_id, secret, transport=transport) as client:
                    yield client
            finally:
                await services.keys.revoke(key_id)


@contextlib.asynccontextmanager
async def remote_admin(url: str) -> AsyncIterator[Client]:
    """An admin client of the server at ``url``, signing with TOKEX_KEY and TOKEX_SECRET."""
    key_id, secret = os.environ.get(KEY_ENV), os.environ.get(SECRET_ENV)
    if not key_id or not secret:
        raise SystemExit(f"tokex admin --server needs {KEY_ENV} and {SECRET_ENV}: the id and secret of an admin key")
    from api.client import Client

    async with Client(url.rstrip("/"), key_id, secret) as client:
        yield client


async def create_admin_key(database_url: str | None, name: str) -> dict:
    """The admin account ``name`` (made if missing) and a new key for it, which stays valid."""
    from api.app import create_app
    from api.bootstrap import create_admin
    from api.server import NO_LIMITS, open_database

    async with open_database(database_url, None) as dsn:
        app = create_app(dsn, rate_limits=NO_LIMITS)
        async with app.router.lifespan_context(app):
            services = app.state.services
            account_id, key_id, secret = await create_admin(services.pool, name, sequencer=services.sequencer)
    return {"account_id": account_id, "key_id": key_id, "secret": secret}


async def admin_action(client: Client, options: argparse.Namespace) -> Any:
    action = options.action
    if action == "create-account":
        account = await client.create_account(options.name, options.role)
        if not options.key:
            return account
        key = await client.create_key(account["id"], DEFAULT_SCOPES[options.role].split(","), "tokex admin")
        return {"account": account, "key": key}
    if action == "create-key":
        scopes = [scope.strip() for scope in options.scopes.split(",") if scope.strip()]
        return await client.create_key(options.account_id, scopes, options.label)
    if action == "deposit":
        return await client.deposit(options.account_id, options.amount)
    if action == "withdraw":
        return await client.withdraw(options.account_id, options.amount)
    if action in ("list-compute", "list-dataset"):
        common = {"symbol": options.symbol, "tick": options.tick, "min_qty": options.min_qty,
                  "max_qty": options.max_qty, "maker_fee_bps": options.maker_fee_bps,
                  "taker_fee_bps": options.taker_fee_bps}
        if action == "list-compute":
            return await client.create_instrument(kind="compute", model=options.model,
                                                  substitution_group=options.group, quality=options.quality,
                                                  tokens_per_lot=options.tokens_per_lot, **common)
        return await client.create_instrument(kind="dataset", issuer_id=options.issuer,
                                              description=options.description, license=options.license,
                                              grants=options.grants, supply_cap=options.supply_cap, **common)
    if action == "instruments":
        return await client.instruments()
    if action == "approve-issuer":
        return await client.approve_issuer(options.account_id, options.symbol, options.capacity)
    if action == "halt":
        return await client.halt(options.symbol)
    if action == "resume":
        return await client.resume(options.symbol)
    raise ValueError(f"unknown admin action {action!r}")


async def admin(options: argparse.Namespace) -> int:
    import msgspec

    if options.action == "create-admin":
        if options.server:
            raise SystemExit("tokex admin create-admin works on the database, not through --server")
        result = await create_admin_key(database_url(options), options.name)
    else:
        connect = remote_admin(options.server) if options.server else in_process_admin(database_url(options))
        async with connect as client:
            result = await admin_action(client, options)
    print(msgspec.json.format(msgspec.json.encode(result), indent=2).decode())
    return 0


# -- serve and demo --------------------------------------------------------------------------------------------


def serve_settings(options: argparse.Namespace, no_rate_limit: bool = False) -> Settings:
    from api.server import NO_LIMITS, Settings

    return Settings(host=options.host, port=options.port, database_url=database_url(options),
                    rate_limits=NO_LIMITS if no_rate_limit else None, access_log=options.access_log,
                    forwarded_allow_ips=options.forwarded_allow_ips)


async def serve(options: argparse.Namespace) -> int:
    from api import server
    from exchange.database.queries import sql

    no_limit = no_rate_limit(options)
    settings = serve_settings(options, no_limit)

    async def started(running: server.Server, url: str) -> None:
        where = "external database" if settings.database_url else "embedded PostgreSQL in TOKEX_HOME"
        print(f"tokex: serving on {url} ({where}{'; rate limits off' if no_limit else ''}); "
              "SIGTERM or Ctrl-C stops it", flush=True)
        async with running.config.app.state.services.connection() as conn:
            admins = await conn.fetchval(sql("count_admins"))
        if not admins:
            print("tokex: no admin account yet: stop the server and run `tokex admin create-admin` for the first "
                  "admin key", flush=True)

    status = await server.serve(settings, started)
    print("tokex: stopped", flush=True)
    return status


async def demo(options: argparse.Namespace) -> int:
    if options.gateways > 0:
        return await cluster(options, demo_flow=True)
    from api import demo as market
    from api import server

    settings = serve_settings(options)
    status = await server.serve(settings, market.starter(options.flow_rate, options.seed))
    print("tokex demo: stopped", flush=True)
    return status


# -- cluster roles ---------------------------------------------------------------------------------------------


async def engine(options: argparse.Namespace) -> int:
    from api.roles import engine as engine_role

    flow = None if options.demo_url is None else engine_role.DemoFlow(options.demo_url, options.flow_rate, options.seed)
    return await engine_role.run(engine_role.EngineSettings(database_url=database_url(options), group=group(options),
                                                            demo=flow))


async def gateway(options: argparse.Namespace) -> int:
    from api import server
    from api.app import Gateway
    from api.roles import gateway as gateway_role
    from exchange.broker.connection import nats_url_async

    both = options.rest == options.feed  # neither flag, or both
    layout = Gateway(await nats_url_async(), group(options), options.read_database_url,
                     rest=both or options.rest, feed=both or options.feed)
    settings = serve_settings(options, no_rate_limit(options))

    async def started(running: server.Server, url: str) -> None:
        print(f"tokex gateway: serving on {url} ({'REST' if layout.rest else ''}"
              f"{' and ' if layout.rest and layout.feed else ''}{'feed' if layout.feed else ''}); SIGTERM or Ctrl-C "
              "stops it", flush=True)

    status = await gateway_role.run(settings, layout, started)
    print("tokex gateway: stopped", flush=True)
    return status


async def cluster(options: argparse.Namespace, demo_flow: bool = False) -> int:
    from api.roles import cluster as cluster_role

    gateway_options = ["--no-rate-limit"] if not demo_flow and no_rate_limit(options) else []
    if options.access_log:
        gateway_options.append("--access-log")
    if options.forwarded_allow_ips:
        gateway_options += ["--forwarded-allow-ips", options.forwarded_allow_ips]
    port = options.port or cluster_role.free_port(options.host)
    engine_options = []
    if demo_flow:
        host = options.host if ":" not in options.host else f"[{options.host}]"
        engine_options = ["--demo-url", f"http://{host}:{port}", "--flow-rate", str(options.flow_rate)]
        if options.seed is not None:
            engine_options += ["--seed", str(options.seed)]
    status = await cluster_role.run(cluster_role.ClusterSettings(
        host=options.host, port=port, gateways=options.gateways, standby=options.standby,
        database_url=database_url(options), group=group(options),
        gateway_options=gateway_options, engine_options=engine_options))
    print("tokex cluster: stopped", flush=True)
    return status


def no_rate_limit(options: argparse.Namespace) -> bool:
    return options.no_rate_limit or os.environ.get("TOKEX_NO_RATE_LIMIT", "") not in ("", "0")


def database_url(options: argparse.Namespace) -> str | None:
    from exchange.database import Database

    return options.database_url or Database.from_env().database_url


def group(options: argparse.Namespace) -> str:
    """The engine group of ``--group``; ``tokex demo --gateways N``, which has no such option, the default one."""
    from exchange.broker.subjects import DEFAULT_GROUP

    return getattr(options, "group", None) or DEFAULT_GROUP


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (as uvicorn itself would choose), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run one command; known failures become a message and status 1."""

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(main())
    except BrokenPipeError:
        pass  # the reader went away (| head): nothing left to tell
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = failure(exc)
        if message is None:
            raise
        print(f"tokex: {message}", file=sys.stderr)
    return 1


def failure(exc: Exception) -> str | None:
    """The line that tells a known failure; None for any other exception, whose traceback is the news."""
    import asyncpg

    from api.client import ApiError
    from api.server import WriterBusy
    from exchange.database.embedded import EmbeddedPostgresError

    if isinstance(exc, ApiError | WriterBusy | EmbeddedPostgresError):
        return str(exc)
    if isinstance(exc, OSError | asyncpg.PostgresError):
        return f"the database could not be reached: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.command == "check":
        return run(lambda: check(database_url(options)))
    if options.command == "admin":
        return run(lambda: admin(options))
    if options.command in ("serve", "demo", "engine", "gateway", "cluster"):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
        # One line per request of the demo's own clients would drown the rest.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        command = {"serve": serve, "demo": demo, "engine": engine, "gateway": gateway, "cluster": cluster}
        return run(lambda: command[options.command](options))
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
