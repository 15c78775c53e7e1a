"""A small async client for the tokex API that signs its requests.

    async with Client("http://127.0.0.1:8000", key_id, secret) as client:
        order = await client.place_order("DEEPSEEK-V3", "buy", price="1.85", qty=10)
        book = await client.book("DEEPSEEK-V3", depth=5)

Each helper returns the decoded JSON body and raises ``ApiError`` (with the problem's ``status``, ``code``,
``detail`` and ``field``) for any error answer. ``request`` is the raw form: it returns the ``httpx.Response``
whatever its status, for callers that want to look at errors themselves. A client without a key sends
unsigned requests, which only public endpoints accept.

``transport`` passes through to httpx, e.g. ``httpx.ASGITransport(app)`` to call an app in-process.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterable, Generator
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from api.signing import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature


class Signer(httpx.Auth):
    """httpx authentication that signs each request with an API key."""

    def __init__(self, key_id: str, secret: str, clock=time.time) -> None:
        self.key_id = key_id
        self.secret = secret
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # Microseconds: the same body sent twice in a second is two requests, not a replay (``api.auth``).
        timestamp = f"{self.clock():.6f}"
        request.headers[KEY_HEADER] = self.key_id
        request.headers[TIMESTAMP_HEADER] = timestamp
        request.headers[SIGNATURE_HEADER] = signature(self.secret, timestamp, request.method, request.url.raw_path,
                                                      request.content)
        yield request


class ApiError(Exception):
    """An error answer: ``status`` and the problem's ``code``, ``detail`` and ``field``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code = problem.get("code", "")
        self.detail = problem.get("detail", "")
        self.field = problem.get("field")
        super().__init__(f"{status} {self.code}: {self.detail}")


