"""Lists the API pages with ``limit`` and ``cursor``, read to the end."""

from collections.abc import Awaitable, Callable
from typing import Any


async def every_item(fetch: Callable[..., Awaitable[dict]], **query: Any) -> list[dict]:
    """Every item of a paged list, following ``next_cursor``: ``await every_item(client.fills, limit=2)``."""
    items: list[dict] = []
    cursor = None
    while True:
        page = await fetch(**query, cursor=cursor)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
