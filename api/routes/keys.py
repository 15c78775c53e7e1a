"""API keys over HTTP: an admin creates and revokes them; an account lists its own.

Revoking needs the ``admin`` scope: a ``read`` key only reads, and a leaked read key must not be able to take
the account's trading keys away."""

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints
from api.keys import KeyRow, ReplayedRequest, ScopeNotAllowed, UnknownAccount
from api.problems import Problem

keys = Endpoints("keys")

KeyId = Annotated[str, schemas.whole(r"tk_[0-9a-f]{16}", description="The public id of an API key.")]


class NewKey(schemas.Request):
    account_id: schemas.Id
    scopes: Annotated[list[schemas.Scope], Meta(min_length=1, max_length=4)]
    label: schemas.Label = ""


class ApiKey(Struct):
    id: str
    account_id: int
    scopes: list[schemas.Scope]
    label: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyList(Struct):
    items: list[ApiKey]


class CreatedApiKey(ApiKey):
    secret: str
    """Shown once: it signs requests. The exchange cannot show it again."""


def api_key(row: KeyRow) -> ApiKey:
    return ApiKey(row.id, row.account_id, row.scopes, row.label, row.created_at, row.revoked_at)


@keys.route("POST", "/v1/keys", summary="Create an API key", scope="admin", body=NewKey, response=CreatedApiKey,
            status=201, errors=("unknown_account", "invalid_scope"))
async def create_key(call: Call) -> CreatedApiKey:
    """Create a key for any account. The secret is in this answer only: store it now."""
    body = call.body
    try:
        row, secret = await call.services.keys.create(body.account_id, body.scopes, body.label, call.signed)
    except ReplayedRequest:
        raise Problem("replayed_request") from None
    except UnknownAccount:
        raise Problem("unknown_account", field="account_id") from None
    except ScopeNotAllowed as exc:
        raise Problem("invalid_scope", str(exc)) from None
    return CreatedApiKey(row.id, row.account_id, row.scopes, row.label, row.created_at, row.revoked_at, secret)


@keys.route("GET", "/v1/keys", summary="Own API keys", scope="read", response=ApiKeyList)
async def list_keys(call: Call) -> ApiKeyList:
    """This account's keys, revoked ones included; never their secrets."""
    return ApiKeyList([api_key(row) for row in await call.services.keys.list(call.account_id)])


@keys.route("DELETE", "/v1/keys/{key_id}", summary="Revoke an API key", scope="admin", response=ApiKey,
            errors=("unknown_key",), params={"key_id": (KeyId, "unknown_key")})
async def revoke_key(call: Call) -> ApiKey:
    """Revoke any account's key. Revoking twice changes nothing."""
    try:
        row = await call.services.keys.revoke(call.params["key_id"], None, call.signed)
    except ReplayedRequest:
        raise Problem("replayed_request") from None
    if row is None:
        raise Problem("unknown_key", field="key_id")
    return api_key(row)
