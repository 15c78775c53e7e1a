"""Stopping the server's background tasks."""

import asyncio
import contextlib


async def cancel(task: asyncio.Future | None) -> None:
    """Cancel ``task`` (None: there is none) and wait until it has stopped."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
