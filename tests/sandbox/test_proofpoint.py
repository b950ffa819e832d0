"""Proofpoint Essentials stand-in: auth, stacks, masking, strict PUT, merge and full-replace PUTs, types kept,
credential checks, the scheduled sync, endpoints and /me, faults."""

from __future__ import annotations

import os
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
                # These tests send partial bodies: they describe a merging PUT (a full replace has its own tests).
                "putSemantics": "merge",
                "accounts": [
                    {"user": "admin@msp.example", "password": "pw", "domains": ["*"]},
                    {"user": "org@contoso.com", "password": "pw2", "domains": ["contoso.com"]},
                ],
                "orgs": [
                    {"domain": "contoso.com", "stack": "us2", "tenantId": TENANT,
                     "settings": {"application_id": APP, "ad_key": SECRET, "sync_frequency": 24},
                     "extraFields": {"secret_expiry": end, "last_successful_sync": "-1h", "last_sync_status": "success",
                                     "tenant_id": TENANT}},
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
    assert body["sync_frequency"] == 24
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


def add_new_secret(sb: Any) -> None:
    sb.control.seed({"tenants": [{"id": TENANT, "applications": [{"appId": APP, "passwordCredentials": [
        {"secretText": NEW_SECRET, "endDateTime": "+700d"}]}]}]})


def org_state(sb: Any, domain: str = "contoso.com") -> dict[str, Any]:
    return next(o for o in sb.control.state()["proofpoint"]["orgs"] if o["domain"] == domain)


def test_put_merges_and_saving_is_not_a_sync(sb: Any) -> None:
    seed(sb)
    add_new_secret(sb)
    before = call(sb, "GET", ADMIN).json()["last_successful_sync"]
    response = call(sb, "PUT", ADMIN, json={"ad_key": NEW_SECRET, "add_users": False})
    assert response.status_code == 200, response.text
    body = call(sb, "GET", ADMIN).json()
    assert body["add_users"] is False and body["sync_frequency"] == 24 and body["application_id"] == APP
    # Save tests the connection but is not the sync: the last successful sync is where it was.
    assert body["last_successful_sync"] == before
    assert org_state(sb)["settings"]["ad_key"] == NEW_SECRET


@pytest.mark.parametrize("field", ["whatever", "license_tier", "remove_deleted_users"])
def test_strict_mode_refuses_a_field_the_orgs_get_does_not_show(sb: Any, field: str) -> None:
    seed(sb)
    sb.control.seed({"proofpoint": {"orgs": [{"domain": "contoso.com", "stack": "us2", "tenantId": TENANT,
                                              "settings": {"application_id": APP, "ad_key": SECRET},
                                              "getOmits": ["remove_deleted_users"]}]}})
    response = call(sb, "PUT", ADMIN, json={"add_users": False, field: True})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert org_state(sb)["settings"]["add_users"] is True  # nothing changed


def test_what_the_get_showed_can_be_sent_back_whole(sb: Any) -> None:
    seed(sb)
    add_new_secret(sb)
    shown = call(sb, "GET", ADMIN).json()
    response = call(sb, "PUT", ADMIN, json={**shown, "ad_key": NEW_SECRET, "last_successful_sync": "2030-01-01"})
    assert response.status_code == 200, response.text
    body = call(sb, "GET", ADMIN).json()
    # Proofpoint's own sync state is not written by a PUT; every other field reads back as it was.
    assert body["last_successful_sync"] == shown["last_successful_sync"]
    assert {k: v for k, v in body.items() if k != "ad_key"} == {k: v for k, v in shown.items() if k != "ad_key"}
    assert org_state(sb)["settings"]["ad_key"] == NEW_SECRET


def test_strict_mode_off_takes_any_field_but_not_proofpoints_own_state(sb: Any) -> None:
    seed(sb)
    sb.control.seed({"proofpoint": {"strict": False}})
    response = call(sb, "PUT", ADMIN, json={"add_users": "false", "secret_expiry": "2030-01-01", "new_field": 3})
    assert response.status_code == 200, response.text
    body = call(sb, "GET", ADMIN).json()
    assert body["add_users"] == "false" and body["new_field"] == 3 and not body["secret_expiry"].startswith("2030")


@pytest.mark.parametrize(("field", "value"), [("add_users", "false"), ("sync_frequency", "24"), ("tenant_id", 7)])
def test_strict_mode_refuses_a_value_in_another_type_than_stored(sb: Any, field: str, value: Any) -> None:
    seed(sb)
    before = org_state(sb)["settings"]
    response = call(sb, "PUT", ADMIN, json={field: value})
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert {e["field"] for e in errors} == {field} and any("as stored" in e["message"] for e in errors)
    assert org_state(sb)["settings"] == before


def seed_typed(sb: Any, semantics: str) -> None:
    """An org whose flags are partly the strings PSProofpoint sends, with unknown fields of several types."""
    seed(sb)
    sb.control.seed({"proofpoint": {"orgs": [{
        "domain": "contoso.com", "stack": "us2", "tenantId": TENANT, "putSemantics": semantics,
        "settings": {"application_id": APP, "ad_key": SECRET, "add_users": "true", "update_users": False},
        "extraFields": {"tenant_id": TENANT, "seats": 40, "connected": True, "last_successful_sync": "-1h"}}]}})


@pytest.mark.parametrize("semantics", ["merge", "replace"])
def test_types_and_unknown_fields_are_kept_as_sent(sb: Any, semantics: str) -> None:
    seed_typed(sb, semantics)
    shown = call(sb, "GET", ADMIN).json()
    assert shown["add_users"] == "true" and shown["update_users"] is False and shown["seats"] == 40
    assert shown["tenant_id"] == TENANT and shown["connected"] is True
    assert call(sb, "PUT", ADMIN, json={**shown, "add_users": "false"}).status_code == 200
    body = call(sb, "GET", ADMIN).json()
    assert body["add_users"] == "false" and type(body["seats"]) is int and body["update_users"] is False
    assert {k: v for k, v in body.items() if k != "add_users"} == {k: v for k, v in shown.items() if k != "add_users"}


def test_a_merging_put_keeps_what_it_leaves_out(sb: Any) -> None:
    seed_typed(sb, "merge")
    assert call(sb, "PUT", ADMIN, json={"add_users": "false"}).status_code == 200
    body = call(sb, "GET", ADMIN).json()
    assert body["tenant_id"] == TENANT and body["seats"] == 40 and body["sync_frequency"] == 24
    assert org_state(sb)["settings"]["ad_key"] == SECRET and org_state(sb)["putSemantics"] == "merge"


def test_a_full_replace_resets_what_it_leaves_out(sb: Any) -> None:
    seed_typed(sb, "replace")
    shown = call(sb, "GET", ADMIN).json()
    kept = {k: v for k, v in shown.items() if k not in ("tenant_id", "seats", "update_users")}
    response = call(sb, "PUT", ADMIN, json=kept)
    assert response.status_code == 200, response.text
    body = call(sb, "GET", ADMIN).json()
    assert "tenant_id" not in body and "seats" not in body  # unknown fields left out are gone
    assert body["update_users"] is None  # a known field left out is reset
    assert body["add_users"] == "true" and body["application_id"] == APP
    assert org_state(sb)["settings"]["ad_key"] == SECRET  # the masked key written back keeps the key
    assert org_state(sb)["putSemantics"] == "replace"


def test_a_full_replace_without_the_key_clears_it_and_is_refused(sb: Any) -> None:
    seed_typed(sb, "replace")
    response = call(sb, "PUT", ADMIN, json={"add_users": "true"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "ad_key"
    assert org_state(sb)["settings"]["ad_key"] == SECRET and org_state(sb)["settings"]["tenant_id"] == TENANT


def test_put_semantics_is_global_or_per_org_and_checked(sb: Any) -> None:
    # The default is the environment's (a whole suite can run under a full replace), else merge.
    assert sb.control.state()["proofpoint"]["putSemantics"] == os.environ.get("SANDBOX_PROOFPOINT_PUT", "merge")
    seed(sb)
    sb.control.seed({"proofpoint": {"putSemantics": "replace"}})
    assert org_state(sb)["putSemantics"] == "replace"
    with pytest.raises(Exception, match="putSemantics"):
        sb.control.seed({"proofpoint": {"putSemantics": "patch"}})


@pytest.mark.parametrize("value", ["daily", "24", 24.0, True, 0, 169])
def test_sync_frequency_is_an_integer_number_of_hours(sb: Any, value: Any) -> None:
    seed(sb)
    response = call(sb, "PUT", ADMIN, json={"sync_frequency": value})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "sync_frequency"
    assert call(sb, "PUT", ADMIN, json={"sync_frequency": 12}).status_code == 200
    assert call(sb, "GET", ADMIN).json()["sync_frequency"] == 12


def test_primary_domain_must_be_the_orgs_own(sb: Any) -> None:
    seed(sb)
    response = call(sb, "PUT", ADMIN, json={"primary_domain": "other.com"})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "primary_domain"
    assert call(sb, "PUT", ADMIN, json={"primary_domain": "CONTOSO.com"}).status_code == 200


def test_a_get_can_be_seeded_with_extra_fields_an_absent_key_and_omitted_flags(sb: Any) -> None:
    sb.control.seed({"tenants": [{"id": TENANT, "applications": [{"appId": APP, "passwordCredentials": [
        {"secretText": SECRET, "endDateTime": "+30d"}]}]}],
        "proofpoint": {"accounts": [{"user": "admin@msp.example", "password": "pw", "domains": ["*"]}],
                       "orgs": [{"domain": "contoso.com", "stack": "us2", "tenantId": TENANT,
                                 "settings": {"application_id": APP, "ad_key": SECRET, "remove_deleted_users": True},
                                 "adKeyOnGet": "absent", "reportsSync": False,
                                 "getOmits": ["remove_deleted_users"],
                                 "extraFields": {"license_tier": "pro", "connected": True}}]}})
    body = call(sb, "GET", ADMIN).json()
    assert "ad_key" not in body and "remove_deleted_users" not in body and "last_successful_sync" not in body
    assert "secret_expiry" not in body
    assert body["license_tier"] == "pro" and body["connected"] is True
    assert org_state(sb)["settings"]["remove_deleted_users"] is True


def test_the_sync_runs_on_the_sandbox_clock_with_the_stored_key(sb: Any) -> None:
    seed(sb, end="+30h")
    before = call(sb, "GET", ADMIN).json()["last_successful_sync"]
    sb.control.set_clock(25 * 3600)  # the daily sync ran once, 24 h after the seed, with the working key
    body = call(sb, "GET", ADMIN).json()
    assert body["last_successful_sync"] > before and body["last_sync_status"] == "success"
    assert org_state(sb)["nextSync"] > body["last_successful_sync"]
    sb.control.set_clock(49 * 3600)  # the next one, after the key expired at +30 h
    body = call(sb, "GET", ADMIN).json()
    assert body["last_sync_status"] == "failed"
    assert org_state(sb)["lastSyncError"].startswith("AADSTS7000222")


def test_a_sync_after_a_put_uses_the_new_key_and_moves_last_successful_sync(sb: Any) -> None:
    seed(sb, end="+2h")
    add_new_secret(sb)
    assert call(sb, "PUT", ADMIN, json={"application_id": APP, "ad_key": NEW_SECRET}).status_code == 200
    saved = call(sb, "GET", ADMIN).json()["last_successful_sync"]
    sb.control.set_clock(3 * 86400 + 60)
    body = call(sb, "GET", ADMIN).json()
    assert body["last_sync_status"] == "success" and body["last_successful_sync"] > saved
    assert body["secret_expiry"] > body["last_successful_sync"]  # the new credential's end, read by the sync


def test_endpoints_tell_the_orgs_stack_from_any_stack(sb: Any) -> None:
    seed(sb)
    for stack in ("us1", "eu1", "us2"):
        response = call(sb, "GET", ADMIN, url=f"{sb.endpoints['proofpoint']}/{stack}/api/v1/endpoints/contoso.com")
        assert response.status_code == 200, response.text
        assert response.json()["endpoints"] == [f"{sb.endpoints['proofpoint']}/us2/api/v1"]
    unknown = call(sb, "GET", ADMIN, url=f"{sb.endpoints['proofpoint']}/us1/api/v1/endpoints/nosuch.com")
    assert unknown.status_code == 404
    assert call(sb, "GET", {}, url=f"{sb.endpoints['proofpoint']}/us1/api/v1/endpoints/contoso.com").status_code == 401


def test_me_tests_the_admin_login(sb: Any) -> None:
    seed(sb)
    me = f"{sb.endpoints['proofpoint']}/us4/api/v1/me"
    response = call(sb, "GET", ORG_ADMIN, url=me)
    assert response.status_code == 200 and response.json()["primary_email"] == "org@contoso.com"
    assert call(sb, "GET", {"X-User": "org@contoso.com", "X-Password": "wrong"}, url=me).status_code == 401
    assert call(sb, "GET", ORG_ADMIN, url=f"{sb.endpoints['proofpoint']}/zz1/api/v1/me").status_code == 404


def test_put_with_a_key_that_cannot_sign_in_is_422(sb: Any) -> None:
    seed(sb)
    response = call(sb, "PUT", ADMIN, json={"application_id": APP, "ad_key": "wrong"})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "ad_key" and error["message"].startswith("AADSTS7000215")
    assert org_state(sb)["settings"]["ad_key"] == SECRET


def test_put_validation_errors_are_422_per_field(sb: Any) -> None:
    seed(sb)
    response = call(sb, "PUT", ADMIN, json={"application_id": "not-a-guid", "add_users": "yes"})
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"application_id", "add_users"}
    assert call(sb, "PUT", ADMIN, data="{not json").status_code == 400


def test_daily_sync_fails_once_the_secret_expires(sb: Any) -> None:
    seed(sb, end="+1d")
    assert sb.control.proofpoint_sync()[0]["ok"] is True
    sb.control.set_clock(2 * 86400 - 60)
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


@pytest.mark.parametrize(("shape", "hours", "pattern"), [
    ("iso", 0, r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z"),
    ("date", 14, r"\d{4}-\d{2}-\d{2}"),
    ("local", -8, r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"),
    ("offset", 5.75, r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+05:45"),
])
def test_secret_expiry_is_written_in_the_orgs_format(sb: Any, shape: str, hours: float, pattern: str) -> None:
    import datetime as dt
    import re

    seed(sb)
    sb.control.seed({"proofpoint": {"orgs": [
        {"domain": "contoso.com", "stack": "us2", "tenantId": TENANT,
         "settings": {"application_id": APP, "ad_key": SECRET, "sync_frequency": 24},
         "extraFields": {"secret_expiry": "2027-05-05T17:42:11Z"}, "expiryFormat": shape,
         "expiryOffsetHours": hours}]}})
    shown = call(sb, "GET", ADMIN).json()["secret_expiry"]
    assert re.fullmatch(pattern, shown), shown
    instant = dt.datetime(2027, 5, 5, 17, 42, 11, tzinfo=dt.UTC)
    local = instant.astimezone(dt.timezone(dt.timedelta(hours=hours)))
    assert shown.startswith(local.date().isoformat())


@pytest.mark.parametrize(("shape", "hours", "written"), [
    ("basic", 3, "20270505T174211Z"), ("epoch", 0, 1809538931), ("us", -5, "5/5/2027 12:42:11 PM"),
    ("us", 10, "5/6/2027 3:42:11 AM"), ("dmy", 1, "05.05.2027 18:42:11"),
])
def test_secret_expiry_in_the_other_ways_software_writes_dates(sb: Any, shape: str, hours: float,
                                                                written: str | int) -> None:
    seed(sb)
    sb.control.seed({"proofpoint": {"orgs": [
        {"domain": "contoso.com", "stack": "us2", "tenantId": TENANT,
         "settings": {"application_id": APP, "ad_key": SECRET, "sync_frequency": 24},
         "extraFields": {"secret_expiry": "2027-05-05T17:42:11Z"}, "expiryFormat": shape,
         "expiryOffsetHours": hours}]}})
    assert call(sb, "GET", ADMIN).json()["secret_expiry"] == written


@pytest.mark.parametrize("bad", [{"expiryFormat": "julian"}, {"expiryOffsetHours": 15}, {"expiryOffsetHours": True}])
def test_an_unknown_expiry_format_is_refused_at_seed(sb: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(Exception, match="expiry"):
        sb.control.seed({"proofpoint": {"orgs": [{"domain": "x.example", "stack": "us1", "tenantId": TENANT, **bad}]}})
