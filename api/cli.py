"""The `tokex` command."""

import argparse
import asyncio
import sys
from importlib.metadata import version

import asyncpg

from exchange import invariants
from exchange.database import Database


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokex", description="tokex: an exchange for AI token blocks.")
    parser.add_argument("--version", action="version", version=f"tokex {version('tokex')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser("check", help="verify every ledger and order-book invariant in the database")
    check.add_argument("--database-url", help="an external PostgreSQL (default: DATABASE_URL, else embedded)")
    return parser


async def check(database_url: str | None) -> int:
    """Print each broken invariant; exit status 1 if there is any."""
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.command == "check":
        return asyncio.run(check(options.database_url or Database.from_env().database_url))
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
