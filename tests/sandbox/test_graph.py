"""The Graph stand-in: listing, paging, get, addPassword/removePassword, owners, permissions, isolation."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import requests

from tests.conftest import SandboxHandle
from tests.material import client_secret

CUSTOMER = "c0000000-0000-4000-8000-000000000011"
OTHER = "c0000000-0000-4000-8000-000000000012"
PPE_APP = "a0000000-0000-4000-8000-000000000011"
PPE_OBJECT = "b0000000-0000-4000-8000-000000000011"
UNOWNED_APP = "a0000000-0000-4000-8000-000000000012"
ADMIN_APP = "a0000000-0000-4000-8000-000000000013"
NOBODY_APP = "a0000000-0000-4000-8000-000000000014"
OTHER_APP = "a0000000-0000-4000-8000-000000000015"
ADMIN_SECRET = client_secret("adm")
NOBODY_SECRET = client_secret("nob")
OTHER_SECRET = client_secret("oth")


def seed(sb: SandboxHandle, max_lifetime_days: int | None = None) -> None:
    customer: dict[str, Any] = {
        "id": CUSTOMER,
        "name": "Fabrikam",
        "applications": [
            {"appId": PPE_APP, "id": PPE_OBJECT, "displayName": "Proofpoint Essentials", "owners": ["msp-app"],
             "passwordCredentials": [{"displayName": "old", "endDateTime": "-2d"}]},
            {"appId": UNOWNED_APP, "displayName": "Payroll"},
            {"appId": ADMIN_APP, "displayName": "Admin tool",
             "passwordCredentials": [{"secretText": ADMIN_SECRET, "endDateTime": "+30d"}]},
            {"appId": NOBODY_APP, "displayName": "No permissions",
             "passwordCredentials": [{"secretText": NOBODY_SECRET, "endDateTime": "+30d"}]},
        ]
        + [{"appId": f"e0000000-0000-4000-8000-{i:012d}", "displayName": f"PPE bulk {i:03d}"} for i in range(7)],
        "grants": [
            {"appId": "msp-app", "roles": ["Application.ReadWrite.OwnedBy"]},
            {"appId": ADMIN_APP, "roles": ["Application.ReadWrite.All"]},
        ],
    }
    if max_lifetime_days is not None:
        customer["maxSecretLifetimeDays"] = max_lifetime_days
    other = {
        "id": OTHER, "name": "Northwind",
        "applications": [{"appId": OTHER_APP, "displayName": "Proofpoint",
                          "passwordCredentials": [{"secretText": OTHER_SECRET, "endDateTime": "+30d"}]}],
        "grants": [{"appId": OTHER_APP, "roles": ["Application.ReadWrite.All"]}],
    }
    sb.control.seed({"tenants": [customer, other]})


def token(sb: SandboxHandle, tenant: str, app_id: str, secret: str) -> str:
    response = requests.post(
        f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": app_id, "client_secret": secret,
              "scope": "https://graph.microsoft.com/.default"},
        verify=sb.ca_file, timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def msp_token(sb: SandboxHandle, tenant: str = CUSTOMER) -> str:
    assertion = requests.get(
        sb.settings["IDENTITY_ENDPOINT"],
        params={"resource": "api://AzureADTokenExchange", "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10,
    ).json()["access_token"]
    response = requests.post(
        f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": sb.settings["MSP_APP_CLIENT_ID"],
              "client_assertion": assertion,
              "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
              "scope": "https://graph.microsoft.com/.default"},
        verify=sb.ca_file, timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def call(sb: SandboxHandle, method: str, path: str, bearer: str, **kwargs: Any) -> requests.Response:
    url = path if path.startswith("https://") else f"{sb.endpoints['graph']}/v1.0{path}"
    return requests.request(
        method, url, headers={"Authorization": f"Bearer {bearer}", **kwargs.pop("headers", {})},
        verify=sb.ca_file, timeout=10, **kwargs,
    )


def assert_graph_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str)
    assert {"date", "request-id", "client-request-id"} <= error["innerError"].keys()


def test_filter_by_app_id(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = token(sb, CUSTOMER, ADMIN_APP, ADMIN_SECRET)
    response = call(sb, "GET", f"/applications?$filter=appId eq '{PPE_APP}'", bearer)
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"].endswith("/v1.0/$metadata#applications")
    assert [a["id"] for a in body["value"]] == [PPE_OBJECT]
    assert body["value"][0]["passwordCredentials"][0]["secretText"] is None  # never listed


def test_startswith_select_and_paging(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = token(sb, CUSTOMER, ADMIN_APP, ADMIN_SECRET)
    url: str | None = "/applications?$filter=startswith(displayName,'PPE')&$select=id,displayName&$top=3"
    names: list[str] = []
    pages = 0
    while url:
        body = call(sb, "GET", url, bearer).json()
        pages += 1
        assert all(set(item) == {"id", "displayName"} for item in body["value"])
        names += [item["displayName"] for item in body["value"]]
        url = body.get("@odata.nextLink")
    assert pages == 3 and names == [f"PPE bulk {i:03d}" for i in range(7)]


def test_double_slash_paths_are_collapsed(sb: SandboxHandle) -> None:
    seed(sb)
    response = requests.get(
        f"{sb.endpoints['graph']}/v1.0//applications/{PPE_OBJECT}",
        headers={"Authorization": f"Bearer {token(sb, CUSTOMER, ADMIN_APP, ADMIN_SECRET)}"},
        verify=sb.ca_file, timeout=10,
    )
    assert response.status_code == 200 and response.json()["appId"] == PPE_APP


def test_get_by_app_id_and_owners(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = msp_token(sb)
    app = call(sb, "GET", f"/applications(appId='{PPE_APP}')", bearer).json()
    assert app["id"] == PPE_OBJECT and app["@odata.context"].endswith("$metadata#applications/$entity")
    owners = call(sb, "GET", f"/applications/{PPE_OBJECT}/owners", bearer).json()["value"]
    assert [o["appId"] for o in owners] == [sb.settings["MSP_APP_CLIENT_ID"]]
    # application-list-owners: "GET /applications(appId='{appId}')/owners" addresses the app by its client id too.
    by_app_id = call(sb, "GET", f"/applications(appId='{PPE_APP}')/owners", bearer, params={"$select": "id"})
    assert [o["id"] for o in by_app_id.json()["value"]] == [o["id"] for o in owners]
    missing = call(sb, "GET", f"/applications(appId='{uuid.uuid4()}')/owners", bearer)
    assert_graph_error(missing, 404, "Request_ResourceNotFound")


def test_add_and_remove_password(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = msp_token(sb)
    created = call(
        sb, "POST", f"/applications/{PPE_OBJECT}/addPassword", bearer,
        json={"passwordCredential": {"displayName": "rotator 42", "endDateTime": "2030-01-01T00:00:00Z"}},
    )
    assert created.status_code == 200, created.text
    credential = created.json()
    secret = credential["secretText"]
    assert len(secret) == 40 and secret[3:6] == "8Q~" and credential["hint"] == secret[:3]
    assert credential["endDateTime"] == "2030-01-01T00:00:00Z" and credential["displayName"] == "rotator 42"
    token(sb, CUSTOMER, PPE_APP, secret)  # the new secret works at once without a propagation delay
    listed = call(sb, "GET", f"/applications/{PPE_OBJECT}", bearer).json()["passwordCredentials"]
    assert credential["keyId"] in [p["keyId"] for p in listed]
    key = {"keyId": credential["keyId"]}
    removed = call(sb, "POST", f"/applications/{PPE_OBJECT}/removePassword", bearer, json=key)
    assert removed.status_code == 204 and removed.content == b""
    again = call(sb, "POST", f"/applications/{PPE_OBJECT}/removePassword", bearer, json=key)
    assert_graph_error(again, 404, "Request_ResourceNotFound")


def test_expired_credential_stays_listed(sb: SandboxHandle) -> None:
    seed(sb)
    listed = call(sb, "GET", f"/applications/{PPE_OBJECT}", msp_token(sb)).json()["passwordCredentials"]
    assert [p["displayName"] for p in listed] == ["old"]


def test_default_lifetime_is_two_years_and_policy_limits_it(sb: SandboxHandle) -> None:
    seed(sb, max_lifetime_days=180)
    bearer = msp_token(sb)
    refused = call(sb, "POST", f"/applications/{PPE_OBJECT}/addPassword", bearer, json={})
    assert_graph_error(refused, 400, "CredentialInvalidLifetimeAsPerAppPolicy")
    ok = call(sb, "POST", f"/applications/{PPE_OBJECT}/addPassword", bearer,
              json={"passwordCredential": {"endDateTime": "+170d"}})
    assert ok.status_code == 200


def test_owned_by_reads_every_app_but_writes_only_owned_ones(sb: SandboxHandle) -> None:
    """permissions-reference.md: OwnedBy lists all applications and service principals; writes need ownership."""
    seed(sb)
    bearer = msp_token(sb)
    listed = call(sb, "GET", "/applications", bearer).json()["value"]
    assert {PPE_APP, UNOWNED_APP, ADMIN_APP, NOBODY_APP} <= {a["appId"] for a in listed} and len(listed) == 11
    unowned = call(sb, "GET", f"/applications(appId='{UNOWNED_APP}')", bearer)
    assert unowned.status_code == 200 and unowned.json()["displayName"] == "Payroll"
    unowned_id = unowned_id_of(sb)
    assert call(sb, "GET", f"/applications/{unowned_id}/owners", bearer).json()["value"] == []
    sps = call(sb, "GET", "/servicePrincipals", bearer).json()["value"]
    assert {ADMIN_APP, NOBODY_APP, UNOWNED_APP} <= {sp["appId"] for sp in sps}
    for action, body in (("addPassword", {}), ("removePassword", {"keyId": str(uuid.uuid4())})):
        refused = call(sb, "POST", f"/applications/{unowned_id}/{action}", bearer, json=body)
        assert_graph_error(refused, 403, "Authorization_RequestDenied")
        assert refused.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    tenant = next(t for t in sb.control.state()["tenants"] if t["id"] == CUSTOMER)
    assert next(a for a in tenant["applications"] if a["id"] == unowned_id)["passwordCredentials"] == []


def test_service_principal_by_app_id(sb: SandboxHandle) -> None:
    """How the rotator finds its own service principal in a customer tenant (to check it owns the app)."""
    seed(sb)
    bearer = msp_token(sb)
    msp_app = sb.settings["MSP_APP_CLIENT_ID"]
    sp = call(sb, "GET", f"/servicePrincipals(appId='{msp_app}')?$select=id,appId,displayName", bearer)
    assert sp.status_code == 200, sp.text
    body = sp.json()
    assert body["@odata.context"].endswith("$metadata#servicePrincipals(id,appId,displayName)/$entity")
    owners = call(sb, "GET", f"/applications/{PPE_OBJECT}/owners", bearer).json()["value"]
    assert [o["id"] for o in owners] == [body["id"]] and body["appId"] == msp_app
    same = call(sb, "GET", f"/servicePrincipals/{body['id']}", bearer).json()
    assert same["appId"] == msp_app and same["displayName"] == body["displayName"]
    missing = call(sb, "GET", f"/servicePrincipals(appId='{uuid.uuid4()}')", bearer)
    assert_graph_error(missing, 404, "Request_ResourceNotFound")


def unowned_id_of(sb: SandboxHandle) -> str:
    tenant = next(t for t in sb.control.state()["tenants"] if t["id"] == CUSTOMER)
    return str(next(a["id"] for a in tenant["applications"] if a["appId"] == UNOWNED_APP))


def test_no_role_is_403(sb: SandboxHandle) -> None:
    seed(sb)
    response = call(sb, "GET", "/applications", token(sb, CUSTOMER, NOBODY_APP, NOBODY_SECRET))
    assert_graph_error(response, 403, "Authorization_RequestDenied")


def test_tenants_are_isolated(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = token(sb, OTHER, OTHER_APP, OTHER_SECRET)
    assert [a["appId"] for a in call(sb, "GET", "/applications", bearer).json()["value"]] == [OTHER_APP]
    assert_graph_error(call(sb, "GET", f"/applications/{PPE_OBJECT}", bearer), 404, "Request_ResourceNotFound")


def test_missing_and_wrong_audience_tokens_are_401(sb: SandboxHandle) -> None:
    seed(sb)
    assert_graph_error(requests.get(f"{sb.endpoints['graph']}/v1.0/applications", verify=sb.ca_file, timeout=10),
                       401, "InvalidAuthenticationToken")
    vault_token = requests.get(
        sb.settings["IDENTITY_ENDPOINT"], params={"resource": "https://vault.azure.net", "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10,
    ).json()["access_token"]
    assert_graph_error(call(sb, "GET", "/applications", vault_token), 401, "InvalidAuthenticationToken")


def test_service_principals_and_count(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = token(sb, CUSTOMER, ADMIN_APP, ADMIN_SECRET)
    sps = call(sb, "GET", f"/servicePrincipals?$filter=appId eq '{sb.settings['MSP_APP_CLIENT_ID']}'", bearer).json()
    assert [sp["appOwnerOrganizationId"] for sp in sps["value"]] == [sb.settings["MSP_TENANT_ID"]]
    count = call(sb, "GET", "/applications/$count", bearer, headers={"ConsistencyLevel": "eventual"})
    assert count.status_code == 200 and count.text == "11"
    assert_graph_error(call(sb, "GET", "/applications/$count", bearer), 400, "Request_UnsupportedQuery")


def test_unsupported_filter_is_400(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = token(sb, CUSTOMER, ADMIN_APP, ADMIN_SECRET)
    response = call(sb, "GET", "/applications?$filter=contains(displayName,'x')", bearer)
    assert_graph_error(response, 400, "Request_UnsupportedQuery")


def test_hold_after_add_password_has_created_the_credential(sb: SandboxHandle) -> None:
    """The crash window the rotation protocol guards: Entra has the credential, the caller has no answer yet."""
    seed(sb)
    bearer = msp_token(sb)
    hold = sb.control.add_hold("graph", method="POST", path="addPassword$", when="after")
    answers: list[int] = []
    worker = threading.Thread(target=lambda: answers.append(
        call(sb, "POST", f"/applications/{PPE_OBJECT}/addPassword", bearer, json={}).status_code))
    worker.start()
    sb.control.wait_held(hold)
    tenant = next(t for t in sb.control.state()["tenants"] if t["id"] == CUSTOMER)
    app = next(a for a in tenant["applications"] if a["id"] == PPE_OBJECT)
    assert len(app["passwordCredentials"]) == 2 and answers == []
    sb.control.release(hold)
    worker.join(timeout=10)
    assert answers == [200]


def credentials_of(sb: SandboxHandle, object_id: str = PPE_OBJECT) -> list[dict[str, Any]]:
    tenant = next(t for t in sb.control.state()["tenants"] if t["id"] == CUSTOMER)
    return list(next(a for a in tenant["applications"] if a["id"] == object_id)["passwordCredentials"])


def add_password(sb: SandboxHandle, days: int) -> requests.Response:
    return call(sb, "POST", f"/applications/{PPE_OBJECT}/addPassword", msp_token(sb),
                json={"passwordCredential": {"displayName": "x", "endDateTime": f"+{days}d"}})


def restriction(kind: str, max_lifetime: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"restrictionType": kind, "maxLifetime": max_lifetime, "restrictForAppsCreatedAfterDateTime": None,
            **extra}


def test_tenant_default_policy_blocks_password_addition(sb: SandboxHandle) -> None:
    """CredentialTypeNotAllowedAsPerAppPolicy: 400, the policy named in the message, nothing created."""
    seed(sb)
    sb.control.seed({"tenants": [{"id": CUSTOMER, "defaultAppManagementPolicy": {
        "isEnabled": True, "applicationRestrictions": {"passwordCredentials": [restriction("passwordAddition")]}}}]})
    before = credentials_of(sb)
    refused = add_password(sb, 30)
    assert_graph_error(refused, 400, "CredentialTypeNotAllowedAsPerAppPolicy")
    assert refused.json()["error"]["message"] == (
        "Credential type not allowed as per assigned policy '00000000-0000-0000-0000-000000000000'."
    )
    assert credentials_of(sb) == before


def test_lifetime_policy_names_the_policy_and_creates_nothing(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.seed({"tenants": [{"id": CUSTOMER, "defaultAppManagementPolicy": {
        "isEnabled": True,
        "applicationRestrictions": {"passwordCredentials": [restriction("passwordLifetime", "P90D")]}}}]})
    refused = add_password(sb, 91)
    assert_graph_error(refused, 400, "CredentialInvalidLifetimeAsPerAppPolicy")
    assert "as per assigned policy '00000000-0000-0000-0000-000000000000'" in refused.json()["error"]["message"]
    assert len(credentials_of(sb)) == 1
    assert add_password(sb, 89).status_code == 200


def test_app_policy_overrides_the_default_restriction_by_restriction(sb: SandboxHandle) -> None:
    """An appManagementPolicy on the app wins over the tenant default, per restriction type."""
    seed(sb)
    sb.control.seed({"tenants": [{
        "id": CUSTOMER,
        "defaultAppManagementPolicy": {"isEnabled": True, "applicationRestrictions": {"passwordCredentials": [
            restriction("passwordAddition"), restriction("passwordLifetime", "P365D")]}},
        "applications": [{"appId": PPE_APP, "appManagementPolicy": {
            "id": "5e1f0000-0000-4000-8000-000000000001", "displayName": "Proofpoint sync: secrets up to 60 days",
            "isEnabled": True, "restrictions": {"passwordCredentials": [
                restriction("passwordAddition", state="disabled"), restriction("passwordLifetime", "P60D")]}}}],
    }]})
    refused = add_password(sb, 90)
    assert_graph_error(refused, 400, "CredentialInvalidLifetimeAsPerAppPolicy")
    assert "'5e1f0000-0000-4000-8000-000000000001'" in refused.json()["error"]["message"]
    assert add_password(sb, 59).status_code == 200
    # Another app of the tenant still falls under the default, which blocks passwords.
    admin = token(sb, CUSTOMER, ADMIN_APP, ADMIN_SECRET)
    other = call(sb, "POST", f"/applications/{unowned_id_of(sb)}/addPassword", admin, json={})
    assert_graph_error(other, 400, "CredentialTypeNotAllowedAsPerAppPolicy")


def test_disabled_policy_and_enforcement_date_do_not_apply(sb: SandboxHandle) -> None:
    seed(sb)
    after = "2020-01-01T00:00:00Z"
    sb.control.seed({"tenants": [{"id": CUSTOMER, "defaultAppManagementPolicy": {
        "isEnabled": False, "applicationRestrictions": {"passwordCredentials": [restriction("passwordAddition")]}}}]})
    assert add_password(sb, 30).status_code == 200
    # Enforced only for apps created on or after the date: the seeded app is older, a new one is not.
    sb.control.seed({"tenants": [{"id": CUSTOMER, "defaultAppManagementPolicy": {
        "isEnabled": True, "applicationRestrictions": {"passwordCredentials": [
            restriction("passwordAddition", restrictForAppsCreatedAfterDateTime=after)]}},
        "applications": [{"appId": PPE_APP, "createdDateTime": "2019-06-01T00:00:00Z"}]}]})
    assert add_password(sb, 30).status_code == 200
    sb.control.seed({"tenants": [{"id": CUSTOMER, "applications": [
        {"appId": NOBODY_APP, "createdDateTime": "-1d"}]}]})
    admin = token(sb, CUSTOMER, ADMIN_APP, ADMIN_SECRET)
    tenant = next(t for t in sb.control.state()["tenants"] if t["id"] == CUSTOMER)
    nobody_id = next(a["id"] for a in tenant["applications"] if a["appId"] == NOBODY_APP)
    assert_graph_error(call(sb, "POST", f"/applications/{nobody_id}/addPassword", admin, json={}),
                       400, "CredentialTypeNotAllowedAsPerAppPolicy")
