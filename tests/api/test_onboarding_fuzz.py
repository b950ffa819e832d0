"""Property-based, on the onboarding and offboarding routes: whatever the body, query, path or method, the answer is
below 500, a JSON error with a code and a message, one the OpenAPI document describes (the Api helper checks each),
and a refused request writes nothing (the signed-in run stays signed-in with no tenant; the target stays)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from shared import bootstrap
from tests.api.conftest import Api
from tests.api.test_fuzz import FUZZ, METHODS, check, fuzzed, guids, headers, json_values, path_values, raw_bodies
from tests.api.test_onboarding import Onboarding, onboarding
from tests.rotation.conftest import Customer

__all__ = ["fuzzed", "onboarding"]
pytestmark = pytest.mark.sandbox

picks = st.sampled_from(["all", "ALL", "", "some"]) | st.lists(
    guids | st.fixed_dictionaries({}, optional={"tenantId": guids | json_values, "appId": guids | json_values,
                                                "proofpointDomain": st.text(max_size=300) | json_values,
                                                "other": json_values}) | json_values, max_size=4) | json_values
start_bodies = st.fixed_dictionaries({}, optional={
    "tenants": st.just("all") | picks,
    "method": st.sampled_from(["graph", "partner-center", "Graph", "x" * 5000]) | json_values,
    "planOnly": st.booleans() | json_values, "keepSession": st.booleans() | json_values,
    "other": json_values}) | json_values


async def _untouched(run_id: str) -> None:
    async with bootstrap.services() as svc:
        assert svc.onboarding_runs is not None
        run, _ = await svc.onboarding_runs.get_run(run_id)
        assert run.state.value == "signed-in"
        assert await svc.onboarding_runs.tenants(run_id) == []


@pytest.fixture
async def run_id(onboarding: Onboarding) -> str:
    onboarding.customer("Contoso")
    return await onboarding.sign_in()


def _starts(body: Any) -> bool:
    """A body the route accepts (it starts the run: a change, tested in test_onboarding.py)."""
    return isinstance(body, dict) and body.get("tenants") == "all" and set(body) <= {
        "tenants", "method", "planOnly", "keepSession"} and body.get("method", "graph") in ("graph", "partner-center") \
        and all(isinstance(body.get(f, False), bool) for f in ("planOnly", "keepSession"))


@FUZZ
@given(body=start_bodies)
@example(body={"tenants": "all", "method": ["graph"]})  # unhashable: it was a 500
@example(body={"tenants": "all", "method": {"graph": 1}})
@example(body={"tenants": "all", "method": None})
@example(body={"tenants": [{"tenantId": ["x"]}]})
@example(body={"tenants": "all", "keepSession": "yes"})
async def test_start_bodies_are_refused_cleanly_and_change_nothing(api: Api, run_id: str, body: Any) -> None:
    assume(not _starts(body))
    reply = await api.call("onboarding_start", "POST", {"runId": run_id}, body)
    assert reply.status < 500, (body, reply.text)
    assert reply.status in (400, 404, 422), (body, reply.status, reply.text)  # 404: a tenant not a GDAP customer
    assert set(reply.body["error"]) == {"code", "message"} and reply.body["error"]["message"]
    await _untouched(run_id)


@FUZZ
@given(data=st.data(), method=METHODS, raw=raw_bodies, hdrs=headers,
       function=st.sampled_from(["onboarding_runs", "onboarding_run", "onboarding_customers", "onboarding_start",
                                 "onboarding_resume", "onboarding_session"]))
async def test_any_method_raw_body_headers_and_path(api: Api, run_id: str, data: st.DataObject, method: str, raw: bytes,
                                                    hdrs: dict[str, str], function: str) -> None:
    route = {"runId": data.draw(path_values | st.just(run_id) | st.just(run_id.upper()))}
    if function == "onboarding_session" and method == "DELETE" and route["runId"] == run_id:
        return  # a valid forget is a change; it is tested in test_onboarding.py
    await check(api, function, method, route, raw=raw, hdrs=hdrs,
                params=data.draw(st.dictionaries(st.sampled_from(["method", "run", "x"]),
                                                 st.text(max_size=20) | st.just("x" * 3000), max_size=2)))
    await _untouched(run_id)


@FUZZ
@given(data=st.data())
async def test_offboard_bodies(api: Api, fuzzed: Customer, data: st.DataObject) -> None:
    body: Any = data.draw(st.fixed_dictionaries({}, optional={
        "removeOwner": json_values.filter(lambda v: not isinstance(v, bool)),
        "removeApp": json_values}).filter(lambda b: any(not isinstance(v, bool) for v in b.values())) | json_values
        .filter(lambda v: not isinstance(v, dict)))
    route = {"tenantId": data.draw(path_values | st.just(fuzzed.tenant_id)), "appId": fuzzed.app_id}
    await check(api, "offboard_target", "POST", route, body)
    assert (await api.call("target", "GET", {"tenantId": fuzzed.tenant_id, "appId": fuzzed.app_id})).status == 200


@FUZZ
@given(data=st.data(), method=METHODS,
       hdrs=st.sampled_from([{}, {"Accept": "text/html"}, {"Accept": "application/json"}]),
       function=st.sampled_from(["onboarding_signin", "onboarding_callback", "consent", "consent_url"]))
async def test_sign_in_consent_and_one_visit_queries(api: Api, run_id: str, data: st.DataObject, method: str,
                                                     hdrs: dict[str, str], function: str) -> None:
    """The partner sign-in, its callback and the consent page (where the one-visit flow returns): any query, any
    method; below 500, a JSON error to a JSON client and a page to a browser; nothing redeemed or written."""
    names = st.sampled_from(["run", "code", "state", "error", "error_description", "admin_consent", "tenant",
                             "session_state", "x"])
    values = st.text(max_size=30) | st.sampled_from(["", run_id, "x" * 3000, "visit.abc", "True"]) | guids
    route = {"tenantId": data.draw(path_values)}
    params = data.draw(st.dictionaries(names, values, max_size=4))
    reply = await api.call(function, method, route, raw=b"", headers=hdrs, params=params)
    assert reply.status < 500, (function, method, params, reply.text)
    if reply.status >= 400:
        if reply.body is not None or hdrs.get("Accept") == "application/json":
            assert set(reply.body["error"]) == {"code", "message"}, reply.text
        else:  # these are browser pages: a refusal a browser sees is a page that says why
            assert reply.text.lstrip().lower().startswith(("<!doctype html", "<html")), reply.text
    await _untouched(run_id)
