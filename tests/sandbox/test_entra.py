"""The Entra stand-in: client secrets, federated assertions, propagation delay, expiry, clock offset."""

from __future__ import annotations

import time
from typing import Any

import jwt
import requests

from tests.conftest import SandboxHandle
from tests.material import client_secret

CUSTOMER = "c0000000-0000-4000-8000-000000000001"
OTHER = "c0000000-0000-4000-8000-000000000002"
PPE_APP = "a0000000-0000-4000-8000-000000000001"
SECRET = client_secret("abc")
OLD_SECRET = client_secret("old")
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def seed_customer(sb: SandboxHandle) -> None:
    sb.control.seed(
        {
            "tenants": [
                {
                    "id": CUSTOMER,
                    "name": "Fabrikam",
                    "applications": [
                        {
                            "appId": PPE_APP,
                            "displayName": "Proofpoint Essentials",
                            "owners": ["msp-app"],
                            "passwordCredentials": [
                                {"displayName": "current", "secretText": SECRET, "endDateTime": "+300d"},
                                {"displayName": "old", "secretText": OLD_SECRET, "endDateTime": "-1d"},
                            ],
                        }
                    ],
                    "grants": [{"appId": "msp-app", "roles": ["Application.ReadWrite.OwnedBy"]}],
                },
                {"id": OTHER, "name": "Northwind"},
            ]
        }
    )


def token_request(sb: SandboxHandle, tenant: str, **form: str) -> requests.Response:
    form.setdefault("grant_type", "client_credentials")
    form.setdefault("scope", GRAPH_SCOPE)
    url = f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/token"
    return requests.post(url, data=form, verify=sb.ca_file, timeout=10)


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def aadsts(response: requests.Response) -> int:
    return int(response.json()["error_codes"][0])


def test_openid_configuration_names_the_token_endpoint(sb: SandboxHandle) -> None:
    url = f"{sb.endpoints['entra']}/{CUSTOMER}/v2.0/.well-known/openid-configuration"
    doc = requests.get(url, verify=sb.ca_file, timeout=10).json()
    assert doc["token_endpoint"] == f"{sb.endpoints['entra']}/{CUSTOMER}/oauth2/v2.0/token"
    assert doc["issuer"] == f"{sb.endpoints['entra']}/{CUSTOMER}/v2.0"


def test_client_secret_gets_a_token_with_the_documented_claims(sb: SandboxHandle) -> None:
    seed_customer(sb)
    response = token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 3000
    claims = claims_of(body["access_token"])
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["tid"] == CUSTOMER and claims["appid"] == PPE_APP and claims["azp"] == PPE_APP
    assert claims["idtyp"] == "app" and claims["iss"] == f"{sb.endpoints['entra']}/{CUSTOMER}/v2.0"
    assert {"oid", "roles", "iat", "nbf", "exp"} <= claims.keys()


def test_wrong_secret_is_7000215(sb: SandboxHandle) -> None:
    seed_customer(sb)
    response = token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret="nope")
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client" and aadsts(response) == 7000215
    assert body["error_description"].startswith("AADSTS7000215:")
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()


def test_expired_secret_is_7000222(sb: SandboxHandle) -> None:
    seed_customer(sb)
    response = token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=OLD_SECRET)
    assert response.status_code == 401 and aadsts(response) == 7000222


def test_app_without_service_principal_in_tenant_is_700016(sb: SandboxHandle) -> None:
    seed_customer(sb)
    response = token_request(sb, OTHER, client_id=PPE_APP, client_secret=SECRET)
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client" and aadsts(response) == 700016


def test_unknown_tenant_is_90002(sb: SandboxHandle) -> None:
    response = token_request(sb, "d0000000-0000-4000-8000-00000000dead", client_id=PPE_APP, client_secret=SECRET)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request" and aadsts(response) == 90002


def test_clock_offset_expires_a_secret(sb: SandboxHandle) -> None:
    seed_customer(sb)
    sb.control.set_clock(301 * 86400)
    response = token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET)
    assert aadsts(response) == 7000222


