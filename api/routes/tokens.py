"""Tokens in and out of existence: issuer approval (admin), mint and burn (issuer), redemption (holder)."""

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api import schemas
from api.endpoints import Call, Endpoints, id_page
from api.routes.reads import movement
from exchange.commands import ApproveIssuer, Burn, Mint, Redeem
from exchange.database.queries import sql


class NewIssuerApproval(schemas.Request):
    account_id: schemas.Id
    symbol: schemas.Symbol
    capacity: Annotated[int, Meta(ge=0, le=schemas.MAX_QTY, description="Lots the issuer may have minted at once.")]


class TokenQty(schemas.Request):
    """Lots of one instrument to mint, burn or redeem, in the key's own account."""

    symbol: schemas.Symbol
    qty: schemas.Qty
    client_request_id: schemas.ClientRequestId | None = None
    """Unique per account and kind (mint, burn, redemption)."""


class NewRedemption(TokenQty):
    """Lots to redeem from the key's own account; redeeming dataset tokens accepts their license terms."""

    terms_version: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None
    """Dataset tokens only, and required for them: the version of the terms shown at
    ``GET /v1/instruments/{symbol}/terms``, which redeeming accepts."""


class IssuerApproval(Struct):
    account_id: int
    symbol: str
    capacity: int
    issued: int
    approved_at: datetime


tokens = Endpoints("issuance")

APPROVAL = sql("issuer_approval")
REDEMPTION = sql("redemption_by_id")
REDEMPTIONS = sql("redemptions_page")


@tokens.route("POST", "/v1/issuer-approvals", summary="Approve an issuer", scope="admin",
              body=NewIssuerApproval, response=IssuerApproval, status=201,
              errors=("unknown_account", "unknown_instrument", "not_permitted", "capacity_below_issued"))
async def approve_issuer(call: Call) -> IssuerApproval:
    """Let an issuer mint an instrument up to ``capacity`` lots outstanding; again to change the capacity."""
    body = call.body
    await call.submit(ApproveIssuer(body.account_id, body.symbol, body.capacity))
    async with call.services.connection() as conn:
        row = await conn.fetchrow(APPROVAL, body.account_id, body.symbol)
    return IssuerApproval(**row)


@tokens.route("POST", "/v1/mints", summary="Mint tokens", scope="issue", body=TokenQty,
              response=schemas.Movement, status=201,
              errors=("unknown_instrument", "not_approved", "over_capacity", "over_supply_cap"))
async def mint(call: Call) -> schemas.Movement:
    """Create lots into the issuer's own available balance, within its approved capacity and the supply cap.
    Sending a ``client_request_id`` again returns the original mint and changes nothing."""
    body: TokenQty = call.body
    done = await call.submit(Mint(call.account_id, body.symbol, body.qty, body.client_request_id))
    return await movement(call, call.account_id, done.id)


@tokens.route("POST", "/v1/burns", summary="Burn tokens", scope="issue", body=TokenQty,
              response=schemas.Movement, status=201,
              errors=("unknown_instrument", "not_approved", "insufficient_tokens"))
async def burn(call: Call) -> schemas.Movement:
    """Destroy unsold lots from the issuer's own available balance. Sending a ``client_request_id`` again
    returns the original burn and changes nothing."""
    body: TokenQty = call.body
    done = await call.submit(Burn(call.account_id, body.symbol, body.qty, body.client_request_id))
    return await movement(call, call.account_id, done.id)


@tokens.route("POST", "/v1/redemptions", summary="Redeem tokens", scope="trade", body=NewRedemption,
              response=schemas.Redemption, status=201,
              errors=("unknown_instrument", "insufficient_tokens", "not_a_dataset", "no_terms", "terms_not_accepted",
                      "terms_changed", "grant_too_large"))
async def redeem(call: Call) -> schemas.Redemption:
    """Consume lots held in this account. Dataset tokens need ``terms_version``: redeeming accepts those terms
    and makes an access grant with the redemption's id (``GET /v1/dataset-grants``). Sending a
    ``client_request_id`` again returns the original redemption and changes nothing."""
    body: NewRedemption = call.body
    done = await call.submit(Redeem(call.account_id, body.symbol, body.qty, body.client_request_id,
                                    body.terms_version))
    async with call.services.connection() as conn:
        row = await conn.fetchrow(REDEMPTION, done.id)
    return schemas.Redemption(**row)


@tokens.route("GET", "/v1/redemptions", summary="Own redemptions", scope="read", query=schemas.PageQuery,
              response=schemas.RedemptionPage, errors=("invalid_cursor",))
async def redemptions(call: Call) -> schemas.RedemptionPage:
    """This account's redemptions, newest first."""
    rows, next_cursor = await id_page(call, REDEMPTIONS, call.account_id, replica=True)
    return schemas.RedemptionPage([schemas.Redemption(**row) for row in rows], next_cursor)
