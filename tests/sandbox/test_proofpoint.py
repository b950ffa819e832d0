"""Proofpoint Essentials stand-in: auth, stacks, masking, merge on PUT, credential checks, sync, faults."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.material import client_secret

pytestmark = pytest.mark.sandbox

TENANT = "11110000-0000-4000-8000-000000000001"
APP = "22220000-0000-4000-8000-000000000002"
SECRET = client_secret("Abc")
NEW_SECRET = client_secret("New")
ADMIN = {"X-User": "admin@msp.example", "X-Password": "pw"}
ORG_ADMIN = {"X-User": "org@contoso.com", "X-Password": "pw2"}


def seed(sb: Any, end: str = "+30d") -> None:
    sb.control.seed(
        {
            "tenants": [
                {
                    "id": TENANT,
                    "name": "Contoso",
                    "applications": [
                        {
                            "appId": APP,
                            "displayName": "Proofpoint Essentials",
                            "passwordCredentials": [{"secretText": SECRET, "endDateTime": end}],
                        }
                    ],
                }
            ],
            "proofpoint": {
                "accounts": [
                    {"user": "admin@msp.example", "password": "pw", "domains": ["*"]},
                    {"user": "org@contoso.com", "password": "pw2", "domains": ["contoso.com"]},
                ],
                "orgs": [
                    {"domain": "contoso.com", "stack": "us2", "tenantId": TENANT,
                     "settings": {"application_id": APP, "ad_key": SECRET, "sync_frequency": "daily"}},
                    {"domain": "other.com", "stack": "us2", "tenantId": TENANT},
                ],
            },
        }
    )


def url(sb: Any, stack: str = "us2", domain: str = "contoso.com") -> str:
    return f"{sb.endpoints['proofpoint']}/{stack}/api/v1/orgs/{domain}/settings/azure"


def call(sb: Any, method: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
    target = kwargs.pop("url", None) or url(sb)
    return requests.request(method, target, headers=headers, verify=sb.ca_file, timeout=10, **kwargs)


def test_get_returns_settings_with_the_key_masked(sb: Any) -> None:
    seed(sb)
    body = call(sb, "GET", ADMIN).json()
    assert body["primary_domain"] == "contoso.com" and body["application_id"] == APP
    assert body["tenant_id"] == TENANT and body["ad_key"] == "********"
    assert SECRET not in str(body)
    for key in ("secret_expiry", "last_successful_sync", "last_sync_status", "sync_active_users", "add_users"):
        assert key in body


def test_authentication_and_authorisation(sb: Any) -> None:
    seed(sb)
    missing = call(sb, "GET", {})
    assert missing.status_code == 401 and isinstance(missing.json()["message"], str)
    assert call(sb, "GET", {"X-User": "admin@msp.example", "X-Password": "nope"}).status_code == 401
    assert call(sb, "GET", ORG_ADMIN).status_code == 200
    forbidden = call(sb, "GET", ORG_ADMIN, url=url(sb, domain="other.com"))
    assert forbidden.status_code == 403 and "detail" in forbidden.json()


def test_unknown_org_wrong_stack_and_unknown_stack_are_404(sb: Any) -> None:
    seed(sb)
    for target in (url(sb, domain="nosuch.com"), url(sb, stack="eu1"), url(sb, stack="zz9")):
        response = call(sb, "GET", ADMIN, url=target)
        assert response.status_code == 404 and isinstance(response.json()["error"], str)


def test_put_merges_and_records_a_successful_sync(sb: Any) -> None:
    seed(sb)
    sb.control.seed({"tenants": [{"id": TENANT, "applications": [{"appId": APP, "passwordCredentials": [
        {"secretText": NEW_SECRET, "endDateTime": "+700d"}]}]}]})
    response = call(sb, "PUT", ADMIN, json={"ad_key": NEW_SECRET, "add_users": False})
    assert response.status_code == 200, response.text
    body = call(sb, "GET", ADMIN).json()
    assert body["add_users"] is False and body["sync_frequency"] == "daily" and body["application_id"] == APP
    assert body["last_sync_status"] == "success" and body["last_successful_sync"]
    org = next(o for o in sb.control.state()["proofpoint"]["orgs"] if o["domain"] == "contoso.com")
    assert org["settings"]["ad_key"] == NEW_SECRET


def test_put_with_a_key_that_cannot_sign_in_is_422(sb: Any) -> None:
    seed(sb)
    response = call(sb, "PUT", ADMIN, json={"application_id": APP, "ad_key": "wrong"})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "ad_key" and error["message"].startswith("AADSTS7000215")
    assert sb.control.state()["proofpoint"]["orgs"][0]["settings"]["ad_key"] == SECRET


def test_put_validation_errors_are_422_per_field(sb: Any) -> None:
    seed(sb)
    response = call(sb, "PUT", ADMIN, json={"application_id": "not-a-guid", "add_users": "yes"})
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"application_id", "add_users"}
    assert call(sb, "PUT", ADMIN, data="{not json").status_code == 400


def test_daily_sync_fails_once_the_secret_expires(sb: Any) -> None:
    seed(sb, end="+1d")
    assert sb.control.proofpoint_sync()[0]["ok"] is True
    sb.control.set_clock(2 * 86400)
    [contoso, other] = sb.control.proofpoint_sync()
    assert contoso["ok"] is False and contoso["error"].startswith("AADSTS7000222")
    assert other["ok"] is False
    assert call(sb, "GET", ADMIN).json()["last_sync_status"] == "failed"


def test_throttling_fault_answers_429_with_retry_after(sb: Any) -> None:
    seed(sb)
    sb.control.add_fault("proofpoint", method="PUT", status=429, retry_after=7)
    response = call(sb, "PUT", ADMIN, json={"add_users": True})
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert isinstance(response.json()["message"], str)
    assert call(sb, "PUT", ADMIN, json={"add_users": True}).status_code == 200
