"""Background tasks: the loops a long-lived part (the scheduler, a gateway's shared limits, an engine's roles) runs
beside its callers.

Such a loop runs until cancelled. Stopping it is always the same two steps: cancel it, then wait for it to end,
so that nothing of it still runs once its owner's ``stop`` returns; its ``CancelledError`` is the expected end.
"""

import asyncio
import contextlib


async def cancel(task: asyncio.Future | None) -> None:
    """Cancel ``task`` (None: there is none) and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
