"""The sandbox's partner relationship over real HTTPS: the device code flow (pending, slow_down, declined, expired),
refresh tokens redeemed in a customer tenant under GDAP (AADSTS50020 without a relationship, AADSTS65001 before the
app is consented there), the GDAP reads, Partner Center's application consents (403 without a consenting role, 409
when it exists), and the delegated Graph writes refused without the GDAP role each needs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
import requests

from sandbox.client import answer_device_code, sign_in_as
from sandbox.gdap import customers_seed
from tests.conftest import SandboxHandle

MSP = "5a1d0000-0000-4000-8000-000000000001"
MSP_APP = "5a1d0000-0000-4000-8000-000000000004"
ADMIN = "partner-admin@msp.example"
GRAPH = "https://graph.microsoft.com"
PC_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"
OWNED_BY_ID = "18a4783c-866b-4cc7-a460-3d5e5662c884"
GRAPH_SCOPES = "DelegatedAdminRelationship.Read.All Application.ReadWrite.All AppRoleAssignment.ReadWrite.All " \
               "Domain.Read.All User.Read"


def _token(sb: SandboxHandle, tenant: str, **form: str) -> requests.Response:
    return requests.post(f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/token", data=form, verify=sb.ca_file,
                         timeout=10)


def _code(response: requests.Response) -> int:
    return int(response.json()["error_codes"][0])


def _device_sign_in(sb: SandboxHandle, upn: str = ADMIN, scope: str = f"{GRAPH_SCOPES} offline_access",
                    tenant: str = MSP) -> dict[str, Any]:
    sb.control.set_device_code_interval(0)
    start = requests.post(f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/devicecode",
                          data={"client_id": MSP_APP, "scope": scope}, verify=sb.ca_file, timeout=10).json()
    answer_device_code(sb.endpoints["entra"], start["user_code"], upn, sb.ca_file)
    tokens = _token(sb, tenant, grant_type="urn:ietf:params:oauth:grant-type:device_code", client_id=MSP_APP,
                    device_code=start["device_code"])
    assert tokens.status_code == 200, tokens.text
    result: dict[str, Any] = tokens.json()
    return result


def _refresh(sb: SandboxHandle, refresh_token: str, tenant: str, scope: str) -> requests.Response:
    return _token(sb, tenant, grant_type="refresh_token", client_id=MSP_APP, refresh_token=refresh_token,
                  scope=scope)


def _graph(sb: SandboxHandle, method: str, path: str, token: str, body: dict[str, Any] | None = None
           ) -> requests.Response:
    return requests.request(method, f"{sb.endpoints['graph']}/v1.0{path}", json=body, verify=sb.ca_file, timeout=10,
                            headers={"Authorization": f"Bearer {token}"})


def _pc(sb: SandboxHandle, method: str, customer: str, token: str, body: dict[str, Any] | None = None,
        app_id: str = "") -> requests.Response:
    path = f"/v1/customers/{customer}/applicationconsents" + (f"/{app_id}" if app_id else "")
    return requests.request(method, sb.endpoints["partnercenter"] + path, json=body, verify=sb.ca_file, timeout=10,
                            headers={"Authorization": f"Bearer {token}"})


def _claims(token: str) -> dict[str, Any]:
    result: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return result


def _consent_body(scope: str = "Application.ReadWrite.All,AppRoleAssignment.ReadWrite.All,Domain.Read.All"
                  ) -> dict[str, Any]:
    return {"applicationId": MSP_APP, "applicationGrants": [
        {"enterpriseApplicationId": "00000003-0000-0000-c000-000000000000", "scope": scope}]}


def _app_only(sb: SandboxHandle, tenant: str) -> requests.Response:
    """The MSP app's client-credentials token in the tenant, with the managed identity's assertion (as the rotator)."""
    assertion = requests.get(sb.settings["IDENTITY_ENDPOINT"], params={
        "resource": "api://AzureADTokenExchange", "api-version": "2019-08-01"}, headers={
        "X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10).json()["access_token"]
    return _token(sb, tenant, grant_type="client_credentials", client_id=MSP_APP, scope=f"{GRAPH}/.default",
                  client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                  client_assertion=assertion)


def _customers(sb: SandboxHandle, count: int = 2, missing_role_every: int = 0) -> list[str]:
    return sb.control.seed_gdap_customers(count, missing_role_every=missing_role_every)


def test_device_code_states_pending_slow_down_declined_expired_and_public_client_needed(sb: SandboxHandle) -> None:
    sb.control.set_device_code_interval(5)
    start = requests.post(f"{sb.endpoints['entra']}/organizations/oauth2/v2.0/devicecode",
                          data={"client_id": MSP_APP, "scope": "User.Read offline_access"}, verify=sb.ca_file,
                          timeout=10).json()
    assert start["interval"] == 5 and start["expires_in"] == 900 and start["user_code"] in start["message"]
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": MSP_APP,
             "device_code": start["device_code"]}
    first = _token(sb, "organizations", **grant)
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    assert _token(sb, "organizations", **grant).json()["error"] == "slow_down"  # polled within the interval
    answer_device_code(sb.endpoints["entra"], start["user_code"], ADMIN, sb.ca_file, approve=False)
    assert _token(sb, "organizations", **grant).json()["error"] == "authorization_declined"

    again = requests.post(f"{sb.endpoints['entra']}/{MSP}/oauth2/v2.0/devicecode",
                          data={"client_id": MSP_APP, "scope": "User.Read"}, verify=sb.ca_file, timeout=10).json()
    sb.control.set_clock(16 * 60)
    expired = _token(sb, MSP, grant_type=grant["grant_type"], client_id=MSP_APP, device_code=again["device_code"])
    assert expired.json()["error"] == "expired_token" and _code(expired) == 70019
    with pytest.raises(PermissionError):
        answer_device_code(sb.endpoints["entra"], again["user_code"], ADMIN, sb.ca_file)


def test_device_code_signs_the_partner_admin_in_once_and_the_code_is_spent(sb: SandboxHandle) -> None:
    tokens = _device_sign_in(sb)
    claims = _claims(tokens["access_token"])
    assert claims["tid"] == MSP and claims["upn"] == ADMIN and "DelegatedAdminRelationship.Read.All" in claims["scp"]
    assert claims["appidacr"] == "0" and tokens["refresh_token"]  # a public client; offline_access asked


def test_gdap_reads_list_relationships_with_roles_and_access_assignments(sb: SandboxHandle) -> None:
    customers = _customers(sb, 3, missing_role_every=3)
    sb.control.seed({"gdap": {"relationships": [
        {"customer": {"tenantId": customers[0], "displayName": "Customer 0001"}, "status": "terminated",
         "roles": ["Global Administrator"], "accessAssignments": []}]}})
    token = _device_sign_in(sb)["access_token"]
    active = _graph(sb, "GET", "/tenantRelationships/delegatedAdminRelationships?$filter=status eq 'active'", token)
    assert active.status_code == 200
    rows = active.json()["value"]
    assert sorted(r["customer"]["tenantId"] for r in rows) == sorted(customers)
    third = next(r for r in rows if r["customer"]["tenantId"] == customers[2])
    assert [u["roleDefinitionId"] for u in third["accessDetails"]["unifiedRoles"]] == [
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"]  # Application Administrator only: the missing-role customer
    assignments = _graph(sb, "GET", f"/tenantRelationships/delegatedAdminRelationships/{rows[0]['id']}"
                         "/accessAssignments", token).json()["value"]
    assert {a["accessContainer"]["accessContainerId"] for a in assignments} == {
        "5a1d0000-0000-4000-8000-000000000041", "5a1d0000-0000-4000-8000-000000000042"}
    assert _graph(sb, "GET", "/tenantRelationships/delegatedAdminRelationships?$top=301", token).status_code == 400
    assert len(_graph(sb, "GET", "/tenantRelationships/delegatedAdminRelationships?$top=2", token).json()["value"]) == 2
    everything = _graph(sb, "GET", "/tenantRelationships/delegatedAdminRelationships", token).json()["value"]
    assert "terminated" in {r["status"] for r in everything}
    groups = _graph(sb, "GET", "/me/transitiveMemberOf", token).json()["value"]
    assert {g["displayName"] for g in groups} == {"GDAP App Admins", "GDAP Privileged Role Admins", "AdminAgents"}
    customers_seen = _graph(sb, "GET", "/tenantRelationships/delegatedAdminCustomers", token).json()["value"]
    assert {c["tenantId"] for c in customers_seen} == set(customers)
    no_scope = _device_sign_in(sb, scope="User.Read")["access_token"]
    denied = _graph(sb, "GET", "/tenantRelationships/delegatedAdminRelationships", no_scope)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"
    assert denied.json()["error"]["innerError"]["request-id"]


def test_refresh_in_a_customer_tenant_needs_a_relationship_and_the_app_consented_there(sb: SandboxHandle) -> None:
    customers = _customers(sb, 1)
    stranger = str(uuid.uuid4())
    sb.control.seed({"tenants": [{"id": stranger, "name": "No Relationship"}]})
    refresh = _device_sign_in(sb)["refresh_token"]
    no_relationship = _refresh(sb, refresh, stranger, f"{GRAPH}/.default")
    assert no_relationship.status_code == 400 and _code(no_relationship) == 50020
    not_consented = _refresh(sb, refresh, customers[0], f"{GRAPH}/.default")
    assert _code(not_consented) == 65001
    pc = _refresh(sb, refresh, MSP, PC_SCOPE)
    assert pc.status_code == 200 and _claims(pc.json()["access_token"])["aud"] == "https://api.partnercenter.microsoft.com"
    assert _pc(sb, "POST", customers[0], pc.json()["access_token"], _consent_body()).status_code == 201
    customer = _refresh(sb, pc.json()["refresh_token"], customers[0], f"{GRAPH}/.default")
    assert customer.status_code == 200, customer.text
    claims = _claims(customer.json()["access_token"])
    assert claims["tid"] == customers[0] and claims["idp"] == f"https://sts.windows.net/{MSP}/"
    assert set(claims["scp"].split()) == {"Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All",
                                          "Domain.Read.All"}  # what Partner Center consented there
    assert set(claims["wids"]) == {"9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3", "e8611ab8-c189-46e8-94e1-60213ab1f814"}
    garbage = _refresh(sb, "1.Anot-a-token", customers[0], f"{GRAPH}/.default")
    assert garbage.json()["error"] == "invalid_grant"


def _customer_token(sb: SandboxHandle, customer: str) -> str:
    refresh = _device_sign_in(sb)["refresh_token"]
    pc = _refresh(sb, refresh, MSP, PC_SCOPE).json()
    assert _pc(sb, "POST", customer, pc["access_token"], _consent_body()).status_code == 201
    answer = _refresh(sb, pc["refresh_token"], customer, f"{GRAPH}/.default")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_partner_center_consent_refusals_conflict_and_delete(sb: SandboxHandle) -> None:
    customers = _customers(sb, 1)
    sb.control.seed({"gdap": {"relationships": [
        {"customer": {"tenantId": str(uuid.uuid5(uuid.NAMESPACE_URL, "x")), "displayName": "Readers only"},
         "roles": ["Directory Readers"], "accessAssignments": [
             {"group": "5a1d0000-0000-4000-8000-000000000041", "roles": ["Directory Readers"]}]},
        {"customer": {"tenantId": str(uuid.uuid5(uuid.NAMESPACE_URL, "y")), "displayName": "Expired"},
         "roles": ["Application Administrator"], "endDateTime": "-1d", "accessAssignments": [
             {"group": "5a1d0000-0000-4000-8000-000000000041", "roles": ["Application Administrator"]}]}]}})
    pc_token = _refresh(sb, _device_sign_in(sb)["refresh_token"], MSP, PC_SCOPE).json()["access_token"]
    readers = _pc(sb, "POST", str(uuid.uuid5(uuid.NAMESPACE_URL, "x")), pc_token, _consent_body())
    assert readers.status_code == 403 and "Application Administrator" in readers.json()["description"]
    expired = _pc(sb, "POST", str(uuid.uuid5(uuid.NAMESPACE_URL, "y")), pc_token, _consent_body())
    assert expired.status_code == 403 and "no active" in expired.json()["description"]
    assert _pc(sb, "POST", str(uuid.uuid4()), pc_token, _consent_body()).status_code == 404
    graph_token = _device_sign_in(sb)["access_token"]
    assert _pc(sb, "POST", customers[0], graph_token, _consent_body()).status_code == 401  # Graph's audience
    created = _pc(sb, "POST", customers[0], pc_token, _consent_body())
    assert created.status_code == 201
    tenant = next(t for t in sb.control.state()["tenants"] if t["id"] == customers[0])
    msp_sp = next(s for s in tenant["servicePrincipals"] if s["appId"] == MSP_APP)
    assert msp_sp["roles"] == []  # delegated grants only: the application permissions come from Graph afterwards
    assert tenant["delegatedGrants"][MSP_APP] == ["AppRoleAssignment.ReadWrite.All", "Application.ReadWrite.All",
                                                  "Domain.Read.All"]
    assert _pc(sb, "POST", customers[0], pc_token, _consent_body()).status_code == 409
    listed = _pc(sb, "GET", customers[0], pc_token).json()
    assert listed["totalCount"] == 1 and listed["items"][0]["applicationId"] == MSP_APP
    assert _pc(sb, "DELETE", customers[0], pc_token, app_id=MSP_APP).status_code == 204
    assert _pc(sb, "DELETE", customers[0], pc_token, app_id=MSP_APP).status_code == 404
    tenant = next(t for t in sb.control.state()["tenants"] if t["id"] == customers[0])
    assert MSP_APP not in {s["appId"] for s in tenant["servicePrincipals"]}


def test_graph_under_gdap_assigns_the_permission_adds_the_owner_and_app_only_tokens_follow(sb: SandboxHandle) -> None:
    customers = _customers(sb, 1)
    token = _customer_token(sb, customers[0])
    msp_sp = _graph(sb, "GET", f"/servicePrincipals(appId='{MSP_APP}')", token).json()
    again = _graph(sb, "POST", "/servicePrincipals", token, {"appId": MSP_APP})
    assert again.status_code == 409  # made by the consent already
    graph_sp = _graph(sb, "GET", "/servicePrincipals(appId='00000003-0000-0000-c000-000000000000')", token).json()
    assert OWNED_BY_ID in {r["id"] for r in graph_sp["appRoles"]}
    body = {"principalId": msp_sp["id"], "resourceId": graph_sp["id"], "appRoleId": OWNED_BY_ID}
    assigned = _graph(sb, "POST", f"/servicePrincipals/{graph_sp['id']}/appRoleAssignedTo", token, body)
    assert assigned.status_code == 201 and assigned.json()["appRoleId"] == OWNED_BY_ID
    duplicate = _graph(sb, "POST", f"/servicePrincipals/{graph_sp['id']}/appRoleAssignedTo", token, body)
    assert duplicate.status_code == 400 and "already exists" in duplicate.json()["error"]["message"]
    listed = _graph(sb, "GET", f"/servicePrincipals/{graph_sp['id']}/appRoleAssignedTo", token).json()["value"]
    assert [(a["principalId"], a["appRoleId"]) for a in listed] == [(msp_sp["id"], OWNED_BY_ID)]
    held = _graph(sb, "GET", f"/servicePrincipals/{msp_sp['id']}/appRoleAssignments", token).json()["value"]
    assert [(a["resourceId"], a["appRoleId"]) for a in held] == [(graph_sp["id"], OWNED_BY_ID)]

    app = customers_seed(1)["tenants"][0]["applications"][0]["appId"]
    app_object = next(a["id"] for t in sb.control.state()["tenants"] if t["id"] == customers[0]
                      for a in t["applications"] if a["appId"] == app)
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{msp_sp['id']}"}
    assert _graph(sb, "POST", f"/applications/{app_object}/owners/$ref", token, ref).status_code == 204
    twice = _graph(sb, "POST", f"/applications/{app_object}/owners/$ref", token, ref)
    assert twice.status_code == 400 and twice.json()["error"]["message"] == (
        "One or more added object references already exist for the following modified properties: 'owners'.")
    # The rotator's own app-only token in the tenant now carries the role and sees itself as owner.
    app_only = _app_only(sb, customers[0])
    assert _claims(app_only.json()["access_token"])["roles"] == ["Application.ReadWrite.OwnedBy"]
    owners = _graph(sb, "GET", f"/applications/{app_object}/owners", app_only.json()["access_token"]).json()
    assert [o["id"] for o in owners["value"]] == [msp_sp["id"]]

    assert _graph(sb, "DELETE", f"/applications/{app_object}/owners/{msp_sp['id']}/$ref", token).status_code == 204
    assert _graph(sb, "DELETE", f"/applications/{app_object}/owners/{msp_sp['id']}/$ref", token).status_code == 404
    assert _graph(sb, "DELETE", f"/servicePrincipals/{msp_sp['id']}", token).status_code == 204
    assert _graph(sb, "DELETE", f"/servicePrincipals/{msp_sp['id']}", token).status_code == 404
    domains = _graph(sb, "GET", "/domains", token).json()["value"]
    assert [d["id"] for d in domains if d["isDefault"]] == ["customer0001.example"]


def test_a_relationship_missing_privileged_role_administrator_cannot_grant_graph_permissions(
        sb: SandboxHandle) -> None:
    customers = _customers(sb, 1, missing_role_every=1)
    token = _customer_token(sb, customers[0])
    msp_sp = _graph(sb, "GET", f"/servicePrincipals(appId='{MSP_APP}')", token).json()
    graph_sp = _graph(sb, "GET", "/servicePrincipals(appId='00000003-0000-0000-c000-000000000000')", token).json()
    denied = _graph(sb, "POST", f"/servicePrincipals/{graph_sp['id']}/appRoleAssignedTo", token,
                    {"principalId": msp_sp["id"], "resourceId": graph_sp["id"], "appRoleId": OWNED_BY_ID})
    assert denied.status_code == 403 and denied.json()["error"]["message"] == (
        "Insufficient privileges to complete the operation.")
    state = next(t for t in sb.control.state()["tenants"] if t["id"] == customers[0])
    assert next(s for s in state["servicePrincipals"] if s["appId"] == MSP_APP)["roles"] == []  # nothing changed


def test_a_customer_admin_signs_in_at_their_own_tenant_with_their_directory_role(sb: SandboxHandle) -> None:
    tenant = str(uuid.uuid4())
    sb.control.seed({"tenants": [{"id": tenant, "name": "Own Admin", "grants": [{"appId": "msp-app"}], "users": [
        {"userPrincipalName": "ga@own.example", "directoryRoles": ["Global Administrator"]},
        {"userPrincipalName": "user@own.example"}],
        "applications": [{"appId": str(uuid.uuid4()), "displayName": "Proofpoint"}]}]})
    admin = _device_sign_in(sb, "ga@own.example", "Application.ReadWrite.All", tenant)["access_token"]
    user = _device_sign_in(sb, "user@own.example", "Application.ReadWrite.All", tenant)["access_token"]
    msp_sp = _graph(sb, "GET", f"/servicePrincipals(appId='{MSP_APP}')", admin).json()
    app_object = next(a["id"] for t in sb.control.state()["tenants"] if t["id"] == tenant
                      for a in t["applications"] if a["displayName"] == "Proofpoint")
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{msp_sp['id']}"}
    assert _graph(sb, "POST", f"/applications/{app_object}/owners/$ref", user, ref).status_code == 403
    assert _graph(sb, "POST", f"/applications/{app_object}/owners/$ref", admin, ref).status_code == 204


def test_a_new_service_principal_is_unknown_to_the_token_endpoint_for_the_configured_delay(sb: SandboxHandle) -> None:
    customers = _customers(sb, 1)
    sb.control.set_service_principal_delay(3600)
    _customer_token(sb, customers[0])
    assert _code(_app_only(sb, customers[0])) == 700016
    sb.control.set_clock(3601)
    assert _app_only(sb, customers[0]).status_code == 200


def test_two_hundred_customers_seed_quickly_with_stable_ids(sb: SandboxHandle) -> None:
    began = time.monotonic()
    ids = _customers(sb, 200, missing_role_every=10)
    assert time.monotonic() - began < 20 and len(set(ids)) == 200
    assert ids == [t["id"] for t in customers_seed(200)["tenants"]]
    partner = sb.control.partner()
    assert len(partner["relationships"]) == 200 and partner["admin"]["userPrincipalName"] == ADMIN
    lacking = [r for r in partner["relationships"] if len(r["accessDetails"]["unifiedRoles"]) == 1]
    assert len(lacking) == 20


def test_a_customer_admin_picks_their_account_on_the_authorize_page_of_their_tenant(sb: SandboxHandle) -> None:
    tenant = str(uuid.uuid4())
    sb.control.seed({"tenants": [{"id": tenant, "name": "Picker", "grants": [{"appId": "msp-app"}], "users": [
        {"userPrincipalName": "appadmin@picker.example", "directoryRoles": ["Application Administrator"]}]}]})
    redirect = "http://localhost:7071/api/consent"
    query = {"client_id": MSP_APP, "response_type": "code", "redirect_uri": redirect, "response_mode": "query",
             "scope": "Application.ReadWrite.All offline_access", "state": "s"}
    url = f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/authorize?" + "&".join(
        f"{k}={requests.utils.quote(v, safe='')}" for k, v in query.items())
    with pytest.raises(LookupError):  # the partner admin is not a user of this tenant: not offered
        sign_in_as(url, ADMIN, sb.ca_file)
    answer = sign_in_as(url, "appadmin@picker.example", sb.ca_file)
    assertion = requests.get(sb.settings["IDENTITY_ENDPOINT"], params={
        "resource": "api://AzureADTokenExchange", "api-version": "2019-08-01"}, headers={
        "X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10).json()["access_token"]
    tokens = _token(sb, tenant, grant_type="authorization_code", client_id=MSP_APP, code=answer.params["code"],
                    redirect_uri=redirect, client_assertion=assertion,
                    client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer").json()
    claims = _claims(tokens["access_token"])
    assert claims["tid"] == tenant and claims["wids"] == ["9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"]
    assert "idp" not in claims and tokens["refresh_token"]


def test_partner_center_tokens_need_the_partner_tenants_consent_to_user_impersonation(sb: SandboxHandle) -> None:
    """The partner tenant's admin consent to Partner Center's user_impersonation (create-msp-app.sh grants it; the
    default world has it) is what lets the admin's refresh token reach Partner Center: withdrawn, AADSTS65001."""
    msp = next(t for t in sb.control.state()["tenants"] if t["id"] == MSP)
    assert msp["partnerCenterGrants"] == {MSP_APP: ["user_impersonation"]}
    sb.control.seed({"tenants": [{"id": MSP, "partnerCenterGrants": {MSP_APP: []}}]})
    refresh = _device_sign_in(sb)["refresh_token"]
    refused = _refresh(sb, refresh, MSP, PC_SCOPE)
    assert refused.status_code == 400 and _code(refused) == 65001 and "access_token" not in refused.json()
    graph = _refresh(sb, refresh, MSP, f"{GRAPH}/.default")  # Graph in the partner tenant is unaffected
    assert graph.status_code == 200, graph.text
    sb.control.seed({"tenants": [{"id": MSP, "partnerCenterGrants": {MSP_APP: ["user_impersonation"]}}]})
    allowed = _refresh(sb, refresh, MSP, PC_SCOPE)
    assert allowed.status_code == 200 and _claims(allowed.json()["access_token"])["aud"] == PC_SCOPE.rpartition("/")[0]