def test_clock_offset_expires_tokens(sb: SandboxHandle) -> None:
    seed_customer(sb)
    token = token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET).json()["access_token"]
    graph = f"{sb.endpoints['graph']}/v1.0/applications"
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(graph, headers=headers, verify=sb.ca_file, timeout=10).status_code == 403  # no role
    sb.control.set_clock(2 * 3600)
    response = requests.get(graph, headers=headers, verify=sb.ca_file, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_a_token_minted_after_the_clock_moved_ahead_is_valid(sb: SandboxHandle) -> None:
    # Its nbf and iat are sandbox time, a day ahead of the real clock: judged by the sandbox clock, it works.
    seed_customer(sb)
    sb.control.set_clock(25 * 3600)
    token = token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET).json()["access_token"]
    graph = f"{sb.endpoints['graph']}/v1.0/applications"
    response = requests.get(graph, headers={"Authorization": f"Bearer {token}"}, verify=sb.ca_file, timeout=10)
    assert response.status_code == 403, response.text  # authenticated (the app has no Graph role), not 401


def test_check_client_secret_through_state_matches_token_endpoint(sb: SandboxHandle) -> None:
    seed_customer(sb)
    state = sb.control.state()
    tenant = next(t for t in state["tenants"] if t["id"] == CUSTOMER)
    secrets = [p["secretText"] for a in tenant["applications"] for p in a["passwordCredentials"]]
    assert SECRET in secrets and OLD_SECRET in secrets


def identity_token(sb: SandboxHandle, resource: str) -> requests.Response:
    return requests.get(
        sb.settings["IDENTITY_ENDPOINT"],
        params={"resource": resource, "api-version": "2019-08-01", "client_id": sb.settings["AZURE_CLIENT_ID"]},
        headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]},
        timeout=10,
    )


def test_managed_identity_assertion_signs_in_the_msp_app_in_a_consenting_tenant(sb: SandboxHandle) -> None:
    seed_customer(sb)
    response = identity_token(sb, "api://AzureADTokenExchange")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["client_id"] == sb.settings["AZURE_CLIENT_ID"]
    assert int(body["expires_on"]) > 0
    assertion = body["access_token"]
    assert claims_of(assertion)["aud"] == "api://AzureADTokenExchange"
    form = {
        "client_id": sb.settings["MSP_APP_CLIENT_ID"],
        "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    ok = token_request(sb, CUSTOMER, **form)
    assert ok.status_code == 200, ok.text
    assert claims_of(ok.json()["access_token"])["roles"] == ["Application.ReadWrite.OwnedBy"]
    # Northwind never consented to the MSP app.
    assert aadsts(token_request(sb, OTHER, **form)) == 700016


def test_assertion_for_another_app_has_no_matching_federated_credential(sb: SandboxHandle) -> None:
    seed_customer(sb)
    assertion = identity_token(sb, "api://AzureADTokenExchange").json()["access_token"]
    response = token_request(
        sb, CUSTOMER, client_id=PPE_APP, client_assertion=assertion,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    )
    assert response.status_code == 400 and aadsts(response) == 70021


def test_identity_endpoint_needs_the_header(sb: SandboxHandle) -> None:
    response = requests.get(
        sb.settings["IDENTITY_ENDPOINT"], params={"resource": "https://vault.azure.net", "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": "wrong"}, timeout=10,
    )
    assert response.status_code == 401


def test_managed_identity_vault_token_is_for_the_msp_tenant(sb: SandboxHandle) -> None:
    claims = claims_of(identity_token(sb, "https://vault.azure.net").json()["access_token"])
    assert claims["aud"] == "https://vault.azure.net" and claims["tid"] == sb.settings["MSP_TENANT_ID"]


def test_new_secret_waits_for_propagation(sb: SandboxHandle) -> None:
    seed_customer(sb)
    sb.control.set_propagation_delay(0.5)
    msp_token = token_request(
        sb, CUSTOMER, client_id=sb.settings["MSP_APP_CLIENT_ID"],
        client_assertion=identity_token(sb, "api://AzureADTokenExchange").json()["access_token"],
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    ).json()["access_token"]
    app = requests.get(
        f"{sb.endpoints['graph']}/v1.0/applications(appId='{PPE_APP}')",
        headers={"Authorization": f"Bearer {msp_token}"}, verify=sb.ca_file, timeout=10,
    ).json()
    created = requests.post(
        f"{sb.endpoints['graph']}/v1.0/applications/{app['id']}/addPassword", json={},
        headers={"Authorization": f"Bearer {msp_token}"}, verify=sb.ca_file, timeout=10,
    ).json()
    assert aadsts(token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=created["secretText"])) == 7000215
    time.sleep(0.6)
    assert token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=created["secretText"]).status_code == 200


