"""Durable order throughput: concurrent submitters through one ``Sequencer`` and PostgreSQL, in-process.

Each run gets a new database on the embedded server (in a temporary TOKEX_HOME, or on ``--dsn``'s server),
sets up the market of ``loadtest.exchange_worker`` with one trader per submitter, then runs ``--submitters``
tasks that each send one command, wait for its acknowledgement (that is, for its batch to commit) and send
the next. After ``--warmup`` seconds, ``--duration`` seconds are measured. Every figure printed last is the
median of ``--runs`` runs.

Mix, like W2 of ``bench_matching`` (about 1,000 live orders over a few hundred levels):
~55% limit orders (half near the touch, a tenth of those crossing; half up to 1,000 ticks deep), ~35% cancels
of the submitter's own open orders, ~10% aggressive orders (most take half the best level at market, a few
sweep 2-5 levels with an IOC limit). Each command carries a request digest, as one from the API does, so that
the replay guard (``exchange.replay``) is measured too.

Figures: acknowledged commands per second, time from submit to acknowledgement (p50, p99, max), batches
committed and their mean size, rejections by code and ``Unavailable`` errors, how busy this process and the
server were (CPU), and what a one-row commit costs on this server (the least any batch can take).
``--profile`` adds where the wall time goes (``Engine.apply``, ``Engine.take_effects``, making the batch's
array literals, ``store.write`` and the rest: submitters and asyncio), CPU per command on each side, and the
wall time of each SQL statement; ``--cprofile`` adds cProfile. ``--setting name=value`` tries a server
setting on the benchmark's database.

Usage: ``python -m loadtest.bench_exchange [--duration 15] [--warmup 3] [--submitters 64] [--runs 3]
[--dsn DSN] [--profile] [--cprofile] [--setting NAME=VALUE]``
"""

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

from exchange import store
from exchange.commands import Rejection
from exchange.database import Database
from exchange.database.migrations import migrate
from exchange.engine import Engine
from exchange.sequencer import Sequencer, Unavailable
from loadtest import benchmark
from loadtest.exchange_worker import SYMBOL, prepare
from loadtest.submitter import Submitter

TARGET_RATE = 20_000
TARGET_P99_MS = 20.0
HANDOUT_LOTS = 20_000_000
"""Tokens shared among the submitters' accounts at setup, so that they can sell."""


@dataclass
class Stats(benchmark.Run):
    """What one run measured."""

    rejections: Counter[str] = field(default_factory=Counter)
    unavailable: int = 0
    live_orders: list[int] = field(default_factory=list)
    process_cpu: float = 0.0
    """CPU seconds of this Python process (one thread does all the work) over the measured window."""
    server_cpu: Counter[str] = field(default_factory=Counter)
    """CPU seconds of the PostgreSQL server's processes over the measured window, by kind of process."""
    commit_floor: float = 0.0
    """Median seconds to commit a one-row insert on this server: the least any batch can take."""

    @property
    def mean_batch(self) -> float:
        return self.acked / self.batches if self.batches else 0.0


class Breakdown:
    """Wall time of the sequencer's steps and of each SQL statement, measured by wrapping them.

    Nothing in exchange/ is changed: ``Engine.apply``, ``Engine.take_effects``, ``store.Write``, ``store.write``
    and asyncpg's ``Connection`` methods are wrapped for the measured window only.
    """

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()
        self.statements: Counter[str] = Counter()
        self.statement_count: Counter[str] = Counter()
        self.commands = 0
        self.writes = 0
        self._undo: list[tuple[object, str, object]] = []

    def install(self) -> None:
        clock = time.perf_counter
        steps, statements, statement_count = self.steps, self.statements, self.statement_count

        def timed(owner: object, name: str, label: str) -> None:
            original = getattr(owner, name)

            def wrapper(*args, **kwargs):
                start = clock()
                try:
                    return original(*args, **kwargs)
                finally:
                    steps[label] += clock() - start

            self._undo.append((owner, name, original))
            setattr(owner, name, wrapper)

        def timed_async(owner: object, name: str, label_of) -> None:
            original = getattr(owner, name)

            async def wrapper(*args, **kwargs):
                start = clock()
                try:
                    return await original(*args, **kwargs)
                finally:
                    label = label_of(args, kwargs)
                    statements[label] += clock() - start
                    statement_count[label] += 1

            self._undo.append((owner, name, original))
            setattr(owner, name, wrapper)

        timed(Engine, "apply", "engine.apply")
        timed(Engine, "take_effects", "engine.take_effects")
        timed(store.Write, "__init__", "store.Write (array literals)")
        original_write = store.write

        async def timed_write(conn, effects):
            start = clock()
            try:
                return await original_write(conn, effects)
            finally:
                steps["store.write"] += clock() - start

        self._undo.append((store, "write", original_write))
        store.write = timed_write
        timed_async(asyncpg.Connection, "copy_records_to_table", lambda a, k: f"COPY {a[1]}")
        timed_async(asyncpg.Connection, "execute", lambda a, k: statement_label(a[1]))
        timed_async(asyncpg.Connection, "executemany", lambda a, k: statement_label(a[1]))

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo = []


