"""What the fault drills share (``loadtest.chaos``, ``loadtest.chaos_cluster``): the crowd that acts while they run,
and waiting for the exchange and its watchers to come back after a fault."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from loadtest.run import Options
from loadtest.watchers import Watcher


@dataclass(frozen=True)
class Crowd:
    """Who acts while a drill runs (``loadtest.run.Load``): sellers, buyers and feed watchers, the personas aiming at
    ``rate`` requests a second together."""

    sellers: int
    buyers: int
    watchers: int
    rate: float

    def options(self, database_url: str, seed: int) -> Options:
        """The load run's options for this crowd on one instrument of the server on ``database_url``, warmed up
        briefly."""
        return Options(sellers=self.sellers, buyers=self.buyers, watchers=self.watchers, warmup=2.0, rate=self.rate,
                       instruments=1, database_url=database_url, seed=seed)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """A flag for each of the crowd's numbers, with this crowd's as the defaults."""
        for name, value in asdict(self).items():
            parser.add_argument("--" + name, type=type(value), default=value)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> Crowd:
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__})


async def wait_for(condition: Callable[[], bool], timeout: float, pause: float) -> bool:
    """Whether ``condition`` came true within ``timeout`` seconds, looked at every ``pause`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(pause)
    return True


async def all_watching(watchers: list[Watcher], timeout: float = 60.0) -> float | None:
    """When every watcher is connected and subscribed to level2 and trades again; None if not in time."""
    back = await wait_for(lambda: all(w.connection is not None and w.chains["level2"].base >= 0
                                      and w.chains["trades"].base >= 0 for w in watchers), timeout, 0.02)
    return time.monotonic() if back else None