def refusal(response: requests.Response) -> tuple[int, str, int, str]:
    body = response.json()
    return response.status_code, body["error"], aadsts(response), body["error_description"]


def test_a_disabled_service_principal_is_refused_with_7000112_whatever_the_secret(sb: SandboxHandle) -> None:
    seed_customer(sb)
    sb.control.seed({"tenants": [{"id": CUSTOMER, "servicePrincipals": [{"appId": PPE_APP, "accountEnabled": False}]}]})
    for secret in (SECRET, "wrong"):
        status, error, code, description = refusal(token_request(sb, CUSTOMER, client_id=PPE_APP,
                                                                 client_secret=secret))
        assert (status, error, code) == (400, "unauthorized_client", 7000112)
        assert description.startswith(f"AADSTS7000112: Application '{PPE_APP}'(Proofpoint Essentials) is disabled.")
    sps = {sp["appId"]: sp for sp in next(t for t in sb.control.state()["tenants"]
                                          if t["id"] == CUSTOMER)["servicePrincipals"]}
    assert sps[PPE_APP]["accountEnabled"] is False
    sb.control.seed({"tenants": [{"id": CUSTOMER, "servicePrincipals": [{"appId": PPE_APP, "accountEnabled": True}]}]})
    assert token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET).status_code == 200


BLOCK = {"displayName": "Block the Proofpoint app", "state": "enabled",
         "conditions": {"clientApplications": {"includeServicePrincipals": [PPE_APP]}},
         "grantControls": {"operator": "OR", "builtInControls": ["block"]}}


def test_a_conditional_access_block_refuses_a_good_secret_with_53003(sb: SandboxHandle) -> None:
    seed_customer(sb)
    sb.control.seed({"tenants": [{"id": CUSTOMER, "conditionalAccessPolicies": [BLOCK]}]})
    status, error, code, description = refusal(token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET))
    assert (status, error, code) == (400, "invalid_grant", 53003)
    assert description.startswith("AADSTS53003: Access has been blocked by Conditional Access policies.")
    # The secret is judged first: a wrong one is still "invalid secret".
    assert aadsts(token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret="wrong")) == 7000215
    for lifted in ([{**BLOCK, "state": "enabledForReportingButNotEnforced"}], [{**BLOCK, "conditions": {
            "clientApplications": {"includeServicePrincipals": ["ServicePrincipalsInMyTenant"],
                                   "excludeServicePrincipals": [PPE_APP]}}}], []):
        sb.control.seed({"tenants": [{"id": CUSTOMER, "conditionalAccessPolicies": lifted}]})
        assert token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET).status_code == 200, lifted
    sb.control.seed({"tenants": [{"id": CUSTOMER, "conditionalAccessPolicies": [{**BLOCK, "conditions": {
        "clientApplications": {"includeServicePrincipals": ["ServicePrincipalsInMyTenant"]}}}]}]})
    assert aadsts(token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET)) == 53003


def test_an_injected_fault_with_an_aadsts_message_lists_its_code(sb: SandboxHandle) -> None:
    seed_customer(sb)
    sb.control.add_fault("entra", path="/token$", status=400, code="invalid_request",
                         message="AADSTS90002: Tenant 'x' not found.")
    assert refusal(token_request(sb, CUSTOMER, client_id=PPE_APP, client_secret=SECRET))[:3] == \
        (400, "invalid_request", 90002)