def statement_label(sql: str) -> str:
    words = sql.split()
    if words[0].upper() == "INSERT":
        return f"INSERT {words[2]}"
    if words[0].upper() == "UPDATE":
        return f"UPDATE {words[1]}"
    return " ".join(words[:2])[:40]


@contextlib.asynccontextmanager
async def bench_database(admin_dsn: str, settings: list[str]) -> AsyncIterator[str]:
    """A new migrated database on ``admin_dsn``'s server, with ``settings`` (``key=value``), dropped at the end;
    yields its DSN."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))
        await migrate(dsn)
        for setting in settings:
            key, _, value = setting.partition("=")
            await conn.execute(f"ALTER DATABASE \"{name}\" SET {key} = '{value}'")
        yield dsn
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def run_once(admin_dsn: str, args: argparse.Namespace, number: int
                   ) -> tuple[Stats, Breakdown | None, cProfile.Profile | None]:
    async with bench_database(admin_dsn, args.setting) as dsn, \
            asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
        # The server's processes are ours to watch only when it is the embedded one.
        backend = await pool.fetchval("SELECT pg_backend_pid()")
        server = psutil.Process(psutil.Process(backend).ppid()) if args.dsn is None else None
        seq = await Sequencer.open(pool)
        try:
            handout = min(100_000, HANDOUT_LOTS // args.submitters)
            market = await prepare(seq, traders=args.submitters, handout=handout)
            floor = await commit_floor(pool)
            stats, breakdown, profiler = await measure(seq, market.traders, args, number, server)
            stats.commit_floor = floor
            return stats, breakdown, profiler
        finally:
            await seq.stop()


async def measure(seq: Sequencer, accounts: list[int], args: argparse.Namespace, number: int,
                  server: psutil.Process | None) -> tuple[Stats, Breakdown | None, cProfile.Profile | None]:
    stats = Stats()
    measuring = False
    stopping = False
    clock = time.perf_counter
    rng = random.Random(number)

    async def submit_loop(submitter: Submitter) -> None:
        while not stopping:
            kind, command = submitter.next_command()
            start = clock()
            try:
                result = await seq.submit(command, rng.randbytes(16))
            except Unavailable:
                if measuring:
                    stats.unavailable += 1
                await asyncio.sleep(0.01)
                continue
            if measuring:
                stats.latencies.append(clock() - start)
                stats.acked += 1
                stats.kinds[kind] += 1
                if isinstance(result, Rejection):
                    stats.rejections[result.code] += 1
            submitter.learn(result)

    tasks = [asyncio.create_task(submit_loop(Submitter(seq, a, random.Random(rng.random())))) for a in accounts]
    await asyncio.sleep(args.warmup)
    breakdown = Breakdown() if args.profile else None
    profiler = cProfile.Profile() if args.cprofile else None
    if breakdown is not None:
        breakdown.install()
    if profiler is not None:
        profiler.enable()
    batches = seq.batches
    measuring = True
    started = clock()
    process_cpu, server_cpu = time.process_time(), server_cpu_seconds(server)
    book = seq.engine.instruments[SYMBOL].book
    while clock() - started < args.duration:
        await asyncio.sleep(0.5)
        stats.live_orders.append(book.open_order_count)
    measuring = False
    stats.seconds = clock() - started
    stats.process_cpu = time.process_time() - process_cpu
    stats.server_cpu = server_cpu_seconds(server)
    stats.server_cpu.subtract(server_cpu)
    stats.batches = seq.batches - batches
    if profiler is not None:
        profiler.disable()
    if breakdown is not None:
        breakdown.uninstall()
        breakdown.commands = stats.acked
        breakdown.writes = stats.batches
    stopping = True
    await asyncio.gather(*tasks)
    return stats, breakdown, profiler


async def commit_floor(pool: asyncpg.Pool, samples: int = 100) -> float:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE bench_probe (n bigint)")
        times = []
        for n in range(samples):
            start = time.perf_counter()
            await conn.execute("INSERT INTO bench_probe VALUES ($1)", n)
            times.append(time.perf_counter() - start)
        await conn.execute("DROP TABLE bench_probe")
    return statistics.median(times)


def server_cpu_seconds(postmaster: psutil.Process | None) -> Counter[str]:
    """CPU seconds used so far by each kind of server process: backends, WAL writer, checkpointer..."""
    used: Counter[str] = Counter()
    if postmaster is None:
        return used
    for process in (postmaster, *postmaster.children()):
        with contextlib.suppress(psutil.Error):
            title = " ".join(process.cmdline())
            kind = "backends" if "[local]" in title else title.removeprefix("postgres: ").split(" ")[0]
            times = process.cpu_times()
            used[f"{kind} user"] += times.user
            used[f"{kind} system"] += times.system
    return used


def report_run(number: int, stats: Stats) -> None:
    print(f"run {number}: {stats.rate:,.0f} acknowledged/s, p50 {stats.percentile_ms(0.50):.2f} ms, "
          f"p99 {stats.percentile_ms(0.99):.2f} ms, max {1000 * max(stats.latencies):.1f} ms, "
          f"{stats.batches:,} batches of {stats.mean_batch:.1f} on average, "
          f"{stats.unavailable} unavailable, live orders ~{statistics.median(stats.live_orders):,.0f}; "
          f"CPU busy: python {100 * stats.process_cpu / stats.seconds:.0f}%, "
          f"server {f'{100 * stats.server_cpu.total() / stats.seconds:.0f}%' if stats.server_cpu else 'n/a'} "
          f"(of one core); one-row commit "
          f"{1000 * stats.commit_floor:.2f} ms")


def report_profile(stats: Stats, breakdown: Breakdown) -> None:
    wall = stats.seconds
    per_command = 1e6 / max(breakdown.commands, 1)
    per_batch = 1e3 / max(breakdown.writes, 1)
    print(f"  where the wall time goes ({wall:.1f} s, {breakdown.commands:,} commands, {breakdown.writes:,} "
          f"commits; us per command, ms per batch):")
    accounted = 0.0
    for label in ("engine.apply", "engine.take_effects", "store.Write (array literals)", "store.write"):
        seconds = breakdown.steps[label]
        accounted += seconds
        print(f"    {label:<38} {seconds:6.2f} s {100 * seconds / wall:5.1f}%  {seconds * per_command:6.1f} us"
              f"  {seconds * per_batch:6.2f} ms")
    rest = wall - accounted
    print(f"    {'the rest (submitters, asyncio, idle)':<38} {rest:6.2f} s {100 * rest / wall:5.1f}%  "
          f"{rest * per_command:6.1f} us  {rest * per_batch:6.2f} ms")
    server = ", ".join(f"{kind} {1e6 * seconds / breakdown.commands:.0f} us"
                       for kind, seconds in stats.server_cpu.most_common() if seconds > 0)
    print(f"  CPU per command: python {1e6 * stats.process_cpu / breakdown.commands:.0f} us, server {server or 'n/a'}")
    print("  SQL round trips, wall time from the client (includes the server's work and the fsync at COMMIT):")
    for label, seconds in breakdown.statements.most_common():
        print(f"    {label:<38} {seconds:6.2f} s {100 * seconds / wall:5.1f}%  {breakdown.statement_count[label]:>6} "
              f"calls  {seconds * per_batch:6.2f} ms/batch")


AREAS = (
    ("idle: waiting in epoll", ("method 'poll' of 'select.epoll'",)),
    ("socket send/recv (syscalls, incl. being descheduled)", ("method 'send' of", "method 'recv' of")),
    ("engine: exchange/ engine, ledger, fees + matching/", ("exchange/engine", "exchange/ledger", "exchange/fees",
                                                          "exchange/records", "matching/")),
    # asyncpg's Cython encoders call isinstance() on ABCs for every record; cProfile sees only those calls.
    ("store.write + asyncpg (client side)", ("exchange/store", "asyncpg/", "abc>", "_abc_instancecheck")),
    ("sequencer", ("exchange/sequencer",)),
    ("benchmark submitters", ("loadtest/",)),
    ("asyncio event loop", ("asyncio/", "selectors.py", "_contextvars")),
)


def report_cprofile(profiler: cProfile.Profile, commands: int) -> None:
    """Own time by area, then the top functions."""
    stats = pstats.Stats(profiler)
    areas: Counter[str] = Counter()
    for (filename, _, function), (_, _, own, _, _) in stats.stats.items():
        where = f"{filename}:{function}"
        area = next((name for name, marks in AREAS if any(mark in where for mark in marks)), "other")
        areas[area] += own
    total = sum(areas.values())
    print(f"  cProfile of the measured window, own time by area ({total:.2f} s, this process only; cProfile "
          f"roughly doubles Python's own costs):")
    for area, own in areas.most_common():
        print(f"    {area:<54} {own:6.2f} s {100 * own / total:5.1f}%  {1e6 * own / max(commands, 1):6.1f} us/command")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
    print("\n".join("    " + line for line in out.getvalue().splitlines()[:35] if line.strip()))


async def main(args: argparse.Namespace) -> None:
    home = db = None
    if args.dsn is None:
        # The server's user must be able to enter TOKEX_HOME when we run as root; pytest's folders do not allow it.
        home = Path(tempfile.mkdtemp(prefix="tokex-bench-"))
        home.chmod(0o755)
        db = Database(None, home=home)
    try:
        # On another server nothing is migrated but the benchmark's own databases.
        admin_dsn = args.dsn if db is None else await db.start()
        print(f"{args.submitters} submitters, {args.warmup:g} s warm-up, {args.duration:g} s measured, "
              f"{args.runs} run(s)" + "".join(f", {setting}" for setting in args.setting))
        runs = []
        for number in range(1, args.runs + 1):
            stats, breakdown, profiler = await run_once(admin_dsn, args, number)
            report_run(number, stats)
            runs.append(stats)
            if breakdown is not None:
                report_profile(stats, breakdown)
            if profiler is not None:
                report_cprofile(profiler, stats.acked)
    finally:
        if db is not None:
            await db.stop()
            shutil.rmtree(home, ignore_errors=True)

    rate, p99 = benchmark.print_medians(runs, TARGET_RATE, TARGET_P99_MS)
    batches = statistics.median(s.batches for s in runs)
    batch = statistics.median(s.mean_batch for s in runs)
    rejections = sum((s.rejections for s in runs), Counter())
    kinds = sum((s.kinds for s in runs), Counter())
    total = sum(kinds.values())
    floor = statistics.median(s.commit_floor for s in runs)
    print(f"  batches committed per run {batches:,.0f}, mean batch size {batch:.1f}")
    print(f"  a one-row commit takes {1000 * floor:.2f} ms on this server: with each submitter waiting for its "
          f"answer, {args.submitters} submitters cannot exceed {args.submitters / floor:,.0f}/s here")
    print("  mix: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in kinds.most_common()))
    print("  errors by code (all runs): " + (", ".join(f"{k} {v}" for k, v in rejections.most_common()) or "none")
          + f"; unavailable {sum(s.unavailable for s in runs)}")
    met = rate >= TARGET_RATE and p99 <= TARGET_P99_MS
    print(f"  target {'met' if met else 'MISSED'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = benchmark.parser(__doc__, duration=15.0, clients="--submitters")
    parser.add_argument("--dsn", help="a server to create the benchmark databases on (default: embedded)")
    parser.add_argument("--profile", action="store_true",
                        help="time the sequencer's steps and each SQL statement (adds a few percent)")
    parser.add_argument("--cprofile", action="store_true", help="also run cProfile (slows the process down)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting for the benchmark's database, to try a change (repeatable); e.g. "
                             "synchronous_commit=off shows what the fsync costs, but then nothing is durable")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
