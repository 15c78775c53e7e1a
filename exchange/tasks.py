"""Background tasks: the loops a long-lived part (the scheduler, a broker's heartbeat, a feed) runs beside its callers.

Such a loop runs until cancelled. Stopping it is always the same two steps: cancel it, then wait for it to end,
so that nothing of it still runs once its owner's ``stop`` returns; its ``CancelledError`` is the expected end.
"""

import asyncio
import contextlib


async def stop(task: asyncio.Task | None) -> None:
    """Cancel ``task`` and wait until it has ended (nothing to do when None)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
