"""The token price index of each substitution group: the latest values and their history.

``GET /v1/indices`` answers the newest value of every group the minute job (``exchange.indexer``) has computed;
``GET /v1/indices/{group}/history`` its values over time, one per bin of ``interval`` (``1m``, ``5m``, ``1h``,
``1d``; bins start at whole UTC minutes, hours and days): the value as of the last minute computed in the bin.
Pages go newest first (``order=desc``, the default) or oldest first; ``cursor`` is the ``next_cursor`` of the
previous page; ``start`` and ``end`` (RFC 3339 with a zone, end exclusive) bound the minute ``at``. Only bins
with a computed minute are listed: a stretch when no server ran is missing, not invented.

Each value is in CNY per 1M tokens, a decimal string exact to the micro-yuan, and null when the group is stale
(no trade in the 24 hours before ``at``). How it is computed is in ``exchange.price_index`` and the README.
The feed's ``index`` channel sends the same object as each minute is computed.
"""

from datetime import UTC, datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints
from api.problems import Problem
from exchange.database.queries import sql
from exchange.indexer import LATEST, row_of

indices = Endpoints("price index")

Group = Annotated[str, Meta(min_length=1, max_length=2000, pattern=schemas.TEXT_PATTERN,
                            description="A substitution group of compute instruments.", examples=["chat-general"])]
GROUP = {"group": (Group, "unknown_group")}
BinCursor = Annotated[str, schemas.whole(r"[0-9]{1,11}", description="Opaque: the next_cursor of the previous page.")]


class PriceIndexList(Struct):
    items: list[schemas.PriceIndex]


class IndexHistoryQuery(schemas.Request):
    interval: schemas.Interval = "1m"
    order: Literal["desc", "asc"] = "desc"
    start: schemas.Time | None = None
    end: schemas.Time | None = None
    cursor: BinCursor | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 300


class IndexBin(Struct):
    start: Annotated[datetime, Meta(description="The start of the bin.")]
    index: Annotated[schemas.PriceIndex, Meta(description="The value as of the last minute computed in the bin.")]


class IndexHistory(Struct):
    group: str
    interval: schemas.Interval
    items: list[IndexBin]
    next_cursor: str | None


GROUP_LISTED = sql("group_listed")
HISTORY_DESC = sql("index_history_desc")
HISTORY_ASC = sql("index_history_asc")


@indices.route("GET", "/v1/indices", summary="Token price indices", response=PriceIndexList)
async def list_indices(call: Call) -> PriceIndexList:
    """The newest value of each substitution group's token price index, by group, with its stale flag."""
    async with call.services.read_connection() as conn:
        records = await conn.fetch(LATEST)
    return PriceIndexList([schemas.price_index(row_of(record)) for record in records])


@indices.route("GET", "/v1/indices/{group}/history", summary="Token price index history", query=IndexHistoryQuery,
               response=IndexHistory, errors=("unknown_group", "invalid_cursor", "out_of_range"), params=GROUP)
async def index_history(call: Call) -> IndexHistory:
    """One value per bin of ``interval`` (the last minute computed in it), newest first unless ``order=asc``."""
    query: IndexHistoryQuery = call.query
    interval = schemas.INTERVALS[query.interval]
    if query.start is not None and query.end is not None and query.end <= query.start:
        raise Problem("out_of_range", "end must be after start.", field="end")
    low, high = query.start, query.end
    if query.cursor is not None:
        # A cursor is the start of the last bin of the previous page, in Unix seconds: a multiple of the interval
        # (ORIGIN is a whole UTC day), and at most 11 digits, so it is always a representable time.
        if int(query.cursor) % int(interval.total_seconds()):
            raise Problem("invalid_cursor", f"Pass the next_cursor of the previous page, of the same interval "
                                            f"({query.interval}), as it was.")
        last = datetime.fromtimestamp(int(query.cursor), UTC)
        if query.order == "desc":
            high = last if high is None else min(high, last)
        else:
            low = last + interval if low is None else max(low, last + interval)
    group = call.params["group"]
    async with call.services.read_connection() as conn:
        if not await conn.fetchval(GROUP_LISTED, group):
            raise Problem("unknown_group", field="group")
        records = await conn.fetch(HISTORY_ASC if query.order == "asc" else HISTORY_DESC, group, interval,
                                   schemas.ORIGIN, low, high, query.limit + 1)
    items = [IndexBin(record["bin"], schemas.price_index(row_of({k: v for k, v in record.items() if k != "bin"})))
             for record in records[: query.limit]]
    more = len(records) > query.limit
    return IndexHistory(group, query.interval, items,
                        str(int(items[-1].start.timestamp())) if more else None)
