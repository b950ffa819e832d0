"""MSP portal stand-in: the seeded Authorization value is required; every accepted request is recorded."""

from __future__ import annotations

from typing import Any

import pytest
import requests

pytestmark = pytest.mark.sandbox

AUTH = "Bearer portal-test-token"


def post(sb: Any, path: str, headers: dict[str, str], method: str = "POST", **kwargs: Any) -> requests.Response:
    return requests.request(
        method, sb.endpoints["portal"] + path, headers=headers, verify=sb.ca_file, timeout=10, **kwargs
    )


def test_accepted_requests_are_recorded(sb: Any) -> None:
    sb.control.seed({"portal": {"authorization": AUTH}})
    body = {"applicationId": "a", "secret": "s", "tenantId": "t", "expires": "2027-01-01T00:00:00Z"}
    response = post(sb, "/office365/azure-ad/contoso.com", {"Authorization": AUTH}, method="PUT", json=body)
    assert response.status_code == 200 and response.json() == {"status": "ok", "received": True}
    [record] = sb.control.state()["portal"]["received"]
    assert (record["method"], record["path"], record["body"]) == ("PUT", "/office365/azure-ad/contoso.com", body)


def test_wrong_or_missing_authorization_is_401_and_not_recorded(sb: Any) -> None:
    sb.control.seed({"portal": {"authorization": AUTH}})
    assert post(sb, "/x", {"Authorization": "Bearer other"}, json={}).status_code == 401
    assert post(sb, "/x", {}, json={}).status_code == 401
    assert sb.control.state()["portal"]["received"] == []


def test_nothing_is_accepted_before_an_authorization_is_seeded(sb: Any) -> None:
    assert post(sb, "/x", {"Authorization": ""}, json={}).status_code == 401


def test_other_methods_are_405(sb: Any) -> None:
    sb.control.seed({"portal": {"authorization": AUTH}})
    assert post(sb, "/x", {"Authorization": AUTH}, method="GET").status_code == 405


def test_fault_answers_with_retry_after(sb: Any) -> None:
    sb.control.seed({"portal": {"authorization": AUTH}})
    sb.control.add_fault("portal", status=503, retry_after=2)
    response = post(sb, "/x", {"Authorization": AUTH}, json={})
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert isinstance(response.json()["error"], str)
