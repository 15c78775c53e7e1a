"""Schemathesis workflows over the whole OpenAPI document: chains of signed requests along the links it infers
(an order placed, then read, amended and cancelled by its id; an account made, then funded; a key made, then
revoked...), with no 5xx, no answer off the document, and every invariant holding afterwards.

The stateless pass over every operation is ``tests/api/test_api_schemathesis.py``; its signers and funded
accounts are reused here, so generated orders can really trade.

Failures are collected as the answers come rather than left to Hypothesis: the server keeps its state from one
scenario to the next, so Hypothesis cannot replay a scenario and draw the same steps, and reports that as a flaky
strategy (schemathesis' own runner passes over it the same way). A scenario cut short that way is simply the
end of a run; runs go on until enough steps were checked.
"""

import contextlib
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from schemathesis.core.failures import Failure, FailureGroup

from api.app import ENDPOINTS
from api.openapi import document
from tests.support.fuzz import CHECKS

pytestmark = pytest.mark.slow  # a fuzzer

schema = schemathesis.openapi.from_dict(document(ENDPOINTS))
STEPS = 150
RUNS = 10


def test_api_workflows_conform_to_the_document(live, fuzz):
    failures: list[str] = []
    steps: Counter[str] = Counter()

    class Workflow(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            scopes = case.operation.definition.raw.get("x-tokex-scope")
            fuzz.steer(case)
            return {"base_url": live.url, "auth": fuzz.signer(scopes[0]) if scopes else None}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            steps[f"{case.operation.label} -> {response.status_code}"] += 1
            # The document's own checks only: an order is cancelled, not deleted, so schemathesis' stateful
            # "use after free" would take reading a cancelled order for a bug.
            try:
                case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)
            except (Failure, FailureGroup) as exc:
                failures.append(f"{case.operation.label} -> {response.status_code}: {exc}")

    for _ in range(RUNS):
        with contextlib.suppress(Flaky):
            Workflow.run(settings=settings(max_examples=20, stateful_step_count=8, deadline=None,
                                           phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
        if failures or steps.total() >= STEPS:
            break
    assert failures == []
    assert steps.total() >= STEPS, steps
    linked = [name for name in steps if name.startswith(("GET /v1/orders/{", "DELETE /v1/orders/{", "PATCH"))]
    assert linked, f"no step followed a link to an order: {steps}"


async def test_invariants_hold_after_the_workflows(live):
    assert await live.problems() == []
