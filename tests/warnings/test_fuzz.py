"""Property-based, on the warnings routes: whatever the query, body, path or method, the answer is below 500, JSON for
errors, and one the OpenAPI document describes (the Api helper checks each)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.api.conftest import Api
from tests.api.test_fuzz import FUZZ, METHODS, check, fuzzed, guids, headers, json_values, path_values, raw_bodies
from tests.rotation.conftest import Customer

__all__ = ["fuzzed"]

QUERY_NAMES = st.sampled_from(["tenantId", "customer", "daysLeft", "kind", "managed", "excluded", "format", "limit",
                               "cursor", "other"])
QUERY_VALUES = st.sampled_from(["", "0", "-1", "30", "5001", "true", "false", "csv", "json", "password",
                                "certificate", "AAAA", "dGVuYW50fGFwcGxpY2F0aW9ufG98aw"]) | st.text(max_size=20)
dates = st.sampled_from(["2027-01-31T00:00:00Z", "2020-01-01T00:00:00+00:00", "2027-01-31", "tomorrow",
                         "9999-12-31T23:59:59Z"]) | st.text(max_size=25)


def exclusion_bodies(tenant: st.SearchStrategy[Any]) -> Any:
    return st.fixed_dictionaries({}, optional={
        "tenantId": tenant | json_values, "scope": st.sampled_from(["credential", "app", "customer"]) | json_values,
        "appId": guids | json_values, "keyId": guids | json_values,
        "kind": st.sampled_from(["exclusion", "snooze"]) | json_values, "until": dates | json_values,
        "why": st.text(max_size=600) | json_values}) | json_values


@FUZZ
@given(data=st.data(), query=st.dictionaries(QUERY_NAMES, QUERY_VALUES, max_size=4))
async def test_inventory_queries(api: Api, fuzzed: Customer, data: st.DataObject, query: dict[str, str]) -> None:
    await check(api, "inventory", "GET", {}, params=query)


@FUZZ
@given(data=st.data())
async def test_exclusion_and_threshold_bodies(api: Api, fuzzed: Customer, data: st.DataObject) -> None:
    tenant = st.just(fuzzed.tenant_id) | guids
    await check(api, "exclusions", "POST", {}, data.draw(exclusion_bodies(tenant)))
    days = st.lists(st.integers(-5, 800) | json_values, max_size=12) | json_values
    await check(api, "warning_thresholds", "PUT", {"tenantId": data.draw(path_values | st.just(fuzzed.tenant_id))},
                data.draw(st.fixed_dictionaries({}, optional={"days": days}) | json_values))


@FUZZ
@given(data=st.data(), method=METHODS, raw=raw_bodies, hdrs=headers,
       function=st.sampled_from(["inventory", "exclusions", "exclusion", "warning_thresholds"]))
async def test_any_method_raw_body_and_headers(api: Api, fuzzed: Customer, data: st.DataObject, method: str,
                                               raw: bytes, hdrs: dict[str, str], function: str) -> None:
    route = {"exclusionId": data.draw(path_values), "tenantId": data.draw(path_values | st.just(fuzzed.tenant_id))}
    await check(api, function, method, route, raw=raw, hdrs=hdrs)
