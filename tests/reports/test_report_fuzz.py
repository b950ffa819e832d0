"""Property-based, on GET /api/reports/{tenantId}: whatever the query, path or method, the answer is below 500, JSON
for errors, and one the OpenAPI document describes (the Api helper checks each). The values include digits that are
not ASCII ("²" passes str.isdigit, which int() refuses: it was a 500)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.api.conftest import Api
from tests.api.test_fuzz import FUZZ, METHODS, check, fuzzed, path_values
from tests.rotation.conftest import Customer

__all__ = ["fuzzed"]

QUERY_NAMES = st.sampled_from(["format", "days", "other"])
QUERY_VALUES = st.sampled_from(["", "0", "1", "30", "366", "367", "-1", "+5", " 7", "7.0", "1_0", "\u00b2", "\u0663",
                                "\uff17", "html", "pdf", "PDF"]) | st.text(max_size=12)


@FUZZ
@given(data=st.data(), query=st.dictionaries(QUERY_NAMES, QUERY_VALUES, max_size=3))
async def test_report_queries(api: Api, fuzzed: Customer, data: st.DataObject, query: dict[str, str]) -> None:
    await check(api, "report", "GET", {"tenantId": fuzzed.tenant_id}, params=query)


@FUZZ
@given(tenant=path_values, method=METHODS)
async def test_report_paths_and_methods(api: Api, fuzzed: Customer, tenant: str, method: str) -> None:
    await check(api, "report", method, {"tenantId": tenant})
