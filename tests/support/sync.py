"""Run a coroutine from sync code (fixtures, schemathesis, Hypothesis) without touching pytest-asyncio's loop."""

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any


def run_sync(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run the coroutine ``make()`` to completion on its own thread and event loop; return its result.

    A thread keeps it clear of whatever loop pytest-asyncio has set up on the main thread.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
