"""A buyer's side of delivery: what is left of the account's quotas of tokens, and its inference calls
(``exchange.quotas``). Providers, what they delivered and owe, and their measured effect are
``api.routes.providers``.
"""

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints, id_page
from api.routes.providers import delivery_fields
from exchange.database.queries import sql

buyers = Endpoints("delivery")

QUOTAS = sql("account_quotas")
USAGE = sql("account_usage")


class Quota(Struct):
    symbol: str
    source: Annotated[str, Meta(description="Where the tokens came from: redemption, subscription:<id>")]
    granted: int
    reserved: Annotated[int, Meta(description="Held by calls under way.")]
    used: int
    lapsed: int
    remaining: int
    expires_at: datetime | None
    updated_at: datetime


class QuotaList(Struct):
    items: list[Quota]


class Usage(schemas.Delivery):
    """One attempt of one of this account's inference calls."""

    reservation_id: Annotated[int, Meta(description="The tokex-reservation header of the call's answer.")]
    provider_id: int


class UsagePage(Struct):
    items: list[Usage]
    next_cursor: str | None


@buyers.route("GET", "/v1/quotas", summary="Own quotas", scope=("read", "inference"), response=QuotaList)
async def quotas(call: Call) -> QuotaList:
    """What is left of this account's quotas of tokens, per instrument and source. An inference key may read it
    too."""
    async with call.services.connection() as conn:
        rows = await conn.fetch(QUOTAS, call.account_id)
    return QuotaList([Quota(**row) for row in rows])


@buyers.route("GET", "/v1/usage", summary="Own inference calls", scope=("read", "inference"), query=schemas.PageQuery,
              response=UsagePage, errors=("invalid_cursor",))
async def usage(call: Call) -> UsagePage:
    """This account's inference calls, newest first: one row per attempt on a provider, with the tokens charged
    (failed attempts charge none). An inference key may read it too."""
    rows, next_cursor = await id_page(call, USAGE, call.account_id)
    return UsagePage([Usage(*delivery_fields(row), row["provider_id"]) for row in rows], next_cursor)