def test_the_gdap_read_scope_needs_the_partner_tenant_s_admin_consent_at_sign_in(sb: SandboxHandle) -> None:
    """DelegatedAdminRelationship.Read.All needs admin consent (Graph permissions reference): with the partner
    tenant's consent (what create-msp-app.sh grants, and the default world holds) the partner admin signs in; with
    it withdrawn, every way in answers AADSTS65001: the sign-in page sends consent_required back to the app, the
    device code and a refresh for the scope are refused, and `.default` no longer carries it."""
    from sandbox.world import PARTNER_SIGN_IN_GRAPH_SCOPES

    msp = next(t for t in sb.control.state()["tenants"] if t["id"] == MSP)
    assert msp["delegatedGrants"][MSP_APP] == sorted(PARTNER_SIGN_IN_GRAPH_SCOPES)
    refresh = _device_sign_in(sb)["refresh_token"]
    sb.control.add_redirect_uri("msp-app", "https://localhost/api/onboarding/callback")
    authorize = (f"{sb.endpoints['entra']}/{MSP}/oauth2/v2.0/authorize?client_id={MSP_APP}&response_type=code"
                 "&redirect_uri=https%3A%2F%2Flocalhost%2Fapi%2Fonboarding%2Fcallback&response_mode=query"
                 f"&scope={GRAPH}/DelegatedAdminRelationship.Read.All+offline_access&state=s-1"
                 "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256")
    assert "code" in sign_in_as(authorize, ADMIN, sb.ca_file).params

    sb.control.seed({"tenants": [{"id": MSP, "delegatedGrants": {MSP_APP: []}}]})  # the consent withdrawn

    answer = sign_in_as(authorize, ADMIN, sb.ca_file)
    assert answer.redirect_uri == "https://localhost/api/onboarding/callback" and "code" not in answer.params
    assert answer.params["error"] == "consent_required" and answer.params["state"] == "s-1"
    assert answer.params["error_description"].startswith("AADSTS65001: The user or administrator has not consented")
    assert "DelegatedAdminRelationship.Read.All" in answer.params["error_description"]
    start = requests.post(f"{sb.endpoints['entra']}/{MSP}/oauth2/v2.0/devicecode", verify=sb.ca_file, timeout=10,
                          data={"client_id": MSP_APP, "scope": f"{GRAPH_SCOPES} offline_access"}).json()
    answer_device_code(sb.endpoints["entra"], start["user_code"], ADMIN, sb.ca_file)
    refused = _token(sb, MSP, grant_type="urn:ietf:params:oauth:grant-type:device_code", client_id=MSP_APP,
                     device_code=start["device_code"])
    assert (refused.status_code, refused.json()["error"], _code(refused)) == (400, "invalid_grant", 65001)
    explicit = _refresh(sb, refresh, MSP, f"{GRAPH}/DelegatedAdminRelationship.Read.All")
    assert (explicit.status_code, _code(explicit)) == (400, 65001)
    default = _refresh(sb, refresh, MSP, f"{GRAPH}/.default")
    assert default.status_code == 200, default.text
    token = default.json()["access_token"]
    assert "DelegatedAdminRelationship" not in _claims(token)["scp"]
    assert _graph(sb, "GET", "/tenantRelationships/delegatedAdminRelationships", token).status_code == 403
    # a sign-in without the admin-only scope is not affected
    plain = authorize.replace(f"{GRAPH}/DelegatedAdminRelationship.Read.All+", "User.Read+")
    assert "code" in sign_in_as(plain, ADMIN, sb.ca_file).params

    sb.control.seed({"tenants": [{"id": MSP, "delegatedGrants": {MSP_APP: list(PARTNER_SIGN_IN_GRAPH_SCOPES)}}]})
    assert "code" in sign_in_as(authorize, ADMIN, sb.ca_file).params  # granted again: signs in
