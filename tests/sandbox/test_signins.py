"""Entra's sign-in log in the sandbox: every client-credentials sign-in is recorded (success and failure, key id, IP,
resource), visible after the reporting delay, read through beta /auditLogs/signIns with its filter subset, $top and
nextLink paging, newest first; refused without the permissions or the licence; one tenant never sees another's."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.conftest import SandboxHandle
from tests.material import client_secret

pytestmark = pytest.mark.sandbox

TENANT = "c0000000-0000-4000-8000-000000000031"
OTHER = "c0000000-0000-4000-8000-000000000032"
PPE_APP = "a0000000-0000-4000-8000-000000000031"
OTHER_APP = "a0000000-0000-4000-8000-000000000032"
READER_APP = "a0000000-0000-4000-8000-000000000033"
OLD_KEY = "d0000000-0000-4000-8000-000000000031"
NEW_KEY = "d0000000-0000-4000-8000-000000000032"
EXPIRED_KEY = "d0000000-0000-4000-8000-000000000033"
FILTER = "signInEventTypes/any(t: t eq 'servicePrincipal')"


class Keys:
    old = client_secret("old")
    new = client_secret("new")
    expired = client_secret("exp")
    other = client_secret("oth")
    reader = client_secret("rdr")


def seed(sb: SandboxHandle, *, license: str = "P1", roles: tuple[str, ...] = ("AuditLog.Read.All",
                                                                              "Directory.Read.All")) -> None:
    """A tenant with a Proofpoint app (two live keys, one expired), a reader app holding `roles`; another tenant."""
    sb.control.seed({"tenants": [
        {"id": TENANT, "name": "Fabrikam", "entraIdLicense": license,
         "applications": [
             {"appId": PPE_APP, "displayName": "Proofpoint Essentials", "passwordCredentials": [
                 {"keyId": OLD_KEY, "secretText": Keys.old, "startDateTime": "-400d", "endDateTime": "+10d"},
                 {"keyId": NEW_KEY, "secretText": Keys.new, "startDateTime": "-1d", "endDateTime": "+700d"},
                 {"keyId": EXPIRED_KEY, "secretText": Keys.expired, "startDateTime": "-400d", "endDateTime": "-1d"}]},
             {"appId": READER_APP, "displayName": "Log reader", "passwordCredentials": [
                 {"secretText": Keys.reader, "endDateTime": "+30d"}]}],
         "grants": [{"appId": READER_APP, "roles": list(roles)}]},
        {"id": OTHER, "name": "Northwind", "entraIdLicense": "P2",
         "applications": [{"appId": OTHER_APP, "displayName": "Proofpoint", "passwordCredentials": [
             {"secretText": Keys.other, "endDateTime": "+30d"}]}],
         "grants": [{"appId": OTHER_APP, "roles": ["AuditLog.Read.All", "Directory.Read.All"]}]},
    ]})


def token_response(sb: SandboxHandle, tenant: str, app_id: str, secret: str,
                   scope: str = "https://graph.microsoft.com/.default") -> requests.Response:
    return requests.post(f"{sb.endpoints['entra']}/{tenant}/oauth2/v2.0/token",
                         data={"grant_type": "client_credentials", "client_id": app_id, "client_secret": secret,
                               "scope": scope}, verify=sb.ca_file, timeout=10)


def token(sb: SandboxHandle, tenant: str = TENANT, app_id: str = READER_APP, secret: str = Keys.reader) -> str:
    response = token_response(sb, tenant, app_id, secret)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def read(sb: SandboxHandle, bearer: str, params: dict[str, str] | None = None, version: str = "beta",
         url: str | None = None) -> requests.Response:
    return requests.get(url or f"{sb.endpoints['graph']}/{version}/auditLogs/signIns",
                        params=None if url else {"$filter": FILTER, **(params or {})},
                        headers={"Authorization": f"Bearer {bearer}"}, verify=sb.ca_file, timeout=10)


def rows(sb: SandboxHandle, bearer: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = read(sb, bearer, params)
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


def of_app(found: list[dict[str, Any]], app_id: str = PPE_APP) -> list[dict[str, Any]]:
    return [r for r in found if r["appId"] == app_id]


def test_a_token_for_the_app_is_logged_with_its_key_address_and_resource_after_the_delay(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    bearer = token(sb)
    assert token_response(sb, TENANT, PPE_APP, Keys.new).status_code == 200
    assert token_response(sb, TENANT, PPE_APP, Keys.old, "https://vault.azure.net/.default").status_code == 200
    found = of_app(rows(sb, bearer))
    assert [(r["servicePrincipalCredentialKeyId"], r["resourceDisplayName"]) for r in found] == [
        (OLD_KEY, "Azure Key Vault"), (NEW_KEY, "Microsoft Graph")]  # newest first
    sp_id = next(s["id"] for t in sb.control.state()["tenants"] if t["id"] == TENANT for s in t["servicePrincipals"]
                 if s["appId"] == PPE_APP)
    for row in found:
        assert row["ipAddress"] == "127.0.0.1" and row["status"]["errorCode"] == 0
        assert row["servicePrincipalId"] == sp_id and row["signInEventTypes"] == ["servicePrincipal"]
        assert row["clientCredentialType"] == "clientSecret" and row["resourceTenantId"] == TENANT
        assert row["appDisplayName"] == "Proofpoint Essentials" and row["isInteractive"] is False


def test_records_appear_only_after_the_reporting_delay_on_the_sandbox_clock(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(300)
    bearer = token(sb)
    assert token_response(sb, TENANT, PPE_APP, Keys.new).status_code == 200
    assert of_app(rows(sb, bearer)) == []
    assert sb.control.sign_ins(TENANT)[-1]["keyId"] == NEW_KEY  # recorded, not yet visible
    sb.control.set_clock(299)
    assert of_app(rows(sb, token(sb))) == []
    sb.control.set_clock(301)
    assert [r["servicePrincipalCredentialKeyId"] for r in of_app(rows(sb, token(sb)))] == [NEW_KEY]


def test_the_default_delay_is_minutes_and_reset_restores_it(sb: SandboxHandle) -> None:
    assert sb.control.state()["signInDelaySeconds"] == 120
    sb.control.set_sign_in_delay(0)
    sb.control.reset()
    assert sb.control.state()["signInDelaySeconds"] == 120


def test_refused_secrets_are_logged_as_failures_with_the_entra_code(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    assert token_response(sb, TENANT, PPE_APP, Keys.expired).status_code == 401
    assert token_response(sb, TENANT, PPE_APP, client_secret("bad")).status_code == 401
    found = of_app(rows(sb, token(sb)))
    assert [(r["status"]["errorCode"], r["servicePrincipalCredentialKeyId"]) for r in found] == [
        (7000215, None), (7000222, EXPIRED_KEY)]
    assert found[1]["status"]["failureReason"].startswith("The provided client secret keys")
    # Only successes: status/errorCode eq 0.
    assert of_app(rows(sb, token(sb), {"$filter": f"{FILTER} and status/errorCode eq 0"})) == []


def test_proofpoint_syncs_sign_in_from_their_own_address_and_the_probe_from_another(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    sb.control.seed({"proofpoint": {"orgs": [{"domain": "fabrikam.example", "stack": "us1", "tenantId": TENANT,
                                              "settings": {"application_id": PPE_APP, "ad_key": Keys.old}}]}})
    sb.control.set_sign_in_addresses(proofpoint="198.51.100.77", token_endpoint="192.0.2.10")
    assert sb.control.proofpoint_sync() == [{"domain": "fabrikam.example", "ok": True, "error": None}]
    assert token_response(sb, TENANT, PPE_APP, Keys.new).status_code == 200
    found = of_app(rows(sb, token(sb)))
    assert [(r["servicePrincipalCredentialKeyId"], r["ipAddress"]) for r in found] == [
        (NEW_KEY, "192.0.2.10"), (OLD_KEY, "198.51.100.77")]
    sb.control.set_sign_in_addresses(peer=True)
    assert token_response(sb, TENANT, PPE_APP, Keys.new).status_code == 200
    assert of_app(rows(sb, token(sb)))[0]["ipAddress"] == "127.0.0.1"


def test_a_scheduled_sync_caught_up_by_a_clock_jump_is_logged_at_its_own_time(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    sb.control.seed({"proofpoint": {"orgs": [{"domain": "fabrikam.example", "stack": "us1", "tenantId": TENANT,
                                              "settings": {"application_id": PPE_APP, "ad_key": Keys.old,
                                                           "sync_frequency": 24}}]}})
    sb.control.set_clock(3 * 86400 + 60)
    synced = [r for r in sb.control.sign_ins(TENANT) if r["appId"] == PPE_APP]
    assert len(synced) == 3 and all(r["ipAddress"] == "198.51.100.25" for r in synced)
    assert len({r["createdDateTime"] for r in synced}) == 3  # one per slot, at the slot's time


def test_another_client_signs_in_through_the_control_api_from_its_address(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    assert sb.control.sign_in(TENANT, PPE_APP, Keys.old, ip_address="203.0.113.50", at="-2h") is None
    assert sb.control.sign_in(TENANT, PPE_APP, Keys.expired)
    found = of_app(rows(sb, token(sb)))
    assert [(r["servicePrincipalCredentialKeyId"], r["ipAddress"], r["status"]["errorCode"]) for r in found] == [
        (EXPIRED_KEY, "203.0.113.7", 7000222), (OLD_KEY, "203.0.113.50", 0)]


def test_filters_by_app_address_and_time_and_without_the_event_type_no_service_principal(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    for at, secret in (("-3h", Keys.old), ("-2h", Keys.new), ("-1h", Keys.old)):
        assert sb.control.sign_in(TENANT, PPE_APP, secret, at=at) is None
    bearer = token(sb)
    mine = rows(sb, bearer, {"$filter": f"appId eq '{PPE_APP}' and {FILTER}"})
    assert len(mine) == 3 and {r["appId"] for r in mine} == {PPE_APP}
    assert sb.control.sign_in(TENANT, PPE_APP, Keys.old, at="-30m", ip_address="192.0.2.60") is None
    addressed = rows(sb, bearer, {"$filter": f"({FILTER}) and (startswith(ipAddress,'192.0.2.'))"})
    assert [(r["servicePrincipalCredentialKeyId"], r["ipAddress"]) for r in addressed] == [(OLD_KEY, "192.0.2.60")]
    assert len(rows(sb, bearer, {"$filter": f"{FILTER} and ipAddress eq '203.0.113.7'"})) == 3
    since = sb.control.sign_ins(TENANT)[1]["createdDateTime"]
    until = sb.control.sign_ins(TENANT)[2]["createdDateTime"]
    recent = rows(sb, bearer, {"$filter": f"appId eq '{PPE_APP}' and {FILTER} and createdDateTime ge {since} "
                                          f"and createdDateTime le {until}"})
    assert [r["servicePrincipalCredentialKeyId"] for r in recent] == [OLD_KEY, NEW_KEY]
    oldest_first = rows(sb, bearer, {"$filter": f"appId eq '{PPE_APP}' and {FILTER}", "$orderby": "createdDateTime"})
    assert [r["createdDateTime"] for r in oldest_first] == sorted(r["createdDateTime"] for r in mine + addressed)
    # The default event type is interactive user sign-ins: none of these.
    plain = requests.get(f"{sb.endpoints['graph']}/beta/auditLogs/signIns",
                         headers={"Authorization": f"Bearer {bearer}"}, verify=sb.ca_file, timeout=10)
    assert plain.status_code == 200 and plain.json()["value"] == []


def test_paging_follows_next_link_with_top_and_keeps_pages_stable_while_sign_ins_arrive(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    for minute in range(7):
        assert sb.control.sign_in(TENANT, PPE_APP, Keys.new, at=f"-{10 + minute}m") is None
    bearer = token(sb)
    first = read(sb, bearer, {"$filter": f"appId eq '{PPE_APP}' and {FILTER}", "$top": "3"}).json()
    seen = list(first["value"])
    link = first["@odata.nextLink"]
    assert link.startswith(f"{sb.endpoints['graph']}/beta/auditLogs/signIns?") and "%24top=3" in link
    assert sb.control.sign_in(TENANT, PPE_APP, Keys.new) is None  # a new sign-in while paging
    while link:
        page = read(sb, bearer, url=link).json()
        seen += page["value"]
        link = page.get("@odata.nextLink")
    assert len(seen) == 7 and len({r["id"] for r in seen}) == 7
    assert [r["createdDateTime"] for r in seen] == sorted((r["createdDateTime"] for r in seen), reverse=True)


@pytest.mark.parametrize("top", ["0", "1001", "many"])
def test_a_page_size_outside_1_to_1000_is_refused(sb: SandboxHandle, top: str) -> None:
    seed(sb)
    response = read(sb, token(sb), {"$top": top})
    assert response.status_code == 400 and response.json()["error"]["code"] == "BadRequest"


@pytest.mark.parametrize("clause", [
    "appId ne 'x'", "startswith(appId,'a')", f"{FILTER} or appId eq 'x'", "createdDateTime ge yesterday",
    # Documented as not filterable (signin.md): the key id at all, createdDateTime with gt/lt, errorCode with ne.
    f"servicePrincipalCredentialKeyId eq '{OLD_KEY}'", "createdDateTime gt 2026-01-01T00:00:00Z",
    "createdDateTime lt 2026-01-01T00:00:00Z", "status/errorCode ne 0",
])
def test_a_filter_outside_the_served_subset_is_refused_not_ignored(sb: SandboxHandle, clause: str) -> None:
    seed(sb)
    response = read(sb, token(sb), {"$filter": clause})
    assert response.status_code == 400, response.text


def test_v1_knows_no_service_principal_event_types_nor_key_ids(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    assert token_response(sb, TENANT, PPE_APP, Keys.new).status_code == 200
    response = read(sb, token(sb), version="v1.0")
    assert response.status_code == 400 and "signineventtypes" in response.json()["error"]["message"]
    plain = requests.get(f"{sb.endpoints['graph']}/v1.0/auditLogs/signIns",
                         headers={"Authorization": f"Bearer {token(sb)}"}, verify=sb.ca_file, timeout=10)
    assert plain.status_code == 200 and plain.json()["value"] == []


@pytest.mark.parametrize(("license", "roles", "code"), [
    ("P1", ("Application.Read.All",), "Authorization_RequestDenied"),
    ("P1", ("Directory.Read.All",), "Authorization_RequestDenied"),
    ("P1", ("AuditLog.Read.All",), "Authentication_RequestFromNonPremiumTenantOrB2CTenant"),
    ("free", ("AuditLog.Read.All", "Directory.Read.All"), "Authentication_RequestFromNonPremiumTenantOrB2CTenant"),
])
def test_a_tenant_without_the_permissions_or_the_licence_refuses_as_graph_does(
    sb: SandboxHandle, license: str, roles: tuple[str, ...], code: str,
) -> None:
    seed(sb, license=license, roles=roles)
    response = read(sb, token(sb))
    assert response.status_code == 403 and response.json()["error"]["code"] == code


def test_p2_reads_and_a_tenant_is_free_unless_seeded(sb: SandboxHandle) -> None:
    seed(sb, license="P2")
    assert read(sb, token(sb)).status_code == 200
    sb.control.seed({"tenants": [{"id": str(uuid.uuid4()), "name": "Plain"}]})
    assert sb.control.state()["tenants"][-1]["entraIdLicense"] == "free"


def test_one_tenant_never_sees_another_tenants_sign_ins(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    assert token_response(sb, TENANT, PPE_APP, Keys.new).status_code == 200
    assert token_response(sb, OTHER, OTHER_APP, Keys.other).status_code == 200
    other_view = rows(sb, token(sb, OTHER, OTHER_APP, Keys.other))
    assert {r["appId"] for r in other_view} == {OTHER_APP}
    assert {r["resourceTenantId"] for r in other_view} == {OTHER}
    assert PPE_APP not in {r["appId"] for r in rows(sb, token(sb), {"$filter": f"appId eq '{OTHER_APP}' and {FILTER}"})}


def test_records_older_than_the_thirty_day_retention_are_gone(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    sb.control.seed({"tenants": [{"id": TENANT, "signIns": [
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": "-31d"},
        {"appId": PPE_APP, "keyId": OLD_KEY, "createdDateTime": "-29d", "ipAddress": "203.0.113.9"}]}]})
    found = of_app(rows(sb, token(sb)))
    assert [(r["servicePrincipalCredentialKeyId"], r["ipAddress"]) for r in found] == [(OLD_KEY, "203.0.113.9")]


def test_throttling_is_injected_as_graph_answers_it(sb: SandboxHandle) -> None:
    seed(sb)
    bearer = token(sb)
    sb.control.add_fault("graph", path="/auditLogs/signIns", status=429, retry_after=3)
    response = read(sb, bearer)
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert response.json()["error"]["code"] == "TooManyRequests"
    assert read(sb, bearer).status_code == 200


@pytest.mark.parametrize("settings", [{"sign_in_delay_seconds": -1}, {"sign_in_addresses": {"proofpoint": "x"}},
                                      {"sign_in_addresses": {"elsewhere": "192.0.2.1"}},
                                      {"sign_in_addresses": {"proofpoint": None}}])
def test_bad_sign_in_settings_are_refused(sb: SandboxHandle, settings: dict[str, Any]) -> None:
    response = requests.post(f"{sb.control.control_url}/settings", json=settings, verify=sb.ca_file, timeout=10)
    assert response.status_code == 400


def test_a_seed_with_a_bad_licence_or_sign_in_is_refused(sb: SandboxHandle) -> None:
    for doc in ({"id": TENANT, "entraIdLicense": "E5"},
                {"id": TENANT, "signIns": [{"appId": str(uuid.uuid4())}]}):
        response = requests.post(f"{sb.control.control_url}/seed", json={"tenants": [doc]}, verify=sb.ca_file,
                                 timeout=10)
        assert response.status_code == 400


def test_no_secret_reaches_the_log_or_the_state(sb: SandboxHandle) -> None:
    seed(sb)
    sb.control.set_sign_in_delay(0)
    assert token_response(sb, TENANT, PPE_APP, Keys.new).status_code == 200
    assert sb.control.sign_in(TENANT, PPE_APP, Keys.expired)
    text = read(sb, token(sb)).text + str(sb.control.sign_ins(TENANT))
    for secret in (Keys.new, Keys.expired, Keys.old):
        assert secret not in text


def test_a_federated_credential_sign_in_is_logged_without_a_key_id(sb: SandboxHandle) -> None:
    """The MSP app signs in to the customer tenant with the managed identity's assertion: a service-principal
    sign-in of the MSP app in that tenant, no password credential named."""
    seed(sb)
    sb.control.seed({"tenants": [{"id": TENANT, "grants": [{"appId": "msp-app", "roles": []}]}]})
    sb.control.set_sign_in_delay(0)
    assertion = requests.get(
        sb.settings["IDENTITY_ENDPOINT"],
        params={"resource": "api://AzureADTokenExchange", "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]}, timeout=10,
    ).json()["access_token"]
    response = requests.post(f"{sb.endpoints['entra']}/{TENANT}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": sb.settings["MSP_APP_CLIENT_ID"],
        "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "scope": "https://graph.microsoft.com/.default"}, verify=sb.ca_file, timeout=10)
    assert response.status_code == 200, response.text
    found = of_app(rows(sb, token(sb)), sb.settings["MSP_APP_CLIENT_ID"])
    assert [(r["clientCredentialType"], r["servicePrincipalCredentialKeyId"]) for r in found] == [
        ("federatedIdentityCredential", None)]
