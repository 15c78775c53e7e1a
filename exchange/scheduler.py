"""The period scheduler: run each due period of every active package, and of every subscription, through the
sequencer, in order; and free the inference reservations past their deadline.

Every ``interval`` seconds (and on ``wake``) it asks the engine which packages have a period that has started
(``packages.due``) and submits ``RunPackage`` for each, oldest period first, and likewise ``RenewSubscription``
for each subscription whose next period has started (``subscriptions.due``), until none is due. A period
missed while the server was down is due when it comes back, and runs then, once: ``RunPackage`` only runs a
package's ``next_period``, and the run and its execution row commit together (``exchange.packages``); so do a
subscription's renewal and its period row (``exchange.subscriptions``).

Every ``SWEEP_SECONDS`` it also submits ``ExpireReservations`` (``exchange.delivery``: frees the reservations of
calls never settled, and lapses expired quotas). The scheduler runs where the sequencer does, in the one process
or on the leading engine only, so the sweep runs once however many gateways serve calls.

The clock is the sequencer's (``Sequencer.clock``, microseconds since the epoch), so the engine judges a period
due by the same time the scheduler does; a test passes a fake clock to both and runs months in milliseconds by
moving it and calling ``run_due``.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from exchange import packages, subscriptions, tasks
from exchange.commands import Done, ExecutionView, ExpireReservations, RenewSubscription, RunPackage
from exchange.sequencer import EPOCH, Sequencer, Unavailable

log = logging.getLogger(__name__)

SWEEP_SECONDS = 10.0
"""How often reservations past their deadline are freed."""

ExecutionListener = Callable[[int, ExecutionView], None]
"""Called with the account id and each execution, after its commit."""


class Scheduler:
    def __init__(self, sequencer: Sequencer, interval: float = 1.0,
                 listener: ExecutionListener | None = None, sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.sequencer = sequencer
        self.interval = interval
        self.listener = listener
        self.sweep_seconds = sweep_seconds
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None

    def wake(self) -> None:
        """Look for due periods now rather than at the next interval."""
        self._wake.set()

    async def run_due(self) -> list[ExecutionView]:
        """Run every period due by the clock, oldest first; return the package executions committed."""
        executed: list[ExecutionView] = []
        while True:
            engine = self.sequencer.engine
            at = EPOCH + timedelta(microseconds=self.sequencer.clock())
            due = sorted((package.next_period, package.id, package.account_id)
                         for package in engine.packages.values() if packages.due(package, at))
            progress = False
            for period, package_id, account_id in due:
                result = await self.sequencer.submit(RunPackage(package_id, period))
                if not isinstance(result, ExecutionView):
                    continue  # paused, cancelled or run meanwhile: the engine said why, nothing changed
                progress = True
                executed.append(result)
                if self.listener is not None:
                    try:
                        self.listener(account_id, result)
                    except Exception:
                        log.exception("reporting a package execution failed")
            for period, subscription_id in subscriptions.due(engine, at):
                renewed = await self.sequencer.submit(RenewSubscription(subscription_id, period))
                progress = progress or isinstance(renewed, Done)
            if not progress:
                return executed

    async def sweep(self) -> None:
        """Free the reservations past their deadline (and lapse expired quotas)."""
        await self.sequencer.submit(ExpireReservations())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_seconds
        while True:
            try:
                await self.run_due()
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self.sweep_seconds
                    await self.sweep()
            except Unavailable as exc:
                log.info("period scheduler waiting: %s", exc)
            except Exception:
                # The scheduler must outlive any one bad round: the next one starts from the engine afresh.
                log.exception("period scheduler round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
