"""schemathesis against `python -m shared serve`: for every operation of the served OpenAPI document, cases generated
from the document are sent to the real function app (sandbox and Azurite behind it), signed in as the platform signs
in an automation principal holding Rotator.Operate (a bearer token from the sandbox's Entra ID, validated by the
local App Service Authentication), and each answer must be no server error and exactly what the document says (status,
content type, headers, body schema). A bounded number of cases per operation, deterministic (derandomized), so a
failure is reproducible; the number of cases is reported at the end of the session.

Nothing generated can reach a host outside this machine: every Azure endpoint is the sandbox's, registering a
destination contacts nothing, and a destination is only ever contacted by a rotation or a push of a registered target
whose app exists in the sandbox. Generated ids name no such app (the seeded target is only read or re-registered
here), and the test checks afterwards that no rotation ran.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.entrypoints.api import openapi_document
from tests.openapi_check import HTTP_METHODS
from tests.rotation.conftest import ACCOUNT_SECRET, World
from tests.serve.conftest import SUMMARY, Served, bearer, serving

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# Cases per operation: enough to walk every documented answer, bounded for `make test` on 2 cores.
EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "15"))
# Reads and re-registrations may name the seeded target (so that 200s with real data are checked too); a delete
# may not (the reads after it would only see 404s), and rotations and pushes name targets in their bodies.
SEEDED_IDS_FOR = {"GET", "PUT"}


def register(served: Served, world: World, operator: dict[str, str]) -> dict[str, str]:
    """A registered target whose app exists in the sandbox (so that reads of it answer 200 with real data)."""
    world.seed_accounts()
    c = world.seed_customer("Conformance", 10)
    doc = {"customer": "Conformance", "destinations": [
        {"name": "proofpoint", "kind": "proofpoint",
         "options": {"stack": c.stack, "domain": c.domain, "account_secret": ACCOUNT_SECRET}}]}
    put = requests.put(f"{served.url}/api/targets/{c.tenant_id}/{c.app_id}", json=doc, headers=operator, timeout=120)
    assert put.status_code == 201, put.text
    return {"tenantId": c.tenant_id, "appId": c.app_id}


def generate(strategy: Any) -> list[Any]:
    """Up to EXAMPLES distinct cases of one operation, deterministic (derandomized: the same cases every run)."""
    cases: list[Any] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def collect(case: Any) -> None:
        if case not in cases:  # an operation with few inputs yields the same case again
            cases.append(case)

    collect()
    return cases


def send(case: Any, base: str, operator: dict[str, str]) -> str | None:
    """Send one case and run the checks on the answer: schemathesis's report of what failed, or None."""
    response = case.call(base_url=base, headers=operator, timeout=120)
    try:
        case.validate_response(response, checks=CHECKS, headers=operator)
    except (AssertionError, BaseExceptionGroup) as failure:  # what failed, the answer, a curl command to replay it
        return f"{case.operation.label}: {failure}"
    return None


def test_the_served_api_answers_as_its_openapi_document_says(world: World, request: pytest.FixtureRequest) -> None:
    operator = bearer(world.sb, "Rotator.Operate")
    with serving(world) as served:
        seeded = register(served, world, operator)
        # The document as the app serves it, which is what clients read.
        schema = schemathesis.openapi.from_url(f"{served.url}/api/openapi.json", headers=operator, timeout=120)
        started = time.monotonic()
        counts: dict[str, int] = {}
        # Cases of the next operation are generated while those of the last are being answered. The first case is
        # sent here, on this thread, before any other thread runs: sending and checking import modules lazily, and
        # pytest rewrites schemathesis's modules as it imports them (schemathesis is a pytest plugin) with
        # ast.parse, which CPython 3.11 does not make safe against a parse on another thread (python/cpython#106905:
        # "SystemError: AST constructor recursion depth mismatch", seen in CI while hypothesis parsed on this one).
        with ThreadPoolExecutor(max_workers=4) as pool:
            first: list[str | None] = []  # the first case's report, sent on this thread
            sent = []
            for result in schema.get_all_operations():
                operation = result.ok()
                strategy = operation.as_strategy()
                names = {p.name for p in operation.path_parameters} & set(seeded)
                if operation.method.upper() in SEEDED_IDS_FOR and names:
                    fixed = {name: seeded[name] for name in names}
                    strategy = st.one_of(strategy, operation.as_strategy(path_parameters=fixed))
                cases = generate(strategy)
                counts[operation.label] = len(cases)
                if not first and cases:
                    first.append(send(cases.pop(0), served.url, operator))
                sent += [pool.submit(send, case, served.url, operator) for case in cases]
            failures = [f for f in [*first, *(future.result() for future in sent)] if f]
        elapsed = time.monotonic() - started
        after = requests.get(f"{served.url}/api/status", headers=operator, timeout=120)

    total = sum(counts.values())
    request.config.stash.setdefault(SUMMARY, []).append(
        f"schemathesis: {total} cases over {len(counts)} operations against python -m shared serve in "
        f"{elapsed:.0f} s (at most {EXAMPLES} per operation), {len(failures)} failures")
    assert not failures, f"{len(failures)} failures; the first ones:\n\n" + "\n\n".join(failures[:5])
    documented = {f"{m.upper()} {path}" for path, item in openapi_document()["paths"].items() for m in item
                  if m in HTTP_METHODS}
    # schemathesis leaves out the operation that serves the document it reads (tests/serve/test_serve_command.py).
    assert set(counts) == documented - {"GET /api/openapi.json"} and all(counts.values()), counts
    # No rotation ran while the cases were sent: nothing generated reached a destination.
    assert after.status_code == 200
    assert [(t["stage"], t["lastRotationAt"]) for t in after.json()["targets"]] == [
        ("idle", None) for _ in after.json()["targets"]]
