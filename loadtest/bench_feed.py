"""Feed fan-out (``make bench-feed``): subscribers to level2 and trades of one instrument while orders flow.

    python -m loadtest.bench_feed [--subscribers 1000] [--rate 2000] [--duration 15] [--warmup 3] [--hold 5000]
                                  [--sample 20] [--dsn DSN] [--limit NAME=VALUE] [--server-profile FILE]

Two processes. The server process runs the API under uvicorn as ``tokex serve`` does (one core; per-message
compression off, which a subscriber could otherwise ask for) on the embedded PostgreSQL in a temporary
TOKEX_HOME, or on ``--dsn``; it sets up the market of ``loadtest.exchange_worker`` and, when told, submits
orders to its own sequencer at ``--rate`` a second, the W2-like mix of ``loadtest.submitter`` (about 1,000
live orders; a tenth of the orders trade). Orders go in process rather than over HTTP so that the server's core
goes to the feed, which is what is measured; the feed sees what HTTP orders would make. ``--limit`` sets a field
of the server's ``api.feed.limits.FeedLimits``. This process holds the subscribers on plain asyncio transports:
websockets' sans-I/O client does the handshake, and a minimal reader takes the server's frames.

Flow: ``--subscribers`` connections subscribe to level2 and trades; orders flow for ``--warmup`` seconds, then
``--duration`` seconds are measured.

- Delivered: messages (level2 updates and trades messages) and frames per second, over all subscribers.
- Latency from commit to receipt: the server notes when each seq was published (right after its commit), each
  subscriber when it received it. p50/p99/max over every message of ``--sample`` subscribers, and over the
  oldest message of every frame of every subscriber (a frame carries what accumulated since the last flush).
- Lost by healthy subscribers: every subscriber follows the ``prev_seq`` chains of both channels where frames
  meet and must reach the last seq published; the ``--sample`` subscribers check every message and count them
  against what the server published (all subscribers of the same channels receive the same frames). Connections
  the server cut off (1013) are counted apart: they are not healthy.

Hold: ``--hold`` connections subscribed to the same channels while 50 orders a second flow; the server
process's resident memory (not PostgreSQL's) before they connect and while they are connected.

CPU is reported per process, in cores, with the machine's load average: on a shared two-core machine the
server, PostgreSQL, the subscribers and anything else running all compete for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

from loadtest.subscriber import Subscriber, now_us, raise_file_limit

TARGET_P99_MS = 100.0
TARGET_LOST = 0
TARGET_HOLD = 5000
TARGET_HOLD_BYTES = 1 << 30
SUBMITTERS = 16

# The server process


class Publications:
    """A market-view listener after the feed's: when each seq of the instrument was published, by channel.

    Kept in arrays, which the garbage collector does not walk: a dict of every seq would lengthen the server's
    collections, and so the latency measured.
    """

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.level2 = array("q")
        self.trades = array("q")
        self.seqs = array("q")
        self.times = array("q")

    def publish(self, batch, fill_ids) -> None:
        from matching import events as ev

        at = now_us()
        for symbol, events in batch:
            if symbol != self.symbol:
                continue
            seqs_l2 = {e.seq for e in events if type(e) is ev.LevelChanged}
            seqs_trades = {e.seq for e in events if type(e) is ev.Trade}
            self.level2.extend(sorted(seqs_l2))
            self.trades.extend(sorted(seqs_trades))
            for seq in sorted(seqs_l2 | seqs_trades):
                self.seqs.append(seq)
                self.times.append(at)


async def serve(args: argparse.Namespace) -> None:
    import psutil
    import uvicorn

    from api.app import create_app
    from api.feed.limits import FeedLimits
    from api.ratelimit import RateLimits
    from api.server import Server
    from exchange.commands import Rejection
    from exchange.sequencer import Unavailable
    from loadtest.exchange_worker import SYMBOL, prepare
    from loadtest.submitter import Submitter

    raise_file_limit()
    home = None
    if args.dsn is None:
        # The embedded server's own user must be able to enter TOKEX_HOME when we run as root.
        home = Path(tempfile.mkdtemp(prefix="tokex-bench-feed-"))
        home.chmod(0o755)
    overrides = {name: float(value) if "." in value else int(value)
                 for name, _, value in (setting.partition("=") for setting in args.limit)}
    limits = FeedLimits(**{"max_connections_per_address": 1_000_000, **overrides})
    app = create_app(args.dsn, home=home, master_key=secrets.token_bytes(32),
                     rate_limits=RateLimits(per_key_rate=None, per_address_rate=None), feed_limits=limits)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            ws_per_message_deflate=False, backlog=8192, ws="websockets-sansio")
    server = Server(config)  # tokex serve's server, with its garbage collector settings
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            raise SystemExit("the server stopped while starting")
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    services = app.state.services
    hub = app.state.feed
    sequencer = services.sequencer
    market = await prepare(sequencer, traders=SUBMITTERS, handout=100_000)
    recorder = Publications(SYMBOL)
    services.market.listeners.append(recorder.publish)
    process = psutil.Process()
    loop = asyncio.get_running_loop()

    def say(message: dict) -> None:
        print(json.dumps(message), flush=True)

    rng = random.Random(1)
    submitters = [Submitter(sequencer, account, random.Random(rng.random())) for account in market.traders]
    say({"ready": True, "url": f"ws://127.0.0.1:{port}/v1/ws", "symbol": SYMBOL})

    async def flow(rate: float, seconds: float) -> dict:
        acked = rejected = unavailable = 0
        latencies: list[float] = []
        pending: set[asyncio.Task] = set()

        async def one(submitter: Submitter) -> None:
            nonlocal acked, rejected, unavailable
            _, command = submitter.next_command()
            started = time.perf_counter()
            try:
                result = await sequencer.submit(command)
            except Unavailable:
                unavailable += 1
                return
            latencies.append(time.perf_counter() - started)
            acked += 1
            if isinstance(result, Rejection):
                rejected += 1
            submitter.learn(result)

        cpu = process.cpu_times()
        database = database_cpu(home)
        stats = dict(hub.stats)
        started = loop.time()
        sent = 0
        while (elapsed := loop.time() - started) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                task = loop.create_task(one(submitters[sent % len(submitters)]))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.002)
        if pending:
            await asyncio.wait(pending)
        wall = loop.time() - started
        used = process.cpu_times()
        latencies.sort()
        return {
            "sent": sent, "acked": acked, "rejected": rejected, "unavailable": unavailable, "seconds": wall,
            "ack_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0,
            "cpu": (used.user - cpu.user + used.system - cpu.system) / wall,
            "database_cpu": (database_cpu(home) - database) / wall,
            "frames": hub.stats["frames"] - stats.get("frames", 0),
            "flushes": hub.stats["flushes"] - stats.get("flushes", 0),
            "last_level2": recorder.level2[-1] if recorder.level2 else 0,
            "last_trades": recorder.trades[-1] if recorder.trades else 0,
            "connections": len(hub.connections),
            "rss": process.memory_info().rss,
        }

    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if command["cmd"] == "flow":
            say({"flow": await flow(command["rate"], command["seconds"])})
        elif command["cmd"] == "record":
            say({"level2": recorder.level2.tolist(), "trades": recorder.trades.tolist(),
                 "published": list(zip(recorder.seqs.tolist(), recorder.times.tolist(), strict=True))})
        elif command["cmd"] == "memory":
            say({"rss": process.memory_info().rss, "connections": len(hub.connections)})
        elif command["cmd"] == "quit":
            break
    server.should_exit = True
    await serving
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


def database_cpu(home: Path | None) -> float:
    """CPU seconds of the embedded PostgreSQL: its postmaster (whose command line names ``home``) and children."""
    import psutil

    if home is None:
        return 0.0
    total = 0.0
    for candidate in psutil.process_iter(["cmdline"]):
        try:
            if str(home) not in " ".join(candidate.info["cmdline"] or ()):
                continue
            for process in (candidate, *candidate.children(recursive=True)):
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


# The subscribers


class Subscribers:
    """Every subscriber of one run."""

    def __init__(self, url: str, symbol: str) -> None:
        from websockets.uri import parse_uri

        self.uri = parse_uri(url)
        self.symbol = symbol
        self.all: list[Subscriber] = []

    def subscriptions(self) -> list[dict]:
        """The subscribe messages each subscriber sends once connected."""
        return [{"type": "subscribe", "channel": channel, "symbol": self.symbol} for channel in ("level2", "trades")]

    async def connect(self, count: int, sample: int = 0, wave: int = 250) -> None:
        loop = asyncio.get_running_loop()
        for start in range(0, count, wave):
            made = []
            for index in range(start, min(count, start + wave)):
                subscriber = Subscriber(self, sample=index < sample)
                made.append(subscriber)
                self.all.append(subscriber)
            await asyncio.gather(*(loop.create_connection(lambda s=s: s, self.uri.host, self.uri.port)
                                   for s in made))
            await asyncio.wait_for(asyncio.gather(*(s.ready for s in made)), 60)

    def measuring(self, on: bool) -> None:
        for subscriber in self.all:
            subscriber.measuring = on

    async def caught_up(self, level2: int, trades: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.closed is not None or (s.level2.last >= level2 and s.trades.last >= trades) for s in self.all):
                return
            await asyncio.sleep(0.05)

    def close(self) -> None:
        for subscriber in self.all:
            subscriber.transport.abort()


class ServerProcess:
    """The server process, driven over its stdin and stdout."""

    def __init__(self, args: argparse.Namespace) -> None:
        command = [sys.executable, "-m", "loadtest.bench_feed", "--serve"]
        for setting in args.limit:
            command += ["--limit", setting]
        if args.server_profile:
            command += ["--server-profile", args.server_profile]
        if args.dsn:
            command += ["--dsn", args.dsn]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=Path(__file__).resolve().parent.parent)

    async def ask(self, message: dict | None = None) -> dict:
        if message is not None:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, self.process.stdout.readline)
        if not line:
            raise SystemExit(f"the server process ended (status {self.process.wait()})")
        return json.loads(line)

    def stop(self) -> None:
        try:
            self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(60)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def percentile(ordered: list[int], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1000 if ordered else float("nan")


def latencies(pairs: array, published: dict[int, int], window: tuple[int, int]) -> list[int]:
    found = []
    for i in range(0, len(pairs), 2):
        at = published.get(pairs[i])
        if at is not None and window[0] <= at <= window[1]:
            found.append(pairs[i + 1] - at)
    return found


async def run_flow(server: ServerProcess, ready: dict, args: argparse.Namespace) -> dict:
    subscribers = Subscribers(ready["url"], ready["symbol"])
    connected = time.monotonic()
    await subscribers.connect(args.subscribers, sample=args.sample)
    print(f"  {args.subscribers:,} subscribers connected in {time.monotonic() - connected:.1f} s")
    await server.ask({"cmd": "flow", "rate": args.rate, "seconds": args.warmup})
    subscribers.measuring(True)
    frames_before = sum(s.frames for s in subscribers.all)
    marks_before = [(s.level2.last, s.trades.last) for s in subscribers.all]
    window_start = now_us()
    cpu = time.process_time()
    flow = (await server.ask({"cmd": "flow", "rate": args.rate, "seconds": args.duration}))["flow"]
    window_end = now_us()
    client_cpu = (time.process_time() - cpu) / ((window_end - window_start) / 1e6)
    await subscribers.caught_up(flow["last_level2"], flow["last_trades"], timeout=30)
    subscribers.measuring(False)
    frames = sum(s.frames for s in subscribers.all) - frames_before
    record = await server.ask({"cmd": "record"})
    published = dict(map(tuple, record["published"]))
    level2, trades = record["level2"], record["trades"]
    delivered = 0  # what each subscriber's chains advanced over while measured, in messages the server published
    for s, (level2_from, trades_from) in zip(subscribers.all, marks_before, strict=True):
        delivered += bisect.bisect_right(level2, s.level2.last) - bisect.bisect_right(level2, level2_from)
        delivered += bisect.bisect_right(trades, s.trades.last) - bisect.bisect_right(trades, trades_from)

    lost = breaks = lagging = 0
    cut = [s for s in subscribers.all if s.closed is not None]
    for s in subscribers.all:
        if s.closed is not None:
            continue
        breaks += s.level2.breaks + s.trades.breaks
        for chain, seqs, last in ((s.level2, level2, flow["last_level2"]), (s.trades, trades, flow["last_trades"])):
            if s.sample:
                expected = bisect.bisect_right(seqs, chain.last) - bisect.bisect_right(seqs, chain.base)
                lost += max(0, expected - chain.count)
            if chain.last < last:
                lagging += 1
                lost += bisect.bisect_right(seqs, last) - bisect.bisect_right(seqs, chain.last)
    window = (window_start, window_end)
    every = sorted(x for s in subscribers.all if s.sample for x in latencies(s.samples, published, window))
    oldest = sorted(x for s in subscribers.all for x in latencies(s.oldest, published, window))
    seconds = (window_end - window_start) / 1e6
    subscribers.close()
    return {
        "flow": flow, "client_cpu": client_cpu, "delivered": delivered / seconds, "frames": frames / seconds,
        "lost": lost, "breaks": breaks,
        "lagging": lagging, "cut": len(cut), "cut_codes": sorted({s.closed for s in cut}),
        "p50": percentile(every, 0.50), "p99": percentile(every, 0.99), "max": every[-1] / 1000 if every else 0,
        "oldest_p50": percentile(oldest, 0.50), "oldest_p99": percentile(oldest, 0.99),
        "oldest_max": oldest[-1] / 1000 if oldest else 0, "samples": len(every),
    }


async def run_hold(server: ServerProcess, ready: dict, count: int) -> dict:
    before = await server.ask({"cmd": "memory"})
    subscribers = Subscribers(ready["url"], ready["symbol"])
    started = time.monotonic()
    await subscribers.connect(count)
    connected = time.monotonic() - started
    await server.ask({"cmd": "flow", "rate": 50, "seconds": 5})
    during = await server.ask({"cmd": "memory"})
    live = sum(1 for s in subscribers.all if s.closed is None)
    subscribers.close()
    return {"before": before["rss"], "during": during["rss"], "connections": during["connections"], "live": live,
            "connect_seconds": connected}


async def main(args: argparse.Namespace) -> int:
    raise_file_limit()
    server = ServerProcess(args)
    try:
        ready = await server.ask()
        print(f"feed benchmark: {args.subscribers:,} subscribers to level2 and trades of {ready['symbol']}, "
              f"{args.rate:,.0f} orders/s, {args.warmup:g} s warm-up, {args.duration:g} s measured")
        result = await run_flow(server, ready, args)
        flow = result["flow"]
        print(f"  orders: {flow['acked']:,} acknowledged of {flow['sent']:,} sent in {flow['seconds']:.1f} s "
              f"({flow['acked'] / flow['seconds']:,.0f}/s; {flow['rejected']:,} refused by the engine, "
              f"{flow['unavailable']} unavailable), acknowledgement p99 {flow['ack_p99_ms']:.1f} ms")
        print(f"  delivered: {result['delivered']:,.0f} messages/s in {result['frames']:,.0f} frames/s "
              f"(server: {flow['frames'] / flow['seconds']:,.0f} frames/s, {flow['flushes'] / flow['seconds']:.0f} "
              f"flushes/s)")
        print(f"  CPU, in cores: server {flow['cpu']:.2f}, PostgreSQL {flow['database_cpu']:.2f}, subscribers "
              f"{result['client_cpu']:.2f}; machine load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"  commit to receipt, every message of {args.sample} subscribers ({result['samples']:,}): "
              f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, max {result['max']:.1f} ms")
        print(f"  commit to receipt, oldest message of each frame, all subscribers: p50 {result['oldest_p50']:.1f} "
              f"ms, p99 {result['oldest_p99']:.1f} ms, max {result['oldest_max']:.1f} ms")
        print(f"  lost by healthy subscribers: {result['lost']} (chain breaks {result['breaks']}, behind at the "
              f"end {result['lagging']}); cut off: {result['cut']} {result['cut_codes'] or ''}")
        hold = None
        if args.hold:
            hold = await run_hold(server, ready, args.hold)
            per = (hold["during"] - hold["before"]) / max(1, hold["connections"])
            print(f"  hold: {hold['live']:,} of {args.hold:,} subscribers connected in {hold['connect_seconds']:.1f} "
                  f"s; server memory {hold['before'] / 2**20:,.0f} MiB before, {hold['during'] / 2**20:,.0f} MiB "
                  f"with them ({per / 1024:.1f} KiB each)")
    finally:
        server.stop()
    checks = [
        (f"p99 <= {TARGET_P99_MS:g} ms", result["p99"] <= TARGET_P99_MS),
        ("zero loss for healthy subscribers", result["lost"] == TARGET_LOST and result["breaks"] == 0),
        ("no subscriber cut off", result["cut"] == 0),
    ]
    if hold is not None:
        checks.append((f"{TARGET_HOLD:,} subscribers in <= 1 GiB", hold["live"] >= min(args.hold, TARGET_HOLD)
                       and hold["during"] <= TARGET_HOLD_BYTES))
    print("  targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks))
    return 0 if all(ok for _, ok in checks) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000.0, help="orders a second")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--hold", type=int, default=TARGET_HOLD, help="subscribers held for the memory figure "
                                                                      "(0: skip)")
    parser.add_argument("--sample", type=int, default=20, help="subscribers that check and time every message")
    parser.add_argument("--dsn", help="a PostgreSQL database to use instead of the embedded server")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="a field of the server's api.feed.limits.FeedLimits, e.g. flush_interval=0.05")
    parser.add_argument("--server-profile", metavar="FILE", help="write the server process's cProfile stats here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse_args()
    if options.serve:
        if options.server_profile:
            import cProfile

            cProfile.run("asyncio.run(serve(options))", options.server_profile)
        else:
            asyncio.run(serve(options))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        raise SystemExit(asyncio.run(main(options)))
