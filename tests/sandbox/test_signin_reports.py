"""Entra's usage reports in the sandbox (beta /reports/appCredentialSignInActivities and
/servicePrincipalSignInActivities): fed from the same client-credentials sign-ins as the log, rolled up daily (the last
sign-in's day, once that day is over), kept beyond the log's 30 days, filtered by keyId / appId, paged, refused
without a permission or the licence."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
import requests

from tests.conftest import SandboxHandle
from tests.sandbox.test_signins import (
    EXPIRED_KEY,
    NEW_KEY,
    OLD_KEY,
    OTHER,
    OTHER_APP,
    PPE_APP,
    READER_APP,
    TENANT,
    Keys,
    seed,
    token,
)

pytestmark = pytest.mark.sandbox

CREDENTIALS = "appCredentialSignInActivities"
PRINCIPALS = "servicePrincipalSignInActivities"


def report(sb: SandboxHandle, bearer: str, name: str = CREDENTIALS, params: dict[str, str] | None = None,
           url: str | None = None) -> requests.Response:
    return requests.get(url or f"{sb.endpoints['graph']}/beta/reports/{name}", params=None if url else params,
                        headers={"Authorization": f"Bearer {bearer}"}, verify=sb.ca_file, timeout=10)


def values(sb: SandboxHandle, bearer: str, name: str = CREDENTIALS,
           params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = report(sb, bearer, name, params)
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


def by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["keyId"]: r for r in rows}


def midnight(days_ago: int, now: dt.datetime) -> str:
    day = (now - dt.timedelta(days=days_ago)).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_each_credential_has_its_last_sign_in_day_once_the_day_is_over(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    sb.control.seed({"tenants": [{"id": TENANT, "signIns": [
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": "-45d"},  # beyond the log's 30 days
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": "-3d"},
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": "-2d", "errorCode": 7000215},  # a failure: not use
        {"appId": PPE_APP, "keyId": NEW_KEY, "createdDateTime": "-50d"}]}]})
    now = dt.datetime.now(dt.UTC)
    rows = by_key(values(sb, token(sb), params={"$filter": f"appId eq '{PPE_APP}'"}))
    assert set(rows) == {OLD_KEY, NEW_KEY, EXPIRED_KEY}  # every credential of the app, used or not
    old = rows[OLD_KEY]
    assert old["signInActivity"]["lastSignInDateTime"] == midnight(3, now)
    assert rows[NEW_KEY]["signInActivity"]["lastSignInDateTime"] == midnight(50, now)
    assert rows[EXPIRED_KEY]["signInActivity"] is None
    assert old["appId"] == PPE_APP and old["keyType"] == "clientSecret" and old["credentialOrigin"] == "application"
    assert base64.b64decode(old["id"]).decode() == f"{OLD_KEY}|application"
    assert old["expirationDateTime"].endswith("Z") and old["servicePrincipalObjectId"]
    # A sign-in today is not in the report until the day is over (plus the log's delay).
    assert sb.control.sign_in(TENANT, PPE_APP, Keys.new) is None
    assert by_key(values(sb, token(sb)))[NEW_KEY]["signInActivity"]["lastSignInDateTime"] == midnight(50, now)
    sb.control.set_clock(86400 + 60)
    assert by_key(values(sb, token(sb)))[NEW_KEY]["signInActivity"]["lastSignInDateTime"] == midnight(0, now)


def test_the_roll_up_waits_for_the_log_delay_after_midnight(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(3600)
    sb.control.seed({"tenants": [{"id": TENANT, "signIns": [
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": "-1d"}]}]})
    now = dt.datetime.now(dt.UTC)
    since_midnight = (now - now.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
    old = by_key(values(sb, token(sb)))[OLD_KEY]
    if since_midnight < 3600:
        assert old["signInActivity"] is None
    else:
        assert old["signInActivity"]["lastSignInDateTime"] == midnight(1, now)


def test_filters_by_key_id_and_pages_with_next_link(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = token(sb)
    assert [r["keyId"] for r in values(sb, bearer, params={"$filter": f"keyId eq '{NEW_KEY}'"})] == [NEW_KEY]
    first = report(sb, bearer, params={"$top": "2"})
    assert first.status_code == 200
    page = first.json()
    assert len(page["value"]) == 2 and "@odata.nextLink" in page
    rest = report(sb, bearer, url=page["@odata.nextLink"]).json()
    seen = [r["keyId"] for r in page["value"] + rest["value"]]
    assert len(seen) == len(set(seen)) == 4  # three Proofpoint keys and the reader's
    assert "@odata.nextLink" not in rest
    assert len(values(sb, bearer)) == 4  # the default page (100) holds them all


@pytest.mark.parametrize("params", [
    {"$filter": "servicePrincipalObjectId eq 'x'"}, {"$filter": f"keyId ne '{OLD_KEY}'"},
    {"$filter": f"keyId eq '{OLD_KEY}' or keyId eq '{NEW_KEY}'"}, {"$top": "0"}, {"$top": "1001"},
    {"$orderby": "keyId"}, {"$select": "keyId"},
])
def test_what_is_not_served_is_refused_not_ignored(sb: SandboxHandle, params: dict[str, str]) -> None:
    seed(sb)
    response = report(sb, token(sb), params=params)
    assert response.status_code == 400 and response.json()["error"]["code"] == "BadRequest"


def test_ordered_by_last_sign_in(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    sb.control.seed({"tenants": [{"id": TENANT, "signIns": [
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": "-5d"},
        {"appId": PPE_APP, "keyId": NEW_KEY, "createdDateTime": "-2d"}]}]})
    ordered = values(sb, token(sb), params={"$orderby": "signInActivity/lastSignInDateTime desc",
                                            "$filter": f"appId eq '{PPE_APP}'"})
    assert [r["keyId"] for r in ordered][:2] == [NEW_KEY, OLD_KEY]


@pytest.mark.parametrize(("roles", "license", "status", "code"), [
    ((), "P1", 403, "Authorization_RequestDenied"),
    (("AuditLog.Read.All",), "free", 403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant"),
    (("AuditLog.Read.All",), "P1", 200, None),  # unlike the log, one of the two permissions is enough
    (("Directory.Read.All",), "P2", 200, None),
])
def test_permission_and_licence(sb: SandboxHandle, roles: tuple[str, ...], license: str, status: int,
                                code: str | None) -> None:
    seed(sb, license=license, roles=roles)
    for name in (CREDENTIALS, PRINCIPALS):
        response = report(sb, token(sb), name)
        assert response.status_code == status, response.text
        if code:
            assert response.json()["error"]["code"] == code


def test_service_principal_activity_is_the_last_app_only_sign_in_and_tenants_are_apart(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    sb.control.seed({"tenants": [{"id": TENANT, "signIns": [
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": "-40d"},
        {"appId": PPE_APP, "keyId": NEW_KEY, "createdDateTime": "-4d"}]}]})
    now = dt.datetime.now(dt.UTC)
    rows = {r["appId"]: r for r in values(sb, token(sb), PRINCIPALS, {"$filter": f"appId eq '{PPE_APP}'"})}
    assert set(rows) == {PPE_APP}
    row = rows[PPE_APP]
    assert row["lastSignInActivity"]["lastSignInDateTime"] == midnight(4, now)
    assert row["applicationAuthenticationClientSignInActivity"] == row["lastSignInActivity"]
    assert row["delegatedClientSignInActivity"] is None
    assert base64.b64decode(row["id"]).decode() == PPE_APP
    other = {r["appId"] for r in values(sb, token(sb, OTHER, OTHER_APP, Keys.other), PRINCIPALS)}
    assert PPE_APP not in other and READER_APP not in other
    assert PPE_APP not in {r["appId"] for r in values(sb, token(sb, OTHER, OTHER_APP, Keys.other))}


def test_the_days_written_in_a_zone_as_the_docs_examples_write_them(sb: SandboxHandle) -> None:
    """report_zone: the day is that zone's, its midnight spelled as the docs' examples ('...T00:00:00-8:00');
    an offset no zone has is refused and changes nothing."""
    seed(sb)
    sb.control.set_sign_in_delay(0)
    signed_in = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    sb.control.seed({"tenants": [{"id": TENANT, "signIns": [
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": signed_in.strftime("%Y-%m-%dT%H:%M:%SZ")}]}]})
    sb.control.set_report_zone("-8:00")
    local = (signed_in - dt.timedelta(hours=8)).strftime("%Y-%m-%d")
    assert by_key(values(sb, token(sb)))[OLD_KEY]["signInActivity"]["lastSignInDateTime"] == f"{local}T00:00:00-8:00"
    with pytest.raises(Exception, match="report_zone"):
        sb.control.set_report_zone("-15:00")
    sb.control.set_report_zone("Z")
    assert by_key(values(sb, token(sb)))[OLD_KEY]["signInActivity"]["lastSignInDateTime"] == \
        signed_in.strftime("%Y-%m-%dT00:00:00Z")
