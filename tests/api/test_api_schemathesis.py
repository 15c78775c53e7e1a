"""Schemathesis against the live server: generated requests, signed, must get no 5xx and no answer that
contradicts the OpenAPI document (status, content type, headers, body schema).

Each operation is signed with a key of the scope it declares (``x-tokex-scope``): an admin, an issuer or a
trader, each with some cash and tokens, so that generated orders, mints and transfers can really happen.
"""

import asyncio

import asyncpg
import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api.app import ENDPOINTS
from api.openapi import document
from exchange import invariants
from tests.support.fuzz import CHECKS

pytestmark = pytest.mark.slow

# The document as the code generates it: the test below checks the live server serves the same one. (Loading it
# from the live server through a fixture, schemathesis.pytest.from_fixture, does not run under pytest 9.)
schema = schemathesis.openapi.from_dict(document(ENDPOINTS))


def test_the_server_serves_the_generated_document(live):
    response = httpx.get(f"{live.url}/v1/openapi.json")
    assert response.status_code == 200
    assert response.json() == msgspec.json.decode(msgspec.json.encode(document(ENDPOINTS)))


def call_and_check(case, live, fuzz) -> None:
    scopes = case.operation.definition.raw.get("x-tokex-scope")
    fuzz.steer(case)
    case.call_and_validate(base_url=live.url, auth=fuzz.signer(scopes[0]) if scopes else None, checks=CHECKS)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_openapi_document(case, live, fuzz):
    call_and_check(case, live, fuzz)


def fuzz_orders(live, fuzz) -> None:
    """Generated orders, steered and signed as above, alternating between the trader and the issuer."""

    @given(case=schema["/v1/orders"]["POST"].as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def place(case) -> None:
        call_and_check(case, live, fuzz)

    place()


async def test_invariants_hold_after_fuzzing(live, fuzz):
    # Its own round of generated orders first: run alone (or before the test above), it would find nothing traded.
    await asyncio.to_thread(fuzz_orders, live, fuzz)
    conn = await asyncpg.connect(live.dsn)
    try:
        assert await invariants.problems(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM fill") > 0, "the fuzzing never traded"
    finally:
        await conn.close()
