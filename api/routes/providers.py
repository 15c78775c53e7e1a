"""Providers (issuers serving their compute instruments over an OpenAI-compatible upstream), their deliveries and
obligations (``exchange.delivery``); their measured effect is ``api.routes.provider_stats``, buyers' quotas
``api.routes.quotas``.

A provider registers its upstream with ``POST /v1/providers``; the credential is sealed with the master key
(``api.credentials``) before it reaches the exchange and is never shown again. ``GET /v1/providers`` shows an
issuer's providers with what each delivered and still owes; the deliveries (one row per attempt of a call) and
the redemptions of the instrument are pages of their own.
"""

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api import schemas
from api.credentials import seal
from api.endpoints import Call, Endpoints, id_page
from api.problems import Problem
from exchange.commands import ProviderView, RegisterProvider
from exchange.database.queries import sql

providers = Endpoints("delivery")

PROVIDER_ID = {"provider_id": (schemas.Id, "unknown_provider")}
BaseUrl = Annotated[str, schemas.whole(r"https?://[^\s\x00]{1,500}",
                                       description="The upstream's OpenAI base URL, to which /chat/completions is "
                                                   "appended.", examples=["https://api.example.com/v1"])]

PROVIDERS = sql("account_providers")
DELIVERIES = sql("provider_deliveries")
REDEMPTIONS = sql("provider_redemptions")


class NewProvider(schemas.Request):
    symbol: schemas.Symbol
    base_url: BaseUrl
    model: Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$",
                               description="The model name the upstream expects.")]
    api_key: Annotated[str, Meta(max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$",
                                 description="The upstream's credential, sent as its bearer token; empty for none. "
                                             "Stored encrypted and never shown again.")] = ""


class Provider(Struct):
    id: int
    account_id: int
    symbol: str
    base_url: str
    model: str
    delivered: Annotated[int, Meta(description="Tokens delivered.")]
    obligation: Annotated[int, Meta(description="Tokens minted (lots x tokens per lot) less tokens delivered.")]
    created_at: datetime
    updated_at: datetime


class ProviderList(Struct):
    items: list[Provider]


class DeliveryPage(Struct):
    items: list[schemas.Delivery]
    next_cursor: str | None


def delivery_fields(row) -> tuple:
    """The fields of a ``Delivery`` from a row of an attempt, in milliseconds where the row has microseconds."""
    return (row["id"], row["reservation_id"], row["symbol"], row["prompt_tokens"], row["completion_tokens"],
            row["ttft_us"] / 1000, row["latency_us"] / 1000, row["status"], row["created_at"])


def provider_from(view: ProviderView) -> Provider:
    return Provider(view.id, view.account_id, view.symbol, view.base_url, view.model, view.delivered,
                    view.obligation, view.created_at, view.updated_at)


@providers.route("POST", "/v1/providers", summary="Register an upstream", scope="issue", body=NewProvider,
                 response=Provider, status=201,
                 errors=("unknown_instrument", "not_compute", "not_approved", "invalid_provider"))
async def register_provider(call: Call) -> Provider:
    """Serve a compute instrument this issuer is approved for from an OpenAI-compatible upstream; again to change
    it. The credential is stored encrypted and never shown again."""
    body: NewProvider = call.body
    sealed = seal(call.services.keys.master_key, body.symbol, body.api_key)
    view = await call.submit(RegisterProvider(call.account_id, body.symbol, body.base_url, body.model, sealed))
    assert isinstance(view, ProviderView)
    return provider_from(view)


@providers.route("GET", "/v1/providers", summary="Own providers", scope="read", response=ProviderList)
async def list_providers(call: Call) -> ProviderList:
    """This issuer's providers, with the tokens each delivered and still owes."""
    async with call.services.connection() as conn:
        rows = await conn.fetch(PROVIDERS, call.account_id)
    return ProviderList([Provider(**row) for row in rows])


async def own_provider(call: Call) -> dict:
    """The provider of the path, when it is this account's; its row."""
    provider_id = call.params["provider_id"]
    async with call.services.connection() as conn:
        rows = await conn.fetch(PROVIDERS, call.account_id)
    for row in rows:
        if row["id"] == provider_id:
            return dict(row)
    raise Problem("unknown_provider", field="provider_id")


@providers.route("GET", "/v1/providers/{provider_id}/deliveries", summary="A provider's deliveries", scope="read",
                 query=schemas.PageQuery, response=DeliveryPage, params=PROVIDER_ID, errors=("unknown_provider",))
async def deliveries(call: Call) -> DeliveryPage:
    """Every attempt of a call on this provider, newest first: tokens delivered, time to first token, latency."""
    provider = await own_provider(call)
    rows, next_cursor = await id_page(call, DELIVERIES, provider["id"])
    return DeliveryPage([schemas.Delivery(*delivery_fields(row)) for row in rows], next_cursor)


@providers.route("GET", "/v1/providers/{provider_id}/redemptions", summary="Redemptions a provider serves",
                 scope="read", query=schemas.PageQuery, response=schemas.RedemptionPage, params=PROVIDER_ID,
                 errors=("unknown_provider",))
async def provider_redemptions(call: Call) -> schemas.RedemptionPage:
    """The redemptions of the instrument this provider serves, newest first: the tokens buyers may now call for.
    Buyers are not named."""
    provider = await own_provider(call)
    rows, next_cursor = await id_page(call, REDEMPTIONS, provider["id"])
    return schemas.RedemptionPage([schemas.Redemption(**row) for row in rows], next_cursor)
