"""``python -m loadtest run``: the load generator; ``python -m loadtest chaos``: fault drills under load.

    python -m loadtest run [--sellers 20] [--buyers 50] [--watchers 500] [--duration 60] [--warmup 5]
                           [--rate 6000] [--instruments 2] [--url URL] [--database-url URL] [--out DIR]

    python -m loadtest chaos [--kills 3] [--outages 2] [--outage-seconds 3] [--open-orders 100000] [--spacing 6]
                             [--sellers 6] [--buyers 14] [--watchers 50] [--rate 1500] [--out DIR]

Each prints a plain table and writes ``result.json`` (``run``: and ``result.png`` with the ``loadtest`` extra
installed) to ``--out`` (default ``var/loadtest``, ``var/chaos``). Exit status 0 when the target was met or
every drill passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from api.cli import loop_factory
from loadtest import report
from loadtest.chaos import ChaosOptions, chaos, chaos_passed, chaos_table
from loadtest.drill import Crowd
from loadtest.run import Options, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    load = commands.add_parser("run", help="sellers, buyers and watchers against a server; figures and tokex check")
    defaults = Options()
    load.add_argument("--sellers", type=int, default=defaults.sellers)
    load.add_argument("--buyers", type=int, default=defaults.buyers)
    load.add_argument("--watchers", type=int, default=defaults.watchers)
    load.add_argument("--duration", type=float, default=defaults.duration, help="measured seconds")
    load.add_argument("--warmup", type=float, default=defaults.warmup, help="seconds of load before measuring")
    load.add_argument("--rate", type=float, default=defaults.rate,
                      help="requests a second the sellers and buyers aim at together")
    load.add_argument("--instruments", type=int, default=defaults.instruments)
    load.add_argument("--url", help="target this running server (admin key in TOKEX_KEY and TOKEX_SECRET)")
    load.add_argument("--database-url", help="the server's database: where to start it, or for tokex check")
    load.add_argument("--seed", type=int, default=defaults.seed)
    load.add_argument("--out", type=Path, default=Path("var/loadtest"), help="folder for result.json and result.png")
    drills = commands.add_parser("chaos", help="fault drills under load: server killed, PostgreSQL stopped")
    chaos_defaults = ChaosOptions()
    for name in ("kills", "outages", "open_orders", "seed"):
        drills.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(chaos_defaults, name))
    for name in ("outage_seconds", "spacing"):
        drills.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(chaos_defaults, name))
    chaos_defaults.crowd.add_arguments(drills)
    drills.add_argument("--database-url", help="serve on this PostgreSQL (then no outages: it is not ours to stop)")
    drills.add_argument("--out", type=Path, default=Path("var/chaos"), help="folder for result.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "chaos":
        return drill(args)
    options = Options(sellers=args.sellers, buyers=args.buyers, watchers=args.watchers, duration=args.duration,
                      warmup=args.warmup, rate=args.rate, instruments=args.instruments, url=args.url,
                      database_url=args.database_url, seed=args.seed)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        result = runner.run(run(options))
    print(report.table(result))
    for path in report.write(result, args.out):
        print(f"wrote {path}")
    return 0 if result["target"]["met"] else 1


def drill(args: argparse.Namespace) -> int:
    options = ChaosOptions(crowd=Crowd.from_arguments(args),
                           **{name: getattr(args, name) for name in vars(ChaosOptions()) if name != "crowd"})
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        result = runner.run(chaos(options))
    print(chaos_table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'result.json'}")
    return 0 if chaos_passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
