"""What the schemathesis fuzzers share: the checks, requests signed as schemathesis sends them, and funded accounts
on a live server that generated requests are steered to, so that generated orders really trade."""

import time

import httpx
import requests
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.client import Signer
from api.signing import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests.support.api_server import Live

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


class RequestsSigner(requests.auth.AuthBase):
    """Sign a request sent with ``requests``, as schemathesis does."""

    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id = key_id
        self.secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        timestamp = str(int(time.time()))
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        request.headers[KEY_HEADER] = self.key_id
        request.headers[TIMESTAMP_HEADER] = timestamp
        request.headers[SIGNATURE_HEADER] = signature(self.secret, timestamp, request.method, request.path_url, body)
        return request


class Fuzz:
    """The accounts set up for fuzzing: a signer per scope, and the ids generated requests are steered to."""

    def __init__(self, signers: dict[str, list[RequestsSigner]], account_ids: list[int]) -> None:
        self.signers = signers
        self.account_ids = account_ids
        self.calls = 0

    def signer(self, scope: str) -> RequestsSigner:
        """A key with ``scope``; trading alternates between the trader and the issuer, so orders can cross."""
        choices = self.signers[scope]
        return choices[self.calls // 2 % len(choices)]

    def steer(self, case) -> None:
        """On every other call, point the case at things that exist, so that the exchange really acts on it."""
        self.calls += 1
        if self.calls % 2:
            return
        if "symbol" in (case.path_parameters or {}):
            case.path_parameters["symbol"] = SYMBOL
        if isinstance(case.query, dict) and "symbol" in case.query:
            case.query["symbol"] = SYMBOL
        if isinstance(case.body, dict):
            if isinstance(case.body.get("symbol"), str):
                case.body["symbol"] = SYMBOL
            if isinstance(case.body.get("account_id"), int):
                case.body["account_id"] = self.account_ids[self.calls // 2 % len(self.account_ids)]


SYMBOL = "FUZZ"


def set_up_fuzz(live: Live) -> Fuzz:
    """Accounts with cash, an instrument and tokens on ``live``, and a signer per scope."""
    with httpx.Client(base_url=live.url, auth=Signer(live.admin_key, live.admin_secret)) as admin:
        def call(method: str, path: str, body: dict) -> dict:
            response = admin.request(method, path, json=body)
            assert response.is_success, response.text
            return response.json()

        call("POST", "/v1/instruments", {"kind": "compute", "symbol": SYMBOL, "tick": "0.01", "model": "m",
                                         "substitution_group": "g", "quality": 50, "tokens_per_lot": 1000})
        keys, account_ids = {}, []
        for role, scopes in (("issuer", ["read", "trade", "issue"]), ("trader", ["read", "trade"])):
            account = call("POST", "/v1/accounts", {"name": f"fuzz-{role}", "role": role})
            account_ids.append(account["id"])
            call("POST", "/v1/deposits", {"account_id": account["id"], "amount": "100000"})
            key = call("POST", "/v1/keys", {"account_id": account["id"], "scopes": scopes})
            keys[role] = RequestsSigner(key["id"], key["secret"])
            if role == "issuer":
                call("POST", "/v1/issuer-approvals", {"account_id": account["id"], "symbol": SYMBOL,
                                                      "capacity": 1_000_000})
                with httpx.Client(base_url=live.url, auth=Signer(key["id"], key["secret"])) as issuer:
                    assert issuer.post("/v1/mints", json={"symbol": SYMBOL, "qty": 10_000}).is_success
            with httpx.Client(base_url=live.url, auth=Signer(key["id"], key["secret"])) as trader:
                # A book on both sides, for generated orders to trade against.
                side, price = ("sell", "1.10") if role == "issuer" else ("buy", "0.90")
                for _ in range(5):
                    order = {"type": "limit", "symbol": SYMBOL, "side": side, "price": price, "qty": 20}
                    assert trader.post("/v1/orders", json=order).is_success
    both = [keys["trader"], keys["issuer"]]
    signers = {"admin": [RequestsSigner(live.admin_key, live.admin_secret)], "issue": [keys["issuer"]],
               "trade": both, "read": both}
    return Fuzz(signers, account_ids)