def _params(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _decoded(response: httpx.Response) -> Any:
    """The decoded body of a success; raise ``ApiError`` for an error answer."""
    body = msgspec.json.decode(response.content) if response.content else None
    if response.is_error:
        raise ApiError(response.status_code, body if isinstance(body, dict) else {"detail": response.text})
    return body


class Client:
    """Signed calls to one tokex server."""

    def __init__(self, base_url: str, key_id: str | None = None, secret: str | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.transport = transport
        self.timeout = timeout
        self.signer = Signer(key_id, secret) if key_id and secret else None
        self.http = httpx.AsyncClient(base_url=base_url, auth=self.signer, transport=transport, timeout=timeout)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    def with_key(self, key_id: str, secret: str) -> Client:
        """Another client for the same server and transport, signing with another key."""
        return Client(self.base_url, key_id, secret, transport=self.transport, timeout=self.timeout)

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                      content: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """Send one request as it is; return the response whatever its status."""
        if json is not None:
            content = msgspec.json.encode(json)
            headers = {"Content-Type": "application/json", **(headers or {})}
        return await self.http.request(method, path, params=_params(params or {}), content=content, headers=headers)

    async def call(self, method: str, path: str, **options: Any) -> Any:
        """Send one request; return the decoded body of a success, raise ``ApiError`` otherwise."""
        return _decoded(await self.request(method, path, **options))

    async def upload(self, path: str, content: bytes | AsyncIterable[bytes]) -> httpx.Response:
        """PUT ``content`` (streamed when it is an async iterable) to ``path``, signed over an empty body as
        streamed uploads are (``path`` carries what binds the bytes, e.g. their SHA-256)."""
        request = self.http.build_request("PUT", path, content=content)
        if self.signer is not None:
            timestamp = f"{self.signer.clock():.6f}"
            request.headers[KEY_HEADER] = self.signer.key_id
            request.headers[TIMESTAMP_HEADER] = timestamp
            request.headers[SIGNATURE_HEADER] = signature(self.signer.secret, timestamp, "PUT", request.url.raw_path,
                                                          b"")
        return await self.http.send(request, auth=None)

    # Public market data

    async def instruments(self) -> list[dict]:
        return (await self.call("GET", "/v1/instruments"))["items"]

    async def instrument(self, symbol: str) -> dict:
        return await self.call("GET", f"/v1/instruments/{symbol}")

    async def book(self, symbol: str, depth: int | None = None) -> dict:
        return await self.call("GET", f"/v1/instruments/{symbol}/book", params={"depth": depth})

    async def ticker(self, symbol: str) -> dict:
        return await self.call("GET", f"/v1/instruments/{symbol}/ticker")

    async def instrument_fees(self, symbol: str) -> dict:
        return await self.call("GET", f"/v1/instruments/{symbol}/fees")

    async def indices(self) -> dict[str, dict]:
        """The newest token price index by substitution group."""
        return {i["group"]: i for i in (await self.call("GET", "/v1/indices"))["items"]}

    async def index_history(self, group: str, **query: Any) -> dict:
        return await self.call("GET", f"/v1/indices/{quote(group, safe='')}/history", params=query)

    # Own account

    async def me(self) -> dict:
        return await self.call("GET", "/v1/accounts/me")

    async def balances(self) -> dict[str, dict]:
        """Balances by asset: {"CNY": {"asset": "CNY", "available": "100", "held": "0"}, ...}."""
        return {b["asset"]: b for b in (await self.call("GET", "/v1/balances"))["items"]}

    async def ledger(self, **query: Any) -> dict:
        return await self.call("GET", "/v1/ledger", params=query)

    async def fees(self) -> dict:
        """Own fee tier, trailing 30-day volume and what the next tier needs."""
        return await self.call("GET", "/v1/accounts/me/fees")

    async def keys(self) -> list[dict]:
        return (await self.call("GET", "/v1/keys"))["items"]

    async def revoke_key(self, key_id: str) -> dict:
        return await self.call("DELETE", f"/v1/keys/{key_id}")

    # Orders

    async def place_order(self, symbol: str, side: str, *, qty: int | None = None, price: str | None = None,
                          type: str = "limit", **options: Any) -> dict:
        body = _params({"symbol": symbol, "side": side, "type": type, "qty": qty, "price": price, **options})
        return await self.call("POST", "/v1/orders", json=body)

    async def orders(self, **query: Any) -> dict:
        return await self.call("GET", "/v1/orders", params=query)

    async def order(self, order_id: int) -> dict:
        return await self.call("GET", f"/v1/orders/{order_id}")

    async def order_by_client_id(self, client_order_id: str) -> dict:
        return await self.call("GET", f"/v1/orders/by-client-id/{client_order_id}")

    async def cancel_order(self, order_id: int) -> dict:
        return await self.call("DELETE", f"/v1/orders/{order_id}")

    async def cancel_all(self, symbol: str) -> list[int]:
        return (await self.call("DELETE", "/v1/orders", params={"symbol": symbol}))["order_ids"]

    async def amend_order(self, order_id: int, *, price: str | None = None, qty: int | None = None) -> dict:
        return await self.call("PATCH", f"/v1/orders/{order_id}", json=_params({"price": price, "qty": qty}))

    async def fills(self, **query: Any) -> dict:
        return await self.call("GET", "/v1/fills", params=query)

    # Routed orders and packages

    async def route_order(self, group: str, side: str, qty: int, mode: str, *, price: str | None = None,
                          budget: str | None = None, rest_remainder: bool = False,
                          client_order_id: str | None = None) -> dict:
        body = _params({"group": group, "side": side, "qty": qty, "mode": mode, "price": price, "budget": budget,
                        "rest_remainder": rest_remainder, "client_order_id": client_order_id})
        return await self.call("POST", "/v1/routed-orders", json=body)

    async def routed_orders(self, **query: Any) -> dict:
        return await self.call("GET", "/v1/routed-orders", params=query)

    async def routed_order(self, routed_order_id: int) -> dict:
        return await self.call("GET", f"/v1/routed-orders/{routed_order_id}")

    async def routed_quote(self, group: str, side: str, qty: int, mode: str, *, price: str | None = None,
                           budget: str | None = None, rest_remainder: bool = False) -> dict:
        params = {"group": group, "side": side, "qty": qty, "mode": mode, "price": price, "budget": budget,
                  "rest_remainder": "true" if rest_remainder else None}
        return await self.call("GET", "/v1/routed-quote", params=params)

    async def create_package(self, group: str, qty: int, mode: str, period: str, max_cost: str, start_at: str, *,
                             price: str | None = None, client_request_id: str | None = None) -> dict:
        body = _params({"group": group, "qty": qty, "mode": mode, "period": period, "max_cost": max_cost,
                        "start_at": start_at, "price": price, "client_request_id": client_request_id})
        return await self.call("POST", "/v1/packages", json=body)

    async def packages(self) -> list[dict]:
        return (await self.call("GET", "/v1/packages"))["items"]

    async def package(self, package_id: int) -> dict:
        return await self.call("GET", f"/v1/packages/{package_id}")

    async def pause_package(self, package_id: int) -> dict:
        return await self.call("POST", f"/v1/packages/{package_id}/pause")

    async def resume_package(self, package_id: int) -> dict:
        return await self.call("POST", f"/v1/packages/{package_id}/resume")

    async def cancel_package(self, package_id: int) -> dict:
        return await self.call("POST", f"/v1/packages/{package_id}/cancel")

    async def package_executions(self, package_id: int, **query: Any) -> dict:
        return await self.call("GET", f"/v1/packages/{package_id}/executions", params=query)

    # Tokens

    async def mint(self, symbol: str, qty: int, client_request_id: str | None = None) -> dict:
        body = _params({"symbol": symbol, "qty": qty, "client_request_id": client_request_id})
        return await self.call("POST", "/v1/mints", json=body)

    async def burn(self, symbol: str, qty: int, client_request_id: str | None = None) -> dict:
        body = _params({"symbol": symbol, "qty": qty, "client_request_id": client_request_id})
        return await self.call("POST", "/v1/burns", json=body)

    async def redeem(self, symbol: str, qty: int, client_request_id: str | None = None,
                     terms_version: int | None = None) -> dict:
        body = _params({"symbol": symbol, "qty": qty, "client_request_id": client_request_id,
                        "terms_version": terms_version})
        return await self.call("POST", "/v1/redemptions", json=body)

    # Datasets

    async def terms(self, symbol: str, version: int | None = None) -> dict:
        return await self.call("GET", f"/v1/instruments/{symbol}/terms", params={"version": version})

    async def publish_terms(self, symbol: str, *, permitted_use: list[str], redistribution: bool, text: str,
                            attribution: str | None = None, days_per_token: int | None = None,
                            downloads_per_token: int | None = None) -> dict:
        body = _params({"permitted_use": permitted_use, "redistribution": redistribution, "text": text,
                        "attribution": attribution, "days_per_token": days_per_token,
                        "downloads_per_token": downloads_per_token})
        return await self.call("POST", f"/v1/instruments/{symbol}/terms", json=body)

    async def dataset_files(self, symbol: str) -> list[dict]:
        return (await self.call("GET", f"/v1/instruments/{symbol}/files"))["items"]

    async def upload_file(self, symbol: str, name: str, content: bytes | AsyncIterable[bytes],
                          sha256: str | None = None) -> dict:
        """Store a file of a dataset this account issues; ``sha256`` (hex) is needed when ``content`` streams."""
        if sha256 is None:
            assert isinstance(content, bytes), "give the sha256 of streamed content"
            sha256 = hashlib.sha256(content).hexdigest()
        return _decoded(await self.upload(f"/v1/instruments/{symbol}/files/{quote(name)}?sha256={sha256}", content))

    async def dataset_grants(self, **query: Any) -> dict:
        return await self.call("GET", "/v1/dataset-grants", params=query)

    async def dataset_downloads(self, **query: Any) -> dict:
        return await self.call("GET", "/v1/dataset-downloads", params=query)

    async def download_link(self, file_id: int, expires_in: int | None = None) -> dict:
        return await self.call("GET", f"/v1/dataset-files/{file_id}/link", params={"expires_in": expires_in})

    # Subscriptions

    async def publish_subscription_offer(self, symbol: str, tokens_per_period: int, period: str, price: str) -> dict:
        body = {"symbol": symbol, "tokens_per_period": tokens_per_period, "period": period, "price": price}
        return await self.call("POST", "/v1/subscription-offers", json=body)

    async def subscription_offers(self, symbol: str | None = None) -> list[dict]:
        return (await self.call("GET", "/v1/subscription-offers", params={"symbol": symbol}))["items"]

    async def withdraw_subscription_offer(self, offer_id: int) -> dict:
        return await self.call("POST", f"/v1/subscription-offers/{offer_id}/withdraw")

    async def subscribe(self, offer_id: int, client_request_id: str | None = None) -> dict:
        body = _params({"offer_id": offer_id, "client_request_id": client_request_id})
        return await self.call("POST", "/v1/subscriptions", json=body)

    async def subscriptions(self) -> list[dict]:
        return (await self.call("GET", "/v1/subscriptions"))["items"]

    async def subscription(self, subscription_id: int) -> dict:
        return await self.call("GET", f"/v1/subscriptions/{subscription_id}")

    async def cancel_subscription(self, subscription_id: int) -> dict:
        return await self.call("POST", f"/v1/subscriptions/{subscription_id}/cancel")

    async def subscription_periods(self, subscription_id: int, **query: Any) -> dict:
        return await self.call("GET", f"/v1/subscriptions/{subscription_id}/periods", params=query)

    async def redemptions(self, **query: Any) -> dict:
        return await self.call("GET", "/v1/redemptions", params=query)

    # Delivery: providers (issuers) and quotas (buyers)

    async def register_provider(self, symbol: str, base_url: str, model: str, api_key: str = "") -> dict:
        return await self.call("POST", "/v1/providers", json={"symbol": symbol, "base_url": base_url, "model": model,
                                                              "api_key": api_key})

    async def providers(self) -> list[dict]:
        return (await self.call("GET", "/v1/providers"))["items"]

    async def deliveries(self, provider_id: int, **query: Any) -> dict:
        return await self.call("GET", f"/v1/providers/{provider_id}/deliveries", params=query)

    async def provider_redemptions(self, provider_id: int, **query: Any) -> dict:
        return await self.call("GET", f"/v1/providers/{provider_id}/redemptions", params=query)

    async def provider_stats(self) -> dict:
        return await self.call("GET", "/v1/providers/stats")

    async def quotas(self) -> list[dict]:
        return (await self.call("GET", "/v1/quotas"))["items"]

    async def usage(self, **query: Any) -> dict:
        return await self.call("GET", "/v1/usage", params=query)

    # Admin

    async def create_account(self, name: str, role: str) -> dict:
        return await self.call("POST", "/v1/accounts", json={"name": name, "role": role})

    async def create_key(self, account_id: int, scopes: list[str], label: str = "") -> dict:
        return await self.call("POST", "/v1/keys", json={"account_id": account_id, "scopes": scopes, "label": label})

    async def create_instrument(self, **attributes: Any) -> dict:
        return await self.call("POST", "/v1/instruments", json=attributes)

    async def halt(self, symbol: str) -> dict:
        return await self.call("POST", f"/v1/instruments/{symbol}/halt")

    async def resume(self, symbol: str) -> dict:
        return await self.call("POST", f"/v1/instruments/{symbol}/resume")

    async def deposit(self, account_id: int, amount: str, client_request_id: str | None = None) -> dict:
        body = _params({"account_id": account_id, "amount": amount, "client_request_id": client_request_id})
        return await self.call("POST", "/v1/deposits", json=body)

    async def withdraw(self, account_id: int, amount: str, client_request_id: str | None = None) -> dict:
        body = _params({"account_id": account_id, "amount": amount, "client_request_id": client_request_id})
        return await self.call("POST", "/v1/withdrawals", json=body)

    async def approve_issuer(self, account_id: int, symbol: str, capacity: int) -> dict:
        return await self.call("POST", "/v1/issuer-approvals",
                               json={"account_id": account_id, "symbol": symbol, "capacity": capacity})
